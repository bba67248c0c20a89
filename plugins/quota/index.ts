// quota: messages and payload bytes per second per client ID and per user name (token buckets
// with a burst), and connections per user name. Over a rate, the client is disconnected (MQTT 5:
// DISCONNECT 0x96 for messages, 0x97 for bytes; 3.1.1: closed) or, with `onExceeded: delay`, its
// PUBLISH waits and the proxy stops reading from it. Over the connections, CONNACK 0x97 / 3.
// Per-user counts are shared across instances through Redis (or across workers through the
// primary) by a periodic sync; no packet waits for it. See README.md.

import type { IConnectPacket, IPublishPacket } from 'mqtt-packet'
import { definePlugin, type CloseInfo, type ConnectionInfo, type HookResult, type PluginContext } from '../../src/plugin/api.js'
import { statsCounter } from '../../src/observe/metrics.js'
import { charge, decide, newPair, type Decision, type Kind, type Pair } from './bucket.js'
import { UserConnections } from './connections.js'
import { QuotaFindings } from './findings.js'
import { quotaOptions, type QuotaOptions, type RateLimits } from './options.js'
import { PrimaryQuotaStore, primarySide } from './primary.js'
import { RedisQuotaStore } from './redis-store.js'
import { spanOf, UsageSync } from './usage.js'

/** What the plugin keeps per connection that reached its CONNECT hook. */
interface State {
  /** The keys of its buckets: `c:<client ID>` (or `n:<connection>` without one), `u:<user name>`. */
  readonly clientKey: string
  readonly userKey: string | undefined
  readonly user: string | undefined
  readonly owner: string
  /** Holds one of its user name's connections (released at close). */
  counted: boolean
  delayed: boolean
}

export interface QuotaStats {
  exceeded: { messages: number, bytes: number, connections: number }
  delayed: { messages: number, bytes: number }
  delayMs: { messages: number, bytes: number }
  redisFailures: { sync: number, connect: number, renew: number }
  syncs: number
}

const WARN_EVERY_MS = 10_000

export class Quota {
  readonly stats: QuotaStats = {
    exceeded: { messages: 0, bytes: 0, connections: 0 }, delayed: { messages: 0, bytes: 0 }, delayMs: { messages: 0, bytes: 0 }, redisFailures: { sync: 0, connect: 0, renew: 0 }, syncs: 0
  }

  readonly findings = new QuotaFindings()
  private options: QuotaOptions
  private readonly states = new WeakMap<ConnectionInfo, State>()
  /** Buckets by key, least recently used first; full ones are dropped (a new one is the same). */
  private readonly pairs = new Map<string, Pair>()
  private readonly sync: UsageSync | undefined
  private readonly connections: UserConnections
  private readonly timers: NodeJS.Timeout[] = []
  private syncFailing = false
  private lastWarn = 0

  constructor (private readonly ctx: PluginContext<QuotaOptions>) {
    this.options = ctx.options
    const shared = ctx.redis !== undefined
      ? new RedisQuotaStore(ctx.redis, ctx.keyPrefix, () => this.options.leaseMs, () => this.options.redisTimeoutMs)
      : ctx.primary !== undefined ? new PrimaryQuotaStore(ctx.primary) : undefined
    if (shared !== undefined) this.sync = new UsageSync(shared, (key, m, b, ageMs) => { this.othersUsed(key, m, b, ageMs) }, () => spanOf(this.options.perUser?.burstSeconds ?? 1))
    this.connections = new UserConnections(shared, (what, err) => { this.sharedFailed(what, err) })
    this.arm()
    const s = this.stats
    statsCounter(ctx.metrics, 'mqtt_guard_quota_exceeded_total', 'Clients the quota plugin refused or disconnected, by what was over: messages, bytes (per second), connections (per user name)', 'kind', () => ({ ...s.exceeded }))
    statsCounter(ctx.metrics, 'mqtt_guard_quota_delayed_total', 'PUBLISH packets the quota plugin held back (onExceeded: delay), by the rate that made them wait', 'kind', () => ({ ...s.delayed }))
    statsCounter(ctx.metrics, 'mqtt_guard_quota_delay_seconds_total', 'Time PUBLISH packets were held back by the quota plugin, summed, by the rate that made them wait', 'kind', () => ({ messages: s.delayMs.messages / 1000, bytes: s.delayMs.bytes / 1000 }))
    statsCounter(ctx.metrics, 'mqtt_guard_quota_redis_failures_total', 'Shared quota state (Redis, or the primary with workers) that failed or was too slow: sync (limits per instance meanwhile), connect (counted on this instance alone), renew (leases)', 'kind', () => ({ ...s.redisFailures }))
    ctx.log.info({ perClient: this.options.perClient, perUser: this.options.perUser, onExceeded: this.options.onExceeded, shared: ctx.redis !== undefined ? 'redis' : ctx.primary !== undefined ? 'workers' : 'process' }, 'quota ready')
  }

