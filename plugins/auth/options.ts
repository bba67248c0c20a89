// The auth plugin's options, validated by hand; errors start with the option key, the loader
// prefixes `plugins[i].`.

import { configError } from '../../src/errors.js'
import { bool, int, isObject, knownKeys, numbers, oneOf } from '../../src/plugin-options.js'
import { BRUTE_FORCE_DEFAULTS, type BruteForceOptions } from './brute-force.js'
import { REDIS_USERS_DEFAULTS, type RedisUsersOptions } from './redis-users.js'

export type UpstreamCredentials = 'passthrough' | 'strip' | { username: string, password: string }

export interface AuthOptions {
  passwordFile: string | undefined
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
}

const KEYS = ['passwordFile', 'allowAnonymous', 'redisUsers', 'upstreamCredentials', 'bruteForce', 'watch', 'redisTimeoutMs', 'certificateUser']

function upstreamCredentials (raw: unknown): UpstreamCredentials {
  if (raw === undefined) return 'passthrough'
  if (raw === 'passthrough' || raw === 'strip') return raw
  if (isObject(raw)) {
    const { username, password, ...rest } = raw
    const extra = Object.keys(rest)[0]
    if (extra !== undefined) throw configError(`upstreamCredentials.${extra}`, 'unknown option (expected username, password)')
    if (typeof username !== 'string' || username === '') throw configError('upstreamCredentials.username', 'expected a non-empty string')
    if (typeof password !== 'string') throw configError('upstreamCredentials.password', 'expected a string')
    return { username, password }
  }
  throw configError('upstreamCredentials', 'expected one of passthrough, strip, or { username, password }')
}

export function validateOptions (raw: Record<string, unknown>): AuthOptions {
  knownKeys(raw, KEYS)
  const passwordFile = raw['passwordFile']
  if (passwordFile !== undefined && (typeof passwordFile !== 'string' || passwordFile === '')) {
    throw configError('passwordFile', 'expected a file path')
  }
  const redisRaw = raw['redisUsers']
  const options: AuthOptions = {
    passwordFile,
    allowAnonymous: bool(raw, 'allowAnonymous', false),
    redisUsers: redisRaw === undefined || redisRaw === false ? undefined : numbers('redisUsers', redisRaw, REDIS_USERS_DEFAULTS),
    upstreamCredentials: upstreamCredentials(raw['upstreamCredentials']),
    bruteForce: raw['bruteForce'] === false ? undefined : numbers('bruteForce', raw['bruteForce'], BRUTE_FORCE_DEFAULTS, { maxFailures: 1, windowMs: 1, blockMs: 1, maxKeys: 1 }),
    watch: bool(raw, 'watch', true),
    redisTimeoutMs: int(raw, 'redisTimeoutMs', 1000),
    certificateUser: oneOf(raw, 'certificateUser', ['off', 'commonName', 'email', 'dns'] as const, 'off')
  }
  if (options.passwordFile === undefined && options.redisUsers === undefined && !options.allowAnonymous && options.certificateUser === 'off') {
    throw configError('passwordFile', 'required unless redisUsers is set, certificateUser is on, or allowAnonymous is true')
  }
  return options
}
