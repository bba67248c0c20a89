// The trace plugin's options, as a zod schema (also the JSON Schema editors complete from),
// then a file destination resolved against the config file's folder and checked; errors start
// with the option's key, the loader adds plugins[i].

import { z } from 'zod'
import { bool, expected, got, int, oneOf, parseWith, strictOptions, strings, text } from '../../src/config/zod.js'
import { outputFile } from '../../src/config/paths.js'
import { compileTrusted } from '../../src/wire/proxy-protocol.js'
import type { OptionsContext } from '../../src/plugin/api.js'

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
  /** `stdout`, or a file (absolute once validated) in a folder that exists. */
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
  /** The longest a trace started at run time (admin API, CLI, console) may run. */
  maxDurationMs: number
}

const packetType = z.enum(PACKET_TYPES, { error: (issue) => `unknown packet type ${JSON.stringify(issue.input)} (expected ${PACKET_TYPES.join(', ')})` })

const address = text('an address or a CIDR').superRefine((value, ctx) => {
  try {
    compileTrusted([value])
  } catch {
    ctx.addIssue({ code: 'custom', message: `expected an address or a CIDR, got ${got(value)}` })
  }
})

const filtersSchema: z.ZodType<TraceFilters> = strictOptions({
  clientId: text().optional(),
  username: text().optional(),
  address: address.optional(),
  topic: text().optional(),
  types: z.array(packetType, expected('a list of packet types')).optional()
})

export const traceOptions: z.ZodType<TraceOptions> = strictOptions({
  destination: text('stdout or a file path').default('stdout'),
  payload: oneOf(PAYLOAD_MODES).default('none'),
  maxPayloadBytes: int(0).default(256),
  filters: filtersSchema.default({}),
  redactUserProperties: strings().default([]),
  rotateBytes: int(0).default(100 * 1024 * 1024),
  keepFiles: int(1).default(5),
  maxLinesPerSecond: int(1).default(2000),
  enabled: bool().default(true),
  maxDurationMs: int(1000).default(3_600_000)
})

/** Also used for filters given at run time (admin API, CLI): same checks, same messages. */
export function validateFilters (raw: unknown, key = 'filters'): TraceFilters {
  return raw === undefined ? {} : parseWith(filtersSchema, raw, key)
}

/** What the schema cannot see: a file destination's folder on disk (never created here). */
export function checkTraceOptions (o: TraceOptions, ctx: OptionsContext): TraceOptions {
  return o.destination === 'stdout' ? o : { ...o, destination: outputFile(ctx.configDir, o.destination, 'destination') }
}

export function validateOptions (raw: unknown, ctx: OptionsContext = { configDir: process.cwd(), redis: false }): TraceOptions {
  return checkTraceOptions(parseWith(traceOptions, raw), ctx)
}
