// What `mqtt-guard doctor` asks for (admin API `GET /diagnostics`): findings about the fleet
// behind this proxy, each with a severity, the evidence, and the fix in one sentence. The proxy
// records a little of what already passes through it (how connections end, refusals, refused
// publishes; all bounded, over the last WINDOW_MS) and reads the rest at report time: live
// connections, round-trip metrics, certificates, health, limits, descriptors. This file is the
// recorder and the rules on what it recorded; the rules on the live state are live-findings.ts.

import type { CloseReason } from '../errors.js'
import { explainEnd, keepaliveTimedOut, type ConnectionEnd } from './ends.js'
import type { ClientEnd, Finding } from '../views.js'

import { topicMatches } from '../wire/topic-filter.js'
import { EXAMPLES, certificates, health, latency, limits, qos0, queues, slow, type LiveState } from './live-findings.js'

export type { Finding, Severity } from '../views.js'
export { descriptors, limitFindings, meanMs, type LiveState } from './live-findings.js'

/** Over how long the proxy remembers ends, refusals and refused publishes. */
export const WINDOW_MS = 10 * 60_000
/** This many connects of one client ID within the window, most of them not ended by the client, is flapping. */
export const FLAP_CONNECTS = 5
const MAX_KEYS = 10_000
const MAX_PER_KEY = 20

interface End { at: number, address: string, reason: CloseReason, detail: string | undefined, idleMs: number, keepalive: number, admitted: boolean }

interface Tally { count: number, last: number, examples: Set<string> }

/** What the recorder needs of a closed connection. */
export interface ClosedConnection {
  clientId: string
  address: string
  keepalive: number
  /** It got a successful CONNACK. */
  admitted: boolean
  /** The CONNECT was read (a client ID exists). */
  identified: boolean
}

function bounded<V> (map: Map<string, V>, key: string, make: () => V): V {
  let value = map.get(key)
  if (value === undefined) {
    if (map.size >= MAX_KEYS) map.delete(map.keys().next().value as string)
    value = make()
    map.set(key, value)
  }
  return value
}

function tally (map: Map<string, Tally>, key: string, example: string, now: number): void {
  const t = bounded(map, key, () => ({ count: 0, last: 0, examples: new Set<string>() }))
  if (now - t.last > WINDOW_MS) { t.count = 0; t.examples.clear() }
  t.count++
  t.last = now
  if (t.examples.size < EXAMPLES) t.examples.add(example)
}

const recent = <V extends { last: number }>(map: Map<string, V>, now: number): Array<[string, V]> =>
  [...map].filter(([, v]) => now - v.last <= WINDOW_MS)

const list = (values: Iterable<string>): string => [...values].join(', ')

/** Why a connection ended, in the words of the one explainer (ends.ts). */
function endWords (e: End): string {
  return explainEnd({ reason: e.reason, detail: e.detail, clientIdleMs: e.idleMs, keepaliveS: e.keepalive, admitted: e.admitted })
}

/** What a flapping client should change, from how most of its connections ended. */
function flapFix (e: End, clientId: string, addresses: Set<string>): string {
  const timedOut = keepaliveTimedOut(e.idleMs, e.keepalive)
  if (addresses.size > 1 && (e.reason === 'GUARD_ERR_SESSION_TAKEN_OVER' || (e.reason === 'broker-closed' && !timedOut))) {
    return `two or more devices (${list(addresses)}) share the client ID ${clientId}: give each device its own ID`
  }
  if (timedOut && (e.reason === 'client-closed' || e.reason === 'broker-closed' || e.reason === 'broker-error')) {
    return 'the client goes silent longer than its keepalive: check the network path (NAT and firewall idle timeouts) or lower the keepalive interval'
  }
  if (e.reason === 'GUARD_ERR_BAD_CREDENTIALS' || (e.reason === 'GUARD_ERR_NOT_AUTHORIZED' && !e.admitted)) {
    return 'the client retries with credentials the proxy refuses: fix its user name or password, or its ACL'
  }
  return 'the connection keeps ending: read the ends above, and make the client back off exponentially between reconnects'
}

