// The dedupe plugin's options, as a zod schema (also the JSON Schema editors complete from);
// errors start with the option's key and the loader prefixes `plugins[i].`.

import { z } from 'zod'
import { expected, int, parseWith, strictOptions } from '../../src/config/zod.js'

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

const windowOption = z.union([z.literal('off'), z.literal(false), int(1)], expected('off or a number of milliseconds >= 1')).optional()

export const dedupeOptions: z.ZodType<DedupeOptions> = strictOptions({
  ttlMs: int(1000).default(300_000),
  window: windowOption,
  maxEntries: int(1).default(200_000),
  flushMs: int(1).default(5),
  redisTimeoutMs: int(1).default(500)
}).superRefine((o, ctx) => {
  if (typeof o.window === 'number' && o.window > o.ttlMs) ctx.addIssue({ code: 'custom', path: ['window'], message: `must not be longer than ttlMs (${o.ttlMs})` })
}).transform(({ window, ...rest }) => ({ ...rest, windowMs: typeof window === 'number' ? window : undefined }))

export function validateOptions (raw: unknown): DedupeOptions {
  return parseWith(dedupeOptions, raw)
}
