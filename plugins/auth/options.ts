// The auth plugin's options: a zod schema (what a user writes, and the JSON Schema editors
// complete from), then the password file resolved against the config file's folder and
// checked. Errors start with the option's key; the loader prefixes `plugins[i].`.

import { z } from 'zod'
import { configError } from '../../src/errors.js'
import { bool, counts, expected, int, oneOf, parseWith, strictOptions, text } from '../../src/config/zod.js'
import { inputFile } from '../../src/config/paths.js'
import type { OptionsContext } from '../../src/plugin/api.js'
import { BRUTE_FORCE_DEFAULTS, type BruteForceOptions } from './brute-force.js'
import { REDIS_USERS_DEFAULTS, type RedisUsersOptions } from './redis-users.js'
import { checkJwtOptions, jwtOptions, type JwtOptions } from './jwt-options.js'
import { httpAuthOptions, type HttpAuthOptions } from './http-auth.js'

export type UpstreamCredentials = 'passthrough' | 'strip' | { username: string, password: string }

export interface AuthOptions {
  /** Absolute once validated. */
  passwordFile?: string | undefined
  allowAnonymous: boolean
  redisUsers: RedisUsersOptions | undefined
  upstreamCredentials: UpstreamCredentials
  bruteForce: BruteForceOptions | undefined
  /** Re-read the password file when it changes (besides SIGHUP). Default true. */
  watch: boolean
  /** A Redis call slower than this counts as Redis being unreachable. Default 1000. */
  redisTimeoutMs: number
  /** A verified client certificate logs in as its CN, SAN e-mail or SAN DNS name; off by default. */
  certificateUser: 'off' | 'commonName' | 'email' | 'dns'
  /** Tokens in the CONNECT's password (or user name): jwt-options.ts. */
  jwt?: JwtOptions | undefined
  /** An HTTP service asked about users the other sources do not know (http-auth.ts). */
  http?: HttpAuthOptions | undefined
}

const upstreamCredentials = z.union([
  z.literal('passthrough'),
  z.literal('strip'),
  strictOptions({ username: text(), password: z.string(expected('a string')) })
], expected('one of passthrough, strip, or { username, password }'))

export const authOptions: z.ZodType<AuthOptions> = strictOptions({
  passwordFile: text('a file path').optional(),
  allowAnonymous: bool().default(false),
  redisUsers: counts(REDIS_USERS_DEFAULTS, {}, 'off'),
  upstreamCredentials: upstreamCredentials.default('passthrough'),
  bruteForce: counts(BRUTE_FORCE_DEFAULTS, { maxFailures: 1, windowMs: 1, blockMs: 1, maxKeys: 1 }),
  watch: bool().default(true),
  redisTimeoutMs: int(1).default(1000),
  certificateUser: oneOf(['off', 'commonName', 'email', 'dns']).default('off'),
  jwt: jwtOptions.optional(),
  http: httpAuthOptions.optional()
}).superRefine((o, ctx) => {
  if (o.passwordFile === undefined && o.redisUsers === undefined && o.jwt === undefined && o.http === undefined && !o.allowAnonymous && o.certificateUser === 'off') {
    ctx.addIssue({ code: 'custom', path: ['passwordFile'], message: 'required unless redisUsers, jwt or http is set, certificateUser is on, or allowAnonymous is true' })
  }
})

/** What the schema cannot see: the file on disk, and whether Redis is configured. */
export function checkAuthOptions (o: AuthOptions, ctx: OptionsContext): AuthOptions {
  if (o.redisUsers !== undefined && !ctx.redis) throw configError('redisUsers', 'needs the top-level redis setting (redis: redis://HOST:PORT)')
  const jwt = o.jwt === undefined ? undefined : checkJwtOptions(o.jwt, ctx.configDir)
  return { ...o, passwordFile: o.passwordFile === undefined ? undefined : inputFile(ctx.configDir, o.passwordFile, 'passwordFile'), jwt }
}

export function validateOptions (raw: unknown, ctx: OptionsContext = { configDir: process.cwd(), redis: false }): AuthOptions {
  return checkAuthOptions(parseWith(authOptions, raw), ctx)
}
