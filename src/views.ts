// What the admin API answers with, as types only: the proxy's side (src/admin/endpoint.ts,
// src/admin/console.ts, src/observe/diagnostics.ts) and the console in the browser (console/app.ts, built on
// its own without Node) both use these, so the two cannot drift apart.

import type { CloseReason } from './errors.js'

export interface ConnectionView {
  id: string
  clientId: string
  username: string | undefined
  address: string
  port: number
  protocolVersion: number
  listener: string
  since: string
  state: string
  bytesIn: number
  bytesOut: number
  /** Clean session off (3.1.1) or a session expiry interval (MQTT 5). */
  persistentSession: boolean
  keepalive: number
  /** Times, and milliseconds in all, the client could not keep up and the broker side was held. */
  stalls: number
  stalledMs: number
  /** Times the per-connection queue (limits.maxQueuedPackets) filled while plugins worked. */
  queueFullHolds: number
  subscriptions: Array<{ filter: string, qos: number }>
  /** Several brokers: the broker it is on now, and how often it was re-homed. */
  broker?: string | undefined
  rehomed?: number
  /** This client ID's most recent refused connect (last 10 minutes), in words. */
  lastRefusal?: string
}

/** A client as the console's client page shows it. */
export interface ClientPage {
  clientId: string
  connections: ConnectionView[]
  history: ClientEnd[]
}

/** How one connection of a client ended, for the console's client page. */
export interface ClientEnd { at: string, address: string, admitted: boolean, reason: CloseReason, words: string, detail: string | undefined }

/** What the overview page shows; one snapshot per second. */
export interface Overview {
  at: string
  instance: string
  connections: number
  /**
   * The last hour, one point a second (src/observe/series.ts). GET /overview and the feed's first event
   * carry the whole window; each later event of the feed only the points since the one before.
   */
  series: Series
  connects: number
  refusals: Array<{ code: string, reasonCode: string, count: number }>
  /** PUBLISH packets in the last whole second: in (client → broker) and out. */
  rates: { in: number, out: number }
  /** Plugin decisions other than continue. */
  verdicts: Array<{ plugin: string, action: string, count: number }>
  duplicatesRemoved: { in: number, out: number }
  /** Mean round trip per leg in milliseconds, null before the first sample. */
  roundTrips: { client: number | null, broker: number | null }
  health: Record<string, boolean | string>
  certificates: Array<{ listener: string, subject: string, days: number }>
  /** Several brokers (upstream.brokers): each one's state and connections; empty otherwise. */
  brokers: Array<{ url: string, state: 'up' | 'down' | 'draining', connections: number, lastError?: string | undefined }>
}

/** Columns of equal length, oldest point first; point i is the second ending at t[i]. */
export interface SeriesColumns {
  /** Unix time of each point, in whole seconds. */
  t: number[]
  /** Connections open (past their CONNACK) at that second. */
  connections: number[]
  /** CONNECT packets received in that second. */
  connects: number[]
  /** Connections refused in that second, all codes. */
  refusals: number[]
  /** PUBLISH packets in that second: in (client → broker) and out (broker → client). */
  publishIn: number[]
  publishOut: number[]
  /** Mean round trip of the samples taken in that second, ms; null when none was taken. */
  rttClient: Array<number | null>
  rttBroker: Array<number | null>
}

export interface Series extends SeriesColumns {
  /** true: the whole window (replace what you have); false: points to append. */
  whole: boolean
  /**
   * Refusals per second by GUARD_ERR_* code (or `broker`), for the codes that occurred in the
   * window; a code missing from an appended part had none in its points.
   */
  refusalsByCode: Record<string, number[]>
}

export type Severity = 'info' | 'warning' | 'error'

export interface Finding {
  /** Stable ID, e.g. `flapping-client`. */
  id: string
  severity: Severity
  /** One line: what is wrong (or worth knowing). */
  summary: string
  /** What it is based on, readable lines. */
  evidence: string[]
  /** The fix, in one sentence. */
  fix: string
}
