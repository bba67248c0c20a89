// dedupe: removes QoS 1 redeliveries in both directions. When the receiving side acknowledges
// a QoS 1 PUBLISH, (client ID, direction, packet ID, digest of topic and payload) is recorded;
// a later PUBLISH with DUP set that matches a record is acknowledged by the proxy and not
// forwarded. Records live in this process and, with Redis, in Redis for every instance, so a
// client that comes back through another instance is covered too. See README.md.

import type { IPublishPacket, IPubackPacket } from 'mqtt-packet'
import { definePlugin, type ConnectionInfo, type Direction, type HookResult, type PluginContext, type Verdict } from '../../src/plugin/api.js'
import { digest } from './digest.js'
import { dedupeOptions, type DedupeOptions } from './options.js'
import { LocalRecords, recordKey, RedisRecords, TOMBSTONE, type RedisStats } from './records.js'
import { statsCounter } from '../../src/observe/metrics.js'
import { PrimaryRecords, primarySide } from './primary-records.js'

/** The QoS 1 PUBLISHes of one connection that wait for their PUBACK, by packet ID: their digests. */
interface InFlight { in: Map<number, string>, out: Map<number, string> }

export interface DedupeStats {
  removed: { in: number, out: number }
  /** Per client ID (bounded): duplicates removed in each direction. */
  byClient: Map<string, { in: number, out: number }>
  recorded: number
  redis: RedisStats | undefined
}

const WARN_EVERY_MS = 10_000
const BY_CLIENT_MAX = 10_000
// Acknowledgements that mean the receiver took the message [MQTT-3.4.2.1]: 0x00 and 0x10.
const accepted = (ack: IPubackPacket): boolean => (ack.reasonCode ?? 0) < 0x80

export class Dedupe {
  readonly stats: DedupeStats = { removed: { in: 0, out: 0 }, byClient: new Map(), recorded: 0, redis: undefined }
  private readonly inflight = new WeakMap<ConnectionInfo, InFlight>()
  private readonly local: LocalRecords
  /** Records every instance (Redis) or every worker (the primary, workers: N) reads. */
  private readonly shared: RedisRecords | PrimaryRecords | undefined
  private lastWarn = 0

  constructor (private readonly ctx: PluginContext<DedupeOptions>) {
    const o = ctx.options
    this.local = new LocalRecords(o.ttlMs, o.maxEntries)
    if (ctx.redis !== undefined) {
      this.shared = new RedisRecords(ctx.redis, ctx.keyPrefix, o.ttlMs, o.flushMs, o.redisTimeoutMs, (what, err) => { this.redisFailed(what, err) })
      this.stats.redis = this.shared.stats
    } else if (ctx.primary !== undefined) {
      this.shared = new PrimaryRecords(ctx.primary, (what, err) => { this.redisFailed(what, err) })
    }
    const { stats } = this
    statsCounter(ctx.metrics, 'mqtt_guard_dedupe_removed_total', 'QoS 1 duplicates removed by dedupe, by direction (in: client → broker)', 'direction', () => ({ ...stats.removed }))
    statsCounter(ctx.metrics, 'mqtt_guard_dedupe_redis_failures_total', 'dedupe records not written (dropped) and lookups that failed, because Redis was unreachable or slow', 'kind',
      () => ({ dropped: stats.redis?.dropped ?? 0, lookup: stats.redis?.lookupFailures ?? 0 }))
  }

  private state (conn: ConnectionInfo): InFlight {
    let s = this.inflight.get(conn)
    if (s === undefined) {
      s = { in: new Map(), out: new Map() }
      this.inflight.set(conn, s)
    }
    return s
  }

  /** A QoS 1 PUBLISH in `direction`. Returns a verdict only for a duplicate (sync or after Redis). */
  publish (direction: Direction, conn: ConnectionInfo, packet: IPublishPacket): HookResult | Promise<HookResult> {
    if (packet.qos !== 1 || conn.clientId === '') return undefined
    const id = packet.messageId as number
    const d = digest(packet.topic, packet.payload)
    const kind = direction === 'in' ? 'i' : 'o'
    const key = recordKey(conn.clientId, kind, id)
    if (packet.dup) {
      // With Redis, Redis decides (another instance may have seen this ID since); DUPs are rare.
      if (this.shared !== undefined) return this.shared.read(key).then((found) => this.decide(direction, conn, packet, d, found))
      return this.decide(direction, conn, packet, d, this.local.get(key))
    }
    // New data under this packet ID: an older record for it must never match again.
    this.state(conn)[direction].set(id, d)
    this.record(key, TOMBSTONE)
    if (direction === 'in' && this.ctx.options.windowMs !== undefined) return this.window(conn, packet, d)
    return undefined
  }

  private decide (direction: Direction, conn: ConnectionInfo, packet: IPublishPacket, d: string, found: string | undefined): HookResult {
    if (found !== d) {
      // Not acknowledged before (or the ID carries other data now): forward, and learn its ack.
      this.state(conn)[direction].set(packet.messageId as number, d)
      return undefined
    }
    return this.removed(direction, conn, packet, 'redelivery (DUP) of an acknowledged message')
  }