  /** The sync and renewal timers, at the intervals the options say now. */
  private arm (): void {
    for (const t of this.timers.splice(0)) clearInterval(t)
    const every = (ms: number, run: () => Promise<void>): void => {
      const timer = setInterval(() => { void run() }, ms)
      timer.unref()
      this.timers.push(timer)
    }
    if (this.sync !== undefined) every(this.options.syncMs, async () => { await this.runSync() })
    if (this.ctx.redis !== undefined) every(Math.max(100, Math.floor(this.options.leaseMs / 3)), async () => { await this.connections.renew() })
    every(10_000, async () => { this.sweep() })
  }

  reconfigure (options: QuotaOptions): void {
    const rearm = options.syncMs !== this.options.syncMs || options.leaseMs !== this.options.leaseMs
    this.options = options
    if (rearm) this.arm()
  }

  // ---- CONNECT: connections per user name ---------------------------------------------------

  connect (conn: ConnectionInfo, packet: IConnectPacket): HookResult | Promise<HookResult> {
    // The authenticated user name when a plugin before this one set it (auth: a certificate's).
    const user = conn.identity?.username ?? conn.username ?? packet.username
    const state = this.track(conn, packet.clientId, user)
    const max = this.options.perUser?.connections
    if (max === undefined || user === undefined) return undefined
    return this.connections.admit(user, state.owner, max).then((answer) => {
      if (this.states.get(conn) !== state) {
        // Closed while the store was answering: give back what it just gave.
        if (answer.ok) this.connections.release(user, state.owner)
        return undefined
      }
      if (answer.ok) {
        state.counted = true
        return undefined
      }
      this.stats.exceeded.connections++
      this.findings.count(packet.clientId, user, 'connections per user name')
      conn.log.warn({ plugin: 'quota', kind: 'connections', scope: 'user', limit: max, count: answer.count, alone: answer.alone }, 'quota exceeded: connections per user name')
      return { action: 'reject', code: 'GUARD_ERR_QUOTA_EXCEEDED', reason: `user name has ${answer.count} connections already (perUser.connections: ${max})` }
    })
  }

  /** The connection's state from now on, its buckets keyed by client ID and user name. */
  private track (conn: ConnectionInfo, clientId: string, user: string | undefined): State {
    const state: State = {
      clientKey: clientId === '' ? `n:${conn.id}` : `c:${clientId}`,
      userKey: user === undefined ? undefined : `u:${user}`,
      user,
      owner: `${this.ctx.instanceId}:${conn.id}`,
      counted: false,
      delayed: false
    }
    this.states.set(conn, state)
    return state
  }

  onClose (conn: ConnectionInfo, _info: CloseInfo): void {
    const state = this.states.get(conn)
    if (state === undefined) return
    this.states.delete(conn)
    if (state.counted && state.user !== undefined) this.connections.release(state.user, state.owner)
  }

  // ---- PUBLISH: the rates --------------------------------------------------------------------