export class Diagnostics {
  private readonly ends = new Map<string, { last: number, list: End[] }>()
  private readonly refusals = new Map<string, Tally>()
  private readonly refusedTopics = new Map<string, Tally>()
  /** Which plugins refused publishes to a topic (the keys of refusedTopics). */
  private readonly refusedBy = new Map<string, Set<string>>()
  private readonly tooLarge = new Map<string, Tally>()

  constructor (private readonly now: () => number = Date.now) {}

  closed (conn: ClosedConnection, info: ConnectionEnd): void {
    if (!conn.identified) return
    const now = this.now()
    const who = conn.clientId === '' ? `(no client ID) from ${conn.address}` : conn.clientId
    if (!conn.admitted && info.reason !== 'client-closed' && info.reason !== 'client-disconnect') tally(this.refusals, info.reason, `${who} from ${conn.address}`, now)
    if (info.reason === 'GUARD_ERR_PACKET_TOO_LARGE') tally(this.tooLarge, conn.clientId, info.detail ?? '', now)
    if (conn.clientId === '') return
    const ends = bounded(this.ends, conn.clientId, () => ({ last: 0, list: [] as End[] }))
    ends.list.push({ at: now, address: conn.address, reason: info.reason, detail: info.detail, idleMs: info.clientIdleMs, keepalive: conn.keepalive, admitted: conn.admitted })
    while (ends.list.length > MAX_PER_KEY || (ends.list[0] !== undefined && now - ends.list[0].at > WINDOW_MS)) ends.list.shift()
    ends.last = now
  }

  /** How the client's recent connections ended (last WINDOW_MS, at most MAX_PER_KEY), newest first. */
  history (clientId: string): ClientEnd[] {
    return (this.ends.get(clientId)?.list ?? []).map((e) => ({
      at: new Date(e.at).toISOString(), address: e.address, admitted: e.admitted, reason: e.reason, words: endWords(e), detail: e.detail
    })).reverse()
  }

  /** The client's most recent refused connect in the window, in words, if any. */
  lastRefusal (clientId: string): string | undefined {
    const list = this.ends.get(clientId)?.list ?? []
    for (let i = list.length - 1; i >= 0; i--) {
      const e = list[i] as End
      if (!e.admitted && e.reason !== 'client-closed' && e.reason !== 'client-disconnect') return `${endWords(e)}, ${new Date(e.at).toISOString()}`
    }
    return undefined
  }

  /** A client's PUBLISH that a plugin dropped, answered or refused. */
  refusedPublish (clientId: string, topic: string, plugin: string | undefined): void {
    tally(this.refusedTopics, topic, clientId, this.now())
    if (plugin !== undefined) bounded(this.refusedBy, topic, () => new Set<string>()).add(plugin)
  }

  report (live: LiveState): Finding[] {
    const now = this.now()
    return [
      ...health(live),
      ...this.flapping(now),
      ...this.refused(now),
      ...live.plugins,
      ...this.starved(live, now),
      ...qos0(live),
      ...slow(live),
      ...queues(live),
      ...this.large(now),
      ...latency(live),
      ...certificates(live),
      ...limits(live)
    ]
  }

  /** Client IDs flapping now: the `mqtt_guard_flapping_clients` gauge, read at scrape time. */
  flappingClients (): number {
    return [...this.flappers(this.now())].length
  }

  /** Each client ID with FLAP_CONNECTS ends in the window, most of them not asked for by the client. */
  private * flappers (now: number): Generator<{ clientId: string, ends: End[], unasked: End[] }> {
    for (const [clientId, { list: all }] of this.ends) {
      const ends = all.filter((e) => now - e.at <= WINDOW_MS)
      if (ends.length < FLAP_CONNECTS) continue
      const unasked = ends.filter((e) => e.reason !== 'client-disconnect')
      if (unasked.length * 2 >= ends.length) yield { clientId, ends, unasked }
    }
  }

