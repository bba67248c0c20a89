// The auth plugin's `jwt` options: where the keys come from (a JWKS URL, a public key file or
// an HMAC secret file), which algorithms are allowed, which claims are checked and what they
// give. A zod schema for what a user writes, then the files resolved and checked.

import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { configError } from '../../src/errors.js'
import { bool, expected, int, oneOf, strictOptions, text } from '../../src/config/zod.js'
import { inputFile } from '../../src/config/paths.js'

/** Every JWS algorithm the proxy verifies; `none` is never one of them. */
export const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'HS256', 'HS384', 'HS512'] as const
export type Algorithm = typeof ALGORITHMS[number]
export const isHmac = (alg: string): boolean => alg.startsWith('HS')

export interface JwtOptions {
  jwksUrl?: string | undefined
  /** Absolute once validated: a PEM public key or certificate, or a JWK / JWKS in JSON. */
  publicKeyFile?: string | undefined
  /** Absolute once validated: the HMAC secret's bytes (a trailing line break is not part of it). */
  secretFile?: string | undefined
  algorithms: Algorithm[]
  issuer?: string[] | undefined
  audience?: string[] | undefined
  from: 'password' | 'username'
  usernameClaim: string
  clientIdClaim?: string | undefined
  aclClaim?: string | undefined
  disconnectOnExpiry: boolean
  /** How long a fetched JWKS is used before it is fetched again. */
  jwksCacheMs: number
  /** At most one fetch per this interval for an unknown `kid` or after a failure. */
  jwksCooldownMs: number
  /** A JWKS fetch slower than this fails (the CONNECT waits at most this long). */
  jwksTimeoutMs: number
  /** Leeway for `exp`, `nbf` and `iat`: clocks of the IdP and the proxy differ. */
  clockToleranceSeconds: number
}

const ALG_LIST = ALGORITHMS.join(', ')
const algorithm = z.string(expected(`one of ${ALG_LIST}`)).check((ctx) => {
  if (ctx.value.toLowerCase() === 'none') ctx.issues.push({ code: 'custom', input: ctx.value, message: `"none" is never accepted (unsigned tokens); expected one of ${ALG_LIST}` })
  else if (!(ALGORITHMS as readonly string[]).includes(ctx.value)) ctx.issues.push({ code: 'custom', input: ctx.value, message: `expected one of ${ALG_LIST}, got ${JSON.stringify(ctx.value)}` })
}).transform((a) => a as Algorithm)

const oneOrMany = z.union([text(), z.array(text()).min(1)], expected('a string or a list of strings'))
  .transform((v) => Array.isArray(v) ? v : [v])

const httpUrl = text('an http(s) URL').check((ctx) => {
  if (!/^https?:\/\/[^/\s]+/i.test(ctx.value)) ctx.issues.push({ code: 'custom', input: ctx.value, message: `expected an http:// or https:// URL, got ${JSON.stringify(ctx.value)}` })
})

const claim = text('a claim name')

export const jwtOptions = strictOptions({
  jwksUrl: httpUrl.optional(),
  publicKeyFile: text('a file path').optional(),
  secretFile: text('a file path').optional(),
  algorithms: z.array(algorithm, expected(`a list of ${ALG_LIST}`)).min(1, `expected a list of ${ALG_LIST}`).optional(),
  issuer: oneOrMany.optional(),
  audience: oneOrMany.optional(),
  from: oneOf(['password', 'username']).default('password'),
  usernameClaim: claim.default('sub'),
  clientIdClaim: claim.optional(),
  aclClaim: claim.optional(),
  disconnectOnExpiry: bool().default(false),
  jwksCacheMs: int(1000).default(300_000),
  jwksCooldownMs: int(0).default(30_000),
  jwksTimeoutMs: int(100, 60_000).default(3000),
  clockToleranceSeconds: int(0, 3600).default(30)
}).superRefine((o, ctx) => {
  const sources = [o.jwksUrl, o.publicKeyFile, o.secretFile].filter((s) => s !== undefined).length
  if (sources !== 1) ctx.addIssue({ code: 'custom', path: [], message: `give exactly one of jwksUrl, publicKeyFile or secretFile (got ${sources})` })
  const hmac = (o.algorithms ?? []).filter(isHmac)
  if (o.secretFile === undefined && hmac.length > 0) {
    // An HMAC "key" made of a public key is the classic key-confusion attack.
    ctx.addIssue({ code: 'custom', path: ['algorithms'], message: `${hmac.join(', ')} only with secretFile (an HMAC secret); with jwksUrl or publicKeyFile use ${ALGORITHMS.filter((a) => !isHmac(a)).join(', ')}` })
  }
  if (o.secretFile !== undefined && (o.algorithms ?? []).some((a) => !isHmac(a))) {
    ctx.addIssue({ code: 'custom', path: ['algorithms'], message: 'with secretFile only HS256, HS384 or HS512' })
  }
}).transform((o): JwtOptions => ({
  ...o,
  // Defaults by key source: HS256 for a secret, RS256 and ES256 for public keys.
  algorithms: o.algorithms ?? (o.secretFile !== undefined ? ['HS256'] : ['RS256', 'ES256'])
}))

/** HMAC keys shorter than the hash are guessable (RFC 7518 3.2). */
const MIN_SECRET_BYTES = 32

/** Reads the HMAC secret: the file's bytes without a trailing line break. */
export function readSecret (file: string): Uint8Array {
  const bytes = readFileSync(file)
  let end = bytes.length
  while (end > 0 && (bytes[end - 1] === 0x0a || bytes[end - 1] === 0x0d)) end--
  return new Uint8Array(bytes.subarray(0, end))
}

/** The files resolved against the config file's folder and checked; keys are relative to `jwt`. */
export function checkJwtOptions (o: JwtOptions, configDir: string): JwtOptions {
  const publicKeyFile = o.publicKeyFile === undefined ? undefined : inputFile(configDir, o.publicKeyFile, 'jwt.publicKeyFile')
  const secretFile = o.secretFile === undefined ? undefined : inputFile(configDir, o.secretFile, 'jwt.secretFile')
  if (secretFile !== undefined) {
    const length = readSecret(secretFile).length
    if (length < MIN_SECRET_BYTES) throw configError('jwt.secretFile', `the secret in ${secretFile} has ${length} bytes, expected at least ${MIN_SECRET_BYTES} (RFC 7518 3.2)`)
  }
  return { ...o, publicKeyFile, secretFile }
}
