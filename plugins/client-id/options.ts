// The client-id plugin's options, validated; errors start with the option's key and the
// loader prefixes `plugins[i].`.

import { configError } from '../../src/errors.js'
import { bool, int, isObject, knownKeys, numbers, oneOf, type RawOptions } from '../../src/plugin-options.js'

export const POLICIES = ['reject-new', 'takeover', 'takeover-same-identity'] as const
export type Policy = typeof POLICIES[number]

export const FLAP_KEYS = ['clientId', 'username', 'address'] as const
export type FlapKey = typeof FLAP_KEYS[number]

export interface FlappingOptions {
  /** More connects than this within windowMs by one key start a ban. */
  maxConnects: number
  windowMs: number
  banMs: number
  /** What is counted: each listed key has its own counter and ban. */
  by: FlapKey[]
}

export interface ClientIdOptions {
  policy: Policy
  /** How long a lease outlives the instance that holds it; renewed every leaseMs / 3. */
  leaseMs: number
  /** The whole ID must match (the pattern is anchored). */
  idPattern: RegExp | undefined
  /** In UTF-8 bytes; undefined: no limit beyond the protocol's 65 535. */
  maxIdLength: number | undefined
  flapping: FlappingOptions | undefined
  /** Redis unreachable: admit (checking this instance's own connections only) or refuse. */
  failOpen: boolean
  redisTimeoutMs: number
  /** In-memory store: most keys (flapping counters, histories) it keeps. */
  maxKeys: number
}

export const FLAPPING_DEFAULTS = { maxConnects: 20, windowMs: 60_000, banMs: 120_000 }

const KEYS = ['policy', 'leaseMs', 'idPattern', 'maxIdLength', 'flapping', 'failOpen', 'redisTimeoutMs', 'maxKeys']

function flapping (raw: unknown): FlappingOptions | undefined {
  if (raw === false) return undefined
  let by: FlapKey[] = ['clientId']
  let rest: unknown = raw
  if (isObject(raw)) {
    const { by: rawBy, ...others } = raw
    rest = others
    if (rawBy !== undefined) {
      const list = Array.isArray(rawBy) ? rawBy as unknown[] : [rawBy]
      if (list.length === 0 || list.some((k) => !(FLAP_KEYS as readonly unknown[]).includes(k))) {
        throw configError('flapping.by', `expected a list of ${FLAP_KEYS.join(', ')}, got ${JSON.stringify(rawBy)}`)
      }
      by = [...new Set(list as FlapKey[])]
    }
  }
  const counts = numbers('flapping', rest, FLAPPING_DEFAULTS, { maxConnects: 1, windowMs: 1, banMs: 1 })
  return { ...counts, by }
}

function pattern (raw: unknown): RegExp | undefined {
  if (raw === undefined) return undefined
  if (typeof raw !== 'string' || raw === '') throw configError('idPattern', 'expected a regular expression (string)')
  try {
    return new RegExp(`^(?:${raw})$`, 'u')
  } catch (err) {
    throw configError('idPattern', `not a valid regular expression: ${(err as Error).message}`)
  }
}

export function validateOptions (raw: RawOptions): ClientIdOptions {
  knownKeys(raw, KEYS)
  const maxIdLength = raw['maxIdLength'] === undefined ? undefined : int(raw, 'maxIdLength', 0, 1)
  if (maxIdLength !== undefined && maxIdLength > 65_535) throw configError('maxIdLength', `expected at most 65535, got ${maxIdLength}`)
  return {
    policy: oneOf(raw, 'policy', POLICIES, 'takeover-same-identity'),
    leaseMs: int(raw, 'leaseMs', 15_000, 300),
    idPattern: pattern(raw['idPattern']),
    maxIdLength,
    flapping: flapping(raw['flapping']),
    failOpen: bool(raw, 'failOpen', true),
    redisTimeoutMs: int(raw, 'redisTimeoutMs', 1000),
    maxKeys: int(raw, 'maxKeys', 100_000)
  }
}
