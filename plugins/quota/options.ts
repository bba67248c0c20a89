// The quota plugin's options, as a zod schema (also the JSON Schema editors complete from);
// errors start with the option's key and the loader prefixes `plugins[i].`.

import { z } from 'zod'
import { expected, int, oneOf, parseWith, strictOptions } from '../../src/config/zod.js'

/** One scope's rates; an absent rate is not limited. */
export interface RateLimits {
  messagesPerSecond: number | undefined
  /** PUBLISH payload bytes per second. */
  bytesPerSecond: number | undefined
  /** The bucket holds this many seconds of each rate: what a client may send at once. */
  burstSeconds: number
}

export interface UserLimits extends RateLimits {
  /** Open connections per user name, across every instance (Redis) or worker (the primary). */
  connections: number | undefined
}

export const ON_EXCEEDED = ['disconnect', 'delay'] as const
export type OnExceeded = typeof ON_EXCEEDED[number]

export interface QuotaOptions {
  perClient: RateLimits | undefined
  perUser: UserLimits | undefined
  onExceeded: OnExceeded
  /** delay: a PUBLISH that would wait longer than this disconnects after all. */
  maxDelayMs: number
  /** How often the per-user counts are added up with the other instances (Redis) or workers. */
  syncMs: number
  /** Redis: how long a connection's lease outlives the instance that holds it; renewed every leaseMs / 3. */
  leaseMs: number
  redisTimeoutMs: number
  /** The most per-client and per-user buckets kept in memory. */
  maxKeys: number
}

export const DEFAULT_BURST_SECONDS = 2

const positive = (): z.ZodNumber => z.number(expected('a number > 0')).positive(expected('a number > 0'))

const rates = {
  messagesPerSecond: positive().optional(),
  bytesPerSecond: int(1).optional(),
  burstSeconds: positive().optional()
}

/** A scope needs one limit at least, and a burst that holds one message. */
function checkScope (o: { messagesPerSecond?: number | undefined, bytesPerSecond?: number | undefined, burstSeconds?: number | undefined, connections?: number | undefined }, ctx: z.RefinementCtx, what: string): void {
  if (o.messagesPerSecond === undefined && o.bytesPerSecond === undefined && o.connections === undefined) {
    ctx.addIssue({ code: 'custom', message: `give at least one of ${what}` })
  }
  const burst = o.burstSeconds ?? DEFAULT_BURST_SECONDS
  if (o.messagesPerSecond !== undefined && o.messagesPerSecond * burst < 1) {
    ctx.addIssue({ code: 'custom', path: ['burstSeconds'], message: `messagesPerSecond × burstSeconds must be >= 1 (one message), got ${o.messagesPerSecond} × ${burst}` })
  }
}

const perClient = strictOptions(rates).optional().superRefine((o, ctx) => {
  if (o !== undefined) checkScope(o, ctx, 'messagesPerSecond, bytesPerSecond')
}).transform((o): RateLimits | undefined => o === undefined
  ? undefined
  : { messagesPerSecond: o.messagesPerSecond, bytesPerSecond: o.bytesPerSecond, burstSeconds: o.burstSeconds ?? DEFAULT_BURST_SECONDS })

const perUser = strictOptions({ ...rates, connections: int(1).optional() }).optional().superRefine((o, ctx) => {
  if (o !== undefined) checkScope(o, ctx, 'messagesPerSecond, bytesPerSecond, connections')
}).transform((o): UserLimits | undefined => o === undefined
  ? undefined
  : { messagesPerSecond: o.messagesPerSecond, bytesPerSecond: o.bytesPerSecond, burstSeconds: o.burstSeconds ?? DEFAULT_BURST_SECONDS, connections: o.connections })

export const quotaOptions: z.ZodType<QuotaOptions> = strictOptions({
  perClient,
  perUser,
  onExceeded: oneOf(ON_EXCEEDED).default('disconnect'),
  maxDelayMs: int(1).default(5000),
  syncMs: int(50).default(250),
  leaseMs: int(300).default(15_000),
  redisTimeoutMs: int(1).default(1000),
  maxKeys: int(1).default(100_000)
}).superRefine((o, ctx) => {
  if (o.perClient === undefined && o.perUser === undefined) {
    ctx.addIssue({ code: 'custom', message: 'give perClient, perUser or both (each with messagesPerSecond, bytesPerSecond; perUser also connections)' })
  }
})

export function validateOptions (raw: unknown): QuotaOptions {
  return parseWith(quotaOptions, raw)
}