  publish (conn: ConnectionInfo, packet: IPublishPacket): HookResult | Promise<HookResult> {
    const o = this.options
    // Not seen at CONNECT (cannot happen in one generation): keyed as at CONNECT.
    const state = this.states.get(conn) ?? this.track(conn, conn.clientId, conn.username)
    const now = performance.now()
    const bytes = typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length
    const client = { pair: this.pairOf(state.clientKey, o.perClient, now), limits: o.perClient }
    const user = { pair: this.pairOf(state.userKey, o.perUser, now), limits: o.perUser }
    const d = decide(client, user, bytes, now, o.onExceeded === 'delay')
    if (d.kind === 'ok') {
      this.used(state, bytes)
      return undefined
    }
    if (d.kind === 'wait' && d.waitMs <= o.maxDelayMs) {
      charge(client, user, bytes, now)
      this.used(state, bytes)
      return this.delay(conn, state, d)
    }
    return this.exceeded(conn, state, d)
  }

  /** The pair of `key` under `limits`, made full when new (and moved to the end: recently used). */
  private pairOf (key: string | undefined, limits: RateLimits | undefined, now: number): Pair | undefined {
    if (key === undefined || limits === undefined) return undefined
    let pair = this.pairs.get(key)
    if (pair === undefined) {
      pair = newPair(limits, now)
      if (this.pairs.size >= this.options.maxKeys) this.pairs.delete(this.pairs.keys().next().value as string)
    } else {
      this.pairs.delete(key)
    }
    this.pairs.set(key, pair)
    return pair
  }

  private used (state: State, bytes: number): void {
    if (state.user !== undefined && this.options.perUser !== undefined && (this.options.perUser.messagesPerSecond !== undefined || this.options.perUser.bytesPerSecond !== undefined)) this.sync?.record(state.user, bytes)
  }

  private async delay (conn: ConnectionInfo, state: State, d: Extract<Decision, { kind: 'wait' }>): Promise<HookResult> {
    this.stats.delayed[d.over]++
    this.stats.delayMs[d.over] += d.waitMs
    if (!state.delayed) {
      state.delayed = true
      conn.log.info({ plugin: 'quota', kind: d.over, scope: d.scope, waitMs: d.waitMs, maxDelayMs: this.options.maxDelayMs }, 'quota: publishing delayed')
    }
    // The lane waits for this promise; what the client sends meanwhile queues behind it, and
    // past limits.maxQueuedPackets the proxy stops reading the client's socket.
    await new Promise((resolve) => { setTimeout(resolve, d.waitMs) })
    return undefined
  }

  private exceeded (conn: ConnectionInfo, state: State, d: Exclude<Decision, { kind: 'ok' }>): HookResult {
    const o = this.options
    const limits = d.scope === 'client' ? o.perClient : o.perUser
    const rate = d.over === 'messages' ? limits?.messagesPerSecond : limits?.bytesPerSecond
    this.stats.exceeded[d.over]++
    const scope = d.scope === 'client' ? 'per client' : 'per user name'
    this.findings.count(conn.clientId, state.user, `${d.over} ${scope}`)
    const never = d.kind === 'over' && d.never
    const waitMs = d.kind === 'wait' ? d.waitMs : undefined
    const reason = never
      ? `a message larger than the ${scope} burst (${String(rate)} bytes/s × ${String(limits?.burstSeconds)} s)`
      : `${d.over} ${scope} over ${String(rate)}/s${waitMs === undefined ? '' : ` (would wait ${waitMs} ms, maxDelayMs ${o.maxDelayMs})`}`
    conn.log.warn({ plugin: 'quota', kind: d.over, scope: d.scope, limit: rate, burstSeconds: limits?.burstSeconds, onExceeded: o.onExceeded, waitMs, detail: reason }, 'quota exceeded: disconnecting')
    const code = d.over === 'messages' ? 'GUARD_ERR_MESSAGE_RATE' : 'GUARD_ERR_QUOTA_EXCEEDED'
    // MQTT 5: DISCONNECT with the code; 3.1.1 has none and is closed.
    conn.close(code, reason)
    return { action: 'drop', reason }
  }

  // ---- shared with the others ----------------------------------------------------------------

