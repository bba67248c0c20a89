// What the admin API answers with, as types only: the proxy's side (src/admin.ts,
// src/console.ts, src/diagnostics.ts) and the console in the browser (console/app.ts, built on
// its own without Node) both use these, so the two cannot drift apart.

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
export interface ClientEnd { at: string, address: string, admitted: boolean, reason: string, words: string, detail: string | undefined }

/** What the overview page shows; one snapshot per second. */
export interface Overview {
  at: string
  instance: string
  connections: number
  /** Connections at each minute of the last hour, oldest first. */
  history: Array<{ at: string, connections: number }>
  connects: number
  refusals: Array<{ code: string, reasonCode: string, count: number }>
  /** PUBLISH packets per second since the previous snapshot: in (client → broker) and out. */
  rates: { in: number, out: number }
  /** Plugin decisions other than continue. */
  verdicts: Array<{ plugin: string, action: string, count: number }>
  duplicatesRemoved: { in: number, out: number }
  /** Mean round trip per leg in milliseconds, null before the first sample. */
  roundTrips: { client: number | null, broker: number | null }
  health: Record<string, boolean | string>
  certificates: Array<{ listener: string, subject: string, days: number }>
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
