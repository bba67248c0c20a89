// Where the auth plugin's JWT keys come from: a public key file (PEM key or certificate, or a
// JWK / JWKS in JSON), an HMAC secret file, or a JWKS URL (jwks.ts). Each gives jose's
// verify a key for a token's header, or says why it has none.

import { createPublicKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose'
import { configError } from '../../src/errors.js'
import { readSecret, type JwtOptions } from './jwt-options.js'
import { JwksCache, type JwksStats } from './jwks.js'

/** A key for jose (or a function of the header that finds one), or why there is none now. */
export type KeySource =
  | { kind: 'static', key: KeyObject | Uint8Array | JWTVerifyGetKey }
  | { kind: 'jwks', cache: JwksCache }

function publicKeyFrom (file: string): KeyObject | JWTVerifyGetKey {
  const text = readFileSync(file, 'utf8')
  if (text.trimStart().startsWith('{')) {
    const json = JSON.parse(text) as { keys?: unknown }
    // A single JWK is a set of one.
    return createLocalJWKSet((Array.isArray(json.keys) ? json : { keys: [json] }) as JSONWebKeySet)
  }
  // A PEM public key (SPKI or PKCS#1) or an X.509 certificate's key.
  const key = createPublicKey(text)
  if (key.type !== 'public') throw new Error('not a public key')
  return key
}

/** Reads the key files now; a file that does not hold a key is a config error naming it. */
export function keySource (o: JwtOptions, stats: JwksStats): KeySource {
  if (o.jwksUrl !== undefined) {
    return { kind: 'jwks', cache: new JwksCache({ url: o.jwksUrl, cacheMs: o.jwksCacheMs, cooldownMs: o.jwksCooldownMs, timeoutMs: o.jwksTimeoutMs }, stats) }
  }
  if (o.secretFile !== undefined) return { kind: 'static', key: readSecret(o.secretFile) }
  const file = o.publicKeyFile as string
  try {
    return { kind: 'static', key: publicKeyFrom(file) }
  } catch (err) {
    throw configError('jwt.publicKeyFile', `${file} holds no public key (expected a PEM public key or certificate, or a JWK or JWKS in JSON): ${(err as Error).message}`)
  }
}
