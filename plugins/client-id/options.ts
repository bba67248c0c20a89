// The client-id plugin's options, as a zod schema (also the JSON Schema editors complete
// from); errors start with the option's key and the loader prefixes `plugins[i].`.

import { z } from 'zod'
import { bool, expected, int, oneOf, parseWith, strictOptions, text } from '../../src/config/zod.js'

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
  maxIdLength?: number | undefined
  flapping: FlappingOptions | undefined
  /** Redis unreachable: admit (checking this instance's own connections only) or refuse. */
  failOpen: boolean
  redisTimeoutMs: number
  /** In-memory store: most keys (flapping counters, histories) it keeps. */
  maxKeys: number
}

export const FLAPPING_DEFAULTS = { maxConnects: 20, windowMs: 60_000, banMs: 120_000 }

const flapping = z.union([z.boolean(), strictOptions({
  maxConnects: int(1).optional(),
  windowMs: int(1).optional(),
  banMs: int(1).optional(),
  by: z.union([oneOf(FLAP_KEYS), z.array(oneOf(FLAP_KEYS)).min(1)], expected(`a list of ${FLAP_KEYS.join(', ')}`)).optional()
})], expected('true, false or an object { maxConnects, windowMs, banMs, by }')).optional()
  .transform((raw): FlappingOptions | undefined => {
    if (raw === false) return undefined
    const o = typeof raw === 'object' ? raw : {}
    const by = o.by === undefined ? ['clientId' as const] : [...new Set(Array.isArray(o.by) ? o.by : [o.by])]
    return { maxConnects: o.maxConnects ?? FLAPPING_DEFAULTS.maxConnects, windowMs: o.windowMs ?? FLAPPING_DEFAULTS.windowMs, banMs: o.banMs ?? FLAPPING_DEFAULTS.banMs, by }
  })

const idPattern = text('a regular expression (string)').optional().transform((raw, ctx): RegExp | undefined => {
  if (raw === undefined) return undefined
  try {
    return new RegExp(`^(?:${raw})$`, 'u')
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: `not a valid regular expression: ${(err as Error).message}` })
    return z.NEVER
  }
})

export const clientIdOptions: z.ZodType<ClientIdOptions> = strictOptions({
  policy: oneOf(POLICIES).default('takeover-same-identity'),
  leaseMs: int(300).default(15_000),
  idPattern,
  maxIdLength: int(1, 65_535).optional(),
  flapping,
  failOpen: bool().default(true),
  redisTimeoutMs: int(1).default(1000),
  maxKeys: int(1).default(100_000)
})

export function validateOptions (raw: unknown): ClientIdOptions {
  return parseWith(clientIdOptions, raw)
}
