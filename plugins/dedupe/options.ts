// The dedupe plugin's options, validated; errors start with the option's key and the loader
// prefixes `plugins[i].`.

import { configError } from '../../src/errors.js'
import { int, knownKeys, type RawOptions } from '../../src/plugin-options.js'

export interface DedupeOptions {
  /** How long an acknowledged message is remembered. */
  ttlMs: number
  /** Off (undefined), or: identical (client ID, topic, payload) within this many ms is a duplicate. */
  windowMs: number | undefined
  /** Records kept in this process (the only store without Redis; a cache in front of it with). */
  maxEntries: number
  /** Records are written to Redis in batches, at most this long after the acknowledgement. */
  flushMs: number
  /** A Redis lookup slower than this counts as a miss: the message is forwarded. */
  redisTimeoutMs: number
}

const KEYS = ['ttlMs', 'window', 'maxEntries', 'flushMs', 'redisTimeoutMs']

function windowMs (raw: unknown, ttlMs: number): number | undefined {
  if (raw === undefined || raw === false || raw === 'off') return undefined
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < 1) throw configError('window', `expected off or a number of milliseconds >= 1, got ${JSON.stringify(raw)}`)
  if (raw > ttlMs) throw configError('window', `must not be longer than ttlMs (${ttlMs})`)
  return raw
}

export function validateOptions (raw: RawOptions): DedupeOptions {
  knownKeys(raw, KEYS)
  const ttlMs = int(raw, 'ttlMs', 300_000, 1000)
  return {
    ttlMs,
    windowMs: windowMs(raw['window'], ttlMs),
    maxEntries: int(raw, 'maxEntries', 200_000, 1),
    flushMs: int(raw, 'flushMs', 5, 1),
    redisTimeoutMs: int(raw, 'redisTimeoutMs', 500, 1)
  }
}
