// The trace plugin's options; errors start with the option's key, the loader adds plugins[i].

import { configError } from '../../src/errors.js'
import { bool, int, isObject, knownKeys, oneOf, type RawOptions } from '../../src/plugin-options.js'

export const PAYLOAD_MODES = ['none', 'hash', 'hex', 'text'] as const
export type PayloadMode = typeof PAYLOAD_MODES[number]

export const PACKET_TYPES = ['connect', 'connack', 'publish', 'puback', 'pubrec', 'pubrel', 'pubcomp', 'subscribe', 'suback',
  'unsubscribe', 'unsuback', 'pingreq', 'pingresp', 'disconnect', 'auth'] as const

/** Who and what a trace covers; every field that is set must match. */
export interface TraceFilters {
  /** Glob: `*` any run of characters, `?` one. */
  clientId?: string
  username?: string
  /** An address or a CIDR. */
  address?: string
  /** An MQTT topic filter: PUBLISH topics it matches, SUBSCRIBE filters it covers. */
  topic?: string
  types?: string[]
}

export interface TraceOptions {
  destination: string
  payload: PayloadMode
  maxPayloadBytes: number
  filters: TraceFilters
  redactUserProperties: string[]
  rotateBytes: number
  keepFiles: number
  maxLinesPerSecond: number
  /** Trace from the start with `filters`; false: only traces started at run time. */
  enabled: boolean
}

const KEYS = ['destination', 'payload', 'maxPayloadBytes', 'filters', 'redactUserProperties', 'rotateBytes', 'keepFiles', 'maxLinesPerSecond', 'enabled']
const FILTER_KEYS = ['clientId', 'username', 'address', 'topic', 'types']

function stringList (raw: unknown, key: string): string[] {
  if (!Array.isArray(raw) || raw.some((v) => typeof v !== 'string')) throw configError(key, 'expected a list of strings')
  return raw as string[]
}

/** Also used for filters given at run time (admin API, CLI): same checks, same messages. */
export function validateFilters (raw: unknown, key = 'filters'): TraceFilters {
  if (raw === undefined) return {}
  if (!isObject(raw)) throw configError(key, 'expected an object { clientId, username, address, topic, types }')
  knownKeys(raw, FILTER_KEYS, `${key}.`)
  const out: TraceFilters = {}
  for (const k of ['clientId', 'username', 'address', 'topic'] as const) {
    const v = raw[k]
    if (v === undefined) continue
    if (typeof v !== 'string' || v === '') throw configError(`${key}.${k}`, 'expected a non-empty string')
    out[k] = v
  }
  if (raw.types !== undefined) {
    const types = stringList(raw.types, `${key}.types`)
    const bad = types.find((t) => !(PACKET_TYPES as readonly string[]).includes(t))
    if (bad !== undefined) throw configError(`${key}.types`, `unknown packet type "${bad}" (expected ${PACKET_TYPES.join(', ')})`)
    out.types = types
  }
  return out
}

export function validateOptions (raw: RawOptions): TraceOptions {
  knownKeys(raw, KEYS)
  const destination = raw['destination'] ?? 'stdout'
  if (typeof destination !== 'string' || destination === '') throw configError('destination', 'expected stdout or a file path')
  return {
    destination,
    payload: oneOf(raw, 'payload', PAYLOAD_MODES, 'none'),
    maxPayloadBytes: int(raw, 'maxPayloadBytes', 256, 0),
    filters: validateFilters(raw['filters']),
    redactUserProperties: raw['redactUserProperties'] === undefined ? [] : stringList(raw['redactUserProperties'], 'redactUserProperties'),
    rotateBytes: int(raw, 'rotateBytes', 100 * 1024 * 1024, 0),
    keepFiles: int(raw, 'keepFiles', 5, 1),
    maxLinesPerSecond: int(raw, 'maxLinesPerSecond', 2000, 1),
    enabled: bool(raw, 'enabled', true)
  }
}