  private flapping (now: number): Finding[] {
    const out: Finding[] = []
    for (const { clientId, ends, unasked } of this.flappers(now)) {
      const addresses = new Set(ends.map((e) => e.address))
      // Counted by their words; the first end with the commonest words decides the fix.
      const why = new Map<string, { count: number, first: End }>()
      for (const e of unasked) {
        const w = endWords(e)
        const seen = why.get(w)
        if (seen === undefined) why.set(w, { count: 1, first: e })
        else seen.count++
      }
      const words = [...why].sort((a, b) => b[1].count - a[1].count)
      const top = words[0]?.[1].first
      const fix = top === undefined ? '' : flapFix(top, clientId, addresses)
      out.push({
        id: 'flapping-client', severity: 'warning',
        summary: `client ${clientId} connected ${ends.length} times in ${Math.round(WINDOW_MS / 60_000)} minutes`,
        evidence: [`from ${addresses.size} address${addresses.size === 1 ? '' : 'es'}: ${list(addresses)}`, ...words.map(([w, { count }]) => `${count} × ${w}`)],
        fix
      })
    }
    return out
  }

  private refused (now: number): Finding[] {
    const out: Finding[] = []
    const byCode = recent(this.refusals, now)
    const clientId = byCode.filter(([code]) => code === 'GUARD_ERR_CLIENT_ID_REJECTED' || code === 'GUARD_ERR_BANNED')
    if (clientId.length > 0) {
      out.push({
        id: 'client-id-refusals', severity: 'warning',
        summary: `${clientId.reduce((n, [, t]) => n + t.count, 0)} connects refused for their client ID`,
        evidence: clientId.map(([code, t]) => `${t.count} × ${code === 'GUARD_ERR_BANNED' ? 'banned (flapping)' : 'client ID refused (in use by another identity, too long, or outside idPattern)'}: ${list(t.examples)}`),
        fix: 'give every device its own client ID, and fix the reconnect loops of banned clients (the proxy log has one line per ban with the evidence)'
      })
    }
    const other = byCode.filter(([code]) => code !== 'GUARD_ERR_CLIENT_ID_REJECTED' && code !== 'GUARD_ERR_BANNED')
    if (other.length > 0) {
      const total = other.reduce((n, [, t]) => n + t.count, 0)
      out.push({
        id: 'connect-refusals', severity: total >= FLAP_CONNECTS ? 'warning' : 'info',
        summary: `${total} connect${total === 1 ? '' : 's'} refused in the last ${Math.round(WINDOW_MS / 60_000)} minutes`,
        evidence: other.sort((a, b) => b[1].count - a[1].count).map(([code, t]) => `${t.count} × ${code}: ${list(t.examples)}`),
        fix: 'for bad credentials check the clients\' user names and passwords (`mqtt-guard probe URL -u USER -P PASSWORD` shows the answer in words); for 3 / 0x88 check the broker and Redis'
      })
    }
    return out
  }

  private starved (live: LiveState, now: number): Finding[] {
    const out: Finding[] = []
    const topics = recent(this.refusedTopics, now)
    if (topics.length === 0) return out
    for (const c of live.connections) {
      for (const s of c.subscriptions) {
        const blocked = topics.filter(([topic]) => topicMatches(s.filter, topic))
        if (blocked.length === 0) continue
        const count = blocked.reduce((n, [, t]) => n + t.count, 0)
        out.push({
          id: 'subscriber-starved', severity: 'warning',
          summary: `${c.clientId} subscribes to ${s.filter}, but ${count} publish${count === 1 ? '' : 'es'} it would match were refused`,
          evidence: blocked.slice(0, EXAMPLES).map(([topic, t]) => `${t.count} × ${topic} from ${list(t.examples)} refused by ${list(this.refusedBy.get(topic) ?? []) || 'a plugin'}`),
          fix: 'the subscriber waits for messages the proxy stops at the publisher: let the publishers publish there (acl rule), or subscribe where they may publish'
        })
        if (out.length >= EXAMPLES) return out
      }
    }
    return out
  }

  private large (now: number): Finding[] {
    const rows = recent(this.tooLarge, now)
    if (rows.length === 0) return []
    return [{
      id: 'packets-too-large', severity: 'warning',
      summary: `${rows.reduce((n, [, t]) => n + t.count, 0)} connections closed for a packet over limits.maxPacketSize`,
      evidence: rows.slice(0, EXAMPLES).map(([clientId, t]) => `${clientId}: ${t.count} × ${list(t.examples)}`),
      fix: 'raise limits.maxPacketSize (and the broker\'s message_size_limit) if such payloads are legitimate, or make the clients send smaller messages'
    }]
  }
}