  /** What other instances used `ageMs` ago, less what their bucket has refilled since. */
  private othersUsed (user: string, messages: number, bytes: number, ageMs: number): void {
    const pair = this.pairs.get(`u:${user}`)
    const o = this.options.perUser
    if (pair === undefined || o === undefined) return
    const since = ageMs / 1000
    if (pair.messages !== undefined && o.messagesPerSecond !== undefined) pair.messages.spend(messages - o.messagesPerSecond * since, o.messagesPerSecond * o.burstSeconds)
    if (pair.bytes !== undefined && o.bytesPerSecond !== undefined) pair.bytes.spend(bytes - o.bytesPerSecond * since, o.bytesPerSecond * o.burstSeconds)
  }

  private async runSync (): Promise<void> {
    try {
      if (await (this.sync as UsageSync).sync() === 0) return
      this.stats.syncs++
      if (this.syncFailing) this.ctx.log.info({ plugin: 'quota' }, 'quota: shared counts work again')
      this.syncFailing = false
    } catch (err) {
      this.sharedFailed('sync', err)
    }
  }

  private sharedFailed (what: 'sync' | 'connect' | 'renew', err: unknown): void {
    this.stats.redisFailures[what]++
    const now = Date.now()
    // The first failure of an outage at once, then at most every WARN_EVERY_MS.
    if ((what === 'sync' && this.syncFailing) || (what !== 'sync' && now - this.lastWarn < WARN_EVERY_MS)) return
    if (what === 'sync') this.syncFailing = true
    else this.lastWarn = now
    const fields = { plugin: 'quota', what, err: err instanceof Error ? err.message : String(err), shared: this.ctx.redis !== undefined ? 'redis' : 'workers' }
    if (what === 'sync') this.ctx.log.warn(fields, 'quota: shared counts unavailable, limits apply per instance')
    else if (what === 'connect') this.ctx.log.warn(fields, 'quota: shared counts unavailable, connections counted on this instance only')
    else this.ctx.log.warn(fields, 'quota: connection leases not renewed; they expire after leaseMs')
  }

  /** Drops full buckets (nothing to remember) so idle clients cost nothing. */
  private sweep (): void {
    const now = performance.now()
    const o = this.options
    for (const [key, pair] of this.pairs) {
      const limits = key.startsWith('u:') ? o.perUser : o.perClient
      if (limits === undefined || (full(pair.messages, limits.messagesPerSecond, limits.burstSeconds, now) && full(pair.bytes, limits.bytesPerSecond, limits.burstSeconds, now))) this.pairs.delete(key)
    }
  }

  diagnose (): ReturnType<QuotaFindings['findings']> {
    return this.findings.findings()
  }

  close (): void {
    for (const t of this.timers.splice(0)) clearInterval(t)
  }
}

function full (bucket: Pair[Kind] | undefined, rate: number | undefined, burstSeconds: number, now: number): boolean {
  return bucket === undefined || rate === undefined || bucket.full(now, rate, rate * burstSeconds)
}

const instances = new WeakMap<object, Quota>()

/** The plugin's counters (for tests). */
export function quotaStats (plugin: object): QuotaStats | undefined {
  return instances.get(plugin)?.stats
}

export default definePlugin<QuotaOptions>({
  name: 'quota',
  options: quotaOptions,
  primary: primarySide,
  create (ctx) {
    const quota = new Quota(ctx)
    const plugin = {
      name: 'quota',
      in: {
        connect: (conn: ConnectionInfo, packet: IConnectPacket) => quota.connect(conn, packet),
        publish: (conn: ConnectionInfo, packet: IPublishPacket) => quota.publish(conn, packet)
      },
      onClose: (conn: ConnectionInfo, info: CloseInfo) => { quota.onClose(conn, info) },
      // New limits apply to the next packet; buckets keep their tokens.
      reconfigure: (options: unknown) => { quota.reconfigure(options as QuotaOptions) },
      diagnose: () => quota.diagnose(),
      close: () => { quota.close() }
    }
    instances.set(plugin, quota)
    return plugin
  }
})
