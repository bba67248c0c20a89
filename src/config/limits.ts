// Every limit in one place: the `limits` setting's keys, their defaults, the schema that checks
// them and the types the proxy reads them as. What a limit does lives with the code it bounds
// (src/proxy/limits.ts for the per-address limits and keepalive, proxy/ and server.ts for the rest).

import { int, strictOptions } from './zod.js'

/** The `limits` setting, resolved: every key set, frozen. */
export interface Limits {
  /** Largest packet a client may send, in bytes; refused from the fixed header. */
  readonly maxPacketSize: number
  /** CONNECT from the client, and CONNACK from the broker, within this. */
  readonly connectTimeoutMs: number
  /** Open connections at most; further clients get CONNACK 3 / 0x89. */
  readonly maxConnections: number
  /** Packets one connection may queue while a plugin awaits (or before CONNACK). */
  readonly maxQueuedPackets: number
  /** SIGTERM: how long sockets get to flush after their clients were told to go. */
  readonly drainTimeoutMs: number
  /** 0: off. */
  readonly maxConnectionsPerAddress: number
  /** 0: off. */
  readonly maxConnectsPerSecondPerAddress: number
  /** 0: off. */
  readonly maxKeepaliveSeconds: number
  /** Per connection; 0: off. */
  readonly maxPublishesPerSecond: number
}

/** What the core plugin `limits` reads at each CONNECT (src/proxy/limits.ts). */
export type LimitSettings = Pick<Limits, 'maxConnectionsPerAddress' | 'maxConnectsPerSecondPerAddress' | 'maxKeepaliveSeconds' | 'maxPublishesPerSecond'>

/** What a Connection reads, from the limits of the config it was accepted under. */
export type ConnectionLimits = Pick<Limits, 'maxPacketSize' | 'connectTimeoutMs' | 'maxQueuedPackets' | 'maxPublishesPerSecond'>

export const LIMIT_DEFAULTS: Limits = Object.freeze({
  maxPacketSize: 1_048_576,
  connectTimeoutMs: 10_000,
  maxConnections: 100_000,
  maxQueuedPackets: 1000,
  drainTimeoutMs: 10_000,
  maxConnectionsPerAddress: 0,
  maxConnectsPerSecondPerAddress: 0,
  maxKeepaliveSeconds: 0,
  maxPublishesPerSecond: 0
})

export const limitsSchema = strictOptions({
  // The largest remaining length, 268 435 455, plus five bytes of fixed header.
  maxPacketSize: int(64, 268_435_460).optional(),
  connectTimeoutMs: int(100).optional(),
  maxConnections: int(1).optional(),
  maxQueuedPackets: int(1).optional(),
  drainTimeoutMs: int(0).optional(),
  maxConnectionsPerAddress: int(0).optional(),
  maxConnectsPerSecondPerAddress: int(0).optional(),
  maxKeepaliveSeconds: int(0, 65535).optional(),
  maxPublishesPerSecond: int(0).optional()
}).optional().describe('Per-connection and per-address limits (README.md, Configuration)')

const KEYS = Object.keys(LIMIT_DEFAULTS) as Array<keyof Limits>

/**
 * The file's `limits` over the defaults, every key in the same order: the limits of every
 * config have one shape, so a Connection's per-packet read of them stays monomorphic.
 */
export function resolveLimits (given: Partial<Limits> | undefined): Limits {
  const limits: Record<string, number> = {}
  for (const key of KEYS) limits[key] = given?.[key] ?? LIMIT_DEFAULTS[key]
  return Object.freeze(limits as unknown as Limits)
}

/** The keys whose values differ (what a reload names in its answer and its `reloaded` line). */
export function changedLimits (before: Limits, after: Limits): Array<keyof Limits> {
  return KEYS.filter((key) => before[key] !== after[key])
}