  /** Window mode: the same content from this client acknowledged within windowMs. */
  private window (conn: ConnectionInfo, packet: IPublishPacket, d: string): HookResult | Promise<HookResult> {
    const key = recordKey(conn.clientId, 'w', d)
    const windowMs = this.ctx.options.windowMs as number
    const judge = (at: string | undefined): HookResult => {
      if (at === undefined || Date.now() - Number(at) > windowMs) return undefined
      this.state(conn).in.delete(packet.messageId as number)
      return this.removed('in', conn, packet, `same topic and payload acknowledged ${Date.now() - Number(at)} ms ago (window)`)
    }
    const known = this.local.get(key)
    if (known !== undefined || this.shared === undefined) return judge(known)
    return this.shared.read(key).then(judge)
  }

  private removed (direction: Direction, conn: ConnectionInfo, packet: IPublishPacket, why: string): Verdict {
    this.stats.removed[direction]++
    let counts = this.stats.byClient.get(conn.clientId)
    if (counts === undefined) {
      if (this.stats.byClient.size >= BY_CLIENT_MAX) this.stats.byClient.clear()
      counts = { in: 0, out: 0 }
      this.stats.byClient.set(conn.clientId, counts)
    }
    counts[direction]++
    conn.log.info({ plugin: 'dedupe', direction, messageId: packet.messageId, topic: packet.topic, reason: why }, 'dedupe: duplicate removed')
    const puback: IPubackPacket = { cmd: 'puback', messageId: packet.messageId as number }
    if (conn.protocolVersion === 5) puback.reasonCode = 0
    // Answered towards where it came from: the client (in) or the broker (out).
    return { action: 'answer', packets: [puback], reason: why }
  }

  /** The PUBACK of the side that received a PUBLISH: `direction` is the PUBLISH's. */
  acked (direction: Direction, conn: ConnectionInfo, ack: IPubackPacket): HookResult {
    const flight = this.inflight.get(conn)?.[direction]
    const id = ack.messageId as number
    const d = flight?.get(id)
    if (d === undefined || conn.clientId === '') return undefined
    flight?.delete(id)
    if (!accepted(ack)) return undefined
    this.stats.recorded++
    this.record(recordKey(conn.clientId, direction === 'in' ? 'i' : 'o', id), d)
    if (direction === 'in' && this.ctx.options.windowMs !== undefined) {
      const key = recordKey(conn.clientId, 'w', d)
      const at = String(Date.now())
      // Window lookups happen for every QoS 1 PUBLISH: this process answers first.
      this.local.set(key, at)
      this.shared?.write(key, at)
    }
    return undefined
  }

  /** Into Redis when there is one (the store every instance reads), else into this process. */
  private record (key: string, value: string): void {
    if (this.shared !== undefined) this.shared.write(key, value)
    else this.local.set(key, value)
  }

  private redisFailed (what: string, err: unknown): void {
    const now = Date.now()
    if (now - this.lastWarn < WARN_EVERY_MS) return
    this.lastWarn = now
    const fields = { err: err instanceof Error ? err.message : String(err), what, stats: this.stats.redis }
    // workers: N without Redis: the records are the primary's.
    if (this.shared instanceof PrimaryRecords) {
      this.ctx.log.warn(fields, what === 'write' ? 'dedupe: the primary did not take a record (at-least-once kept)' : 'dedupe: the primary did not answer a lookup, message forwarded (at-least-once kept)')
      return
    }
    this.ctx.log.warn(fields,
      what === 'write'
        ? 'dedupe: redis unavailable, records kept in this process only (at-least-once kept)'
        : 'dedupe: redis lookup failed, message forwarded (at-least-once kept)')
  }

  close (): void {
    this.shared?.close()
  }
}

const instances = new WeakMap<object, Dedupe>()

/** The plugin's counters (for metrics and tests). */
export function dedupeStats (plugin: object): DedupeStats | undefined {
  return instances.get(plugin)?.stats
}

export default definePlugin<DedupeOptions>({
  name: 'dedupe',
  options: dedupeOptions,
  primary: primarySide,
  create (ctx) {
    const dedupe = new Dedupe(ctx)
    const plugin = {
      name: 'dedupe',
      in: {
        publish: (conn: ConnectionInfo, p: IPublishPacket) => dedupe.publish('in', conn, p),
        puback: (conn: ConnectionInfo, p: IPubackPacket) => dedupe.acked('out', conn, p)
      },
      out: {
        publish: (conn: ConnectionInfo, p: IPublishPacket) => dedupe.publish('out', conn, p),
        puback: (conn: ConnectionInfo, p: IPubackPacket) => dedupe.acked('in', conn, p)
      },
      // The console's "duplicates removed" figure.
      overview: () => ({ duplicatesRemoved: { ...dedupe.stats.removed } }),
      close: () => { dedupe.close() }
    }
    instances.set(plugin, dedupe)
    return plugin
  }
})
