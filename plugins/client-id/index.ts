// client-id: no two live connections share a client ID, across every proxy instance sharing
// one Redis (in memory without it), and clients that flap are banned for a while, with the
// evidence logged once. See README.md.

import type { IConnackPacket, IConnectPacket, IDisconnectPacket } from 'mqtt-packet'
import type { Redis, Cluster } from 'ioredis'
import { definePlugin, type CloseInfo, type ConnectionInfo, type HookResult, type PluginContext } from '../../src/plugin/api.js'
import { explainEnd } from './explain.js'
import { clientIdOptions, type ClientIdOptions, type FlapKey } from './options.js'
import { decide, MemoryStore, sameIdentity, type Admission, type Claim, type HistoryEntry, type Holder, type Store } from './store.js'
import { RedisStore } from './redis-store.js'
import { PrimaryStore, primarySide, type TakeoverNotice } from './primary-store.js'
import { statsCounter } from '../../src/observe/metrics.js'
import { subscribeChannel } from '../../src/redis/call.js'
import { cutFields } from '../../src/log/log.js'

/** What the plugin keeps per connection that reached its CONNECT hook. */
interface Entry {
  readonly conn: ConnectionInfo
  /** The registered ID: the CONNECT's, or the one the broker assigned; undefined: none. */
  clientId: string | undefined
  readonly holder: Holder
  readonly flapKeys: string[]
  readonly keepaliveS: number
  /** True while this connection holds its ID (in this process's view). */
  owns: boolean
  brokerReason?: number
  takenOverBy?: { address: string, sameIdentity: boolean }
}

export interface ClientIdStats {
  admitted: number
  refusedHeld: number
  refusedInvalid: number
  takeovers: number
  banned: number
  bans: number
  failOpen: number
  failClosed: number
  leasesLost: number
  /** Rounds of lease renewals that failed (Redis unreachable, or refused the calls). */
  renewFailures: number
}

const WARN_EVERY_MS = 10_000

function flapKey (kind: FlapKey, conn: ConnectionInfo, packet: IConnectPacket): string | undefined {
  if (kind === 'clientId') return packet.clientId === '' ? undefined : `id:${packet.clientId}`
  if (kind === 'username') return packet.username === undefined ? undefined : `user:${packet.username}`
  return `addr:${conn.address}`
}

function describe (holder: Holder): string {
  const user = holder.username === undefined ? 'no user name' : `user ${JSON.stringify(holder.username)}`
  return `a connection from ${holder.address} (${user}) since ${new Date(holder.since).toISOString()}`
}

/** Groups a flapping key's history into the evidence line of the ban. */
export function evidence (history: HistoryEntry[]): { connects: number, addresses: string[], ends: Array<{ why: string, count: number }> } {
  const ends = new Map<string, number>()
  const addresses = new Set<string>()
  let connects = 0
  for (const h of history) {
    addresses.add(h.a)
    if (h.k === 'c') connects++
    else ends.set(h.why ?? 'unknown', (ends.get(h.why ?? 'unknown') ?? 0) + 1)
  }
  return { connects, addresses: [...addresses], ends: [...ends].map(([why, count]) => ({ why, count })).sort((a, b) => b.count - a.count) }
}

export class ClientIds {
  readonly stats: ClientIdStats = { admitted: 0, refusedHeld: 0, refusedInvalid: 0, takeovers: 0, banned: 0, bans: 0, failOpen: 0, failClosed: 0, leasesLost: 0, renewFailures: 0 }
  private readonly entries = new WeakMap<ConnectionInfo, Entry>()
  /** This process's holders, by client ID. */
  private readonly owned = new Map<string, Entry>()
  private readonly store: Store
  private readonly shared: RedisStore | undefined
  private subscriber: Redis | Cluster | undefined
  private stopNotices: (() => void) | undefined
  private renewTimer: NodeJS.Timeout | undefined
  private lastWarn = 0

  constructor (private readonly ctx: PluginContext<ClientIdOptions>) {
    const o = ctx.options
    if (ctx.redis === undefined && ctx.primary !== undefined) {
      // A worker of `workers: N` without Redis: the registry is the primary's, for every worker.
      const store = new PrimaryStore(ctx.primary)
      this.stopNotices = store.onTakeover((notice) => { this.onTakeoverNotice(notice) })
      this.store = store
    } else if (ctx.redis === undefined) {
      this.store = new MemoryStore(o.flapping, o.maxKeys)
    } else {
      this.shared = new RedisStore(ctx.redis, ctx.keyPrefix, o.leaseMs, o.flapping, o.redisTimeoutMs)
      this.store = this.shared
    }
    const stats = this.stats
    statsCounter(ctx.metrics, 'mqtt_guard_client_id_events_total',
      'client-id decisions: admitted, refused (held, invalid), takeovers, banned connects, bans started, fail-open admits, fail-closed refusals, leases lost, failed renewal rounds',
      'event', () => ({ ...stats }))
  }

  async start (): Promise<void> {
    if (this.shared === undefined || this.ctx.redis === undefined) return
    this.subscriber = subscribeChannel(this.ctx.redis, this.shared.channel, (message) => {
      const notice = RedisStore.notice(message)
      if (notice !== undefined) this.onTakeoverNotice(notice)
    })
    this.renewTimer = setInterval(() => { void this.renew() }, Math.max(100, Math.floor(this.ctx.options.leaseMs / 3)))
    this.renewTimer.unref()
  }

  // ---- CONNECT -------------------------------------------------------------------------------

  connect (conn: ConnectionInfo, packet: IConnectPacket): HookResult | Promise<HookResult> {
    const invalid = this.invalid(conn, packet)
    if (invalid !== undefined) {
      this.stats.refusedInvalid++
      conn.log.info({ plugin: 'client-id', reason: invalid }, 'client-id: refused')
      return { action: 'reject', code: 'GUARD_ERR_CLIENT_ID_REJECTED', reason: invalid }
    }
    const o = this.ctx.options
    const clientId = packet.clientId === '' ? undefined : packet.clientId
    const holder: Holder = { owner: `${this.ctx.instanceId}:${conn.id}`, username: packet.username, address: conn.address, since: Date.now() }
    const flapKeys = o.flapping === undefined ? [] : o.flapping.by.map((k) => flapKey(k, conn, packet)).filter((k): k is string => k !== undefined)
    const entry: Entry = { conn, clientId, holder, flapKeys, keepaliveS: packet.keepalive ?? 0, owns: false }
    this.entries.set(conn, entry)
    const claim: Claim = { clientId, holder, policy: o.policy, flapKeys }
    let admission: Admission | Promise<Admission>
    try {
      admission = this.store.admit(claim)
    } catch (err) {
      return this.unavailable(entry, claim, err)
    }
    if (admission instanceof Promise) return admission.then((a) => this.admitted(entry, a), (err: unknown) => this.unavailable(entry, claim, err))
    return this.admitted(entry, admission)
  }

  /** Why the ID is refused before any registry lookup, or undefined. */
  private invalid (conn: ConnectionInfo, packet: IConnectPacket): string | undefined {
    const o = this.ctx.options
    const id = packet.clientId
    if (id === '') {
      // [MQTT-3.1.3-7], [MQTT-3.1.3-8]: 3.1.1 allows an empty ID with a clean session only;
      // MQTT 3.1 not at all; MQTT 5 lets the broker assign one.
      if (conn.protocolVersion === 3) return 'empty client ID (MQTT 3.1 needs one)'
      if (conn.protocolVersion === 4 && packet.clean === false) return 'empty client ID with clean session off [MQTT-3.1.3-8]'
      return undefined
    }
    if (o.maxIdLength !== undefined && Buffer.byteLength(id, 'utf8') > o.maxIdLength) return `client ID longer than maxIdLength (${o.maxIdLength} bytes)`
    if (o.idPattern !== undefined && !o.idPattern.test(id)) return 'client ID does not match idPattern'
    return undefined
  }

  private admitted (entry: Entry, admission: Admission): HookResult {
    const { conn } = entry
    if (this.entries.get(conn) !== entry) {
      // Closed while Redis was answering: give back what it was just given.
      if (admission.kind === 'admitted' && entry.clientId !== undefined) {
        Promise.resolve(this.store.release(entry.clientId, entry.holder.owner, [], { t: Date.now(), k: 'e', a: entry.holder.address, why: 'closed while being admitted' })).catch(() => {})
      }
      return undefined
    }
    switch (admission.kind) {
      case 'admitted': {
        this.stats.admitted++
        const previous = entry.clientId === undefined ? undefined : this.owned.get(entry.clientId)
        if (entry.clientId !== undefined) this.own(entry)
        if (admission.tookOver !== undefined) this.tookOver(entry, admission.tookOver, previous)
        return undefined
      }
      case 'held': {
        this.stats.refusedHeld++
        const reason = `client ID in use by ${describe(admission.holder)}`
        conn.log.info({ plugin: 'client-id', policy: this.ctx.options.policy, holder: cutFields(admission.holder) }, 'client-id: refused, ID in use')
        return { action: 'reject', code: 'GUARD_ERR_CLIENT_ID_REJECTED', reason }
      }
      case 'banned': {
        this.stats.banned++
        return { action: 'reject', code: 'GUARD_ERR_BANNED', reason: `flapping: ${admission.key} banned until ${new Date(admission.until).toISOString()}` }
      }
      case 'flapping': {
        this.stats.banned++
        this.stats.bans++
        const f = this.ctx.options.flapping
        const ev = evidence(admission.history)
        // The evidence as fields (`ends[0].why` is the likeliest cause), not built into msg.
        conn.log.warn({
          plugin: 'client-id', key: admission.key, connects: admission.connects, windowMs: f?.windowMs, banMs: f?.banMs, until: new Date(admission.until).toISOString(),
          addresses: ev.addresses, ends: ev.ends
        }, 'client-id: flapping, banned')
        return { action: 'reject', code: 'GUARD_ERR_BANNED', reason: `flapping: ${admission.key} connected ${admission.connects} times within flapping.windowMs` }
      }
    }
  }

  /** Redis failed or was too slow: admit on this process's own view, or refuse. */
  private unavailable (entry: Entry, claim: Claim, err: unknown): HookResult {
    const now = Date.now()
    if (now - this.lastWarn >= WARN_EVERY_MS) {
      this.lastWarn = now
      this.ctx.log.warn({ err: (err as Error).message, failOpen: this.ctx.options.failOpen }, this.ctx.options.failOpen
        ? 'client-id: redis unavailable, checking this instance\'s connections only'
        : 'client-id: redis unavailable, refusing connections (failOpen: false)')
    }
    if (!this.ctx.options.failOpen) {
      this.stats.failClosed++
      return { action: 'reject', code: 'GUARD_ERR_STATE_UNAVAILABLE', reason: 'client-id registry (Redis) unavailable' }
    }
    this.stats.failOpen++
    if (claim.clientId === undefined) return this.admitted(entry, { kind: 'admitted' })
    const current = this.owned.get(claim.clientId)
    const decision = decide(current?.holder, claim)
    if (decision === 'held') return this.admitted(entry, { kind: 'held', holder: (current as Entry).holder })
    return this.admitted(entry, decision === 'take' ? { kind: 'admitted', tookOver: (current as Entry).holder } : { kind: 'admitted' })
  }

  private own (entry: Entry): void {
    entry.owns = true
    const previous = this.owned.get(entry.clientId as string)
    this.owned.set(entry.clientId as string, entry)
    if (previous !== undefined && previous !== entry) previous.owns = false
  }

  /** `previous`: this process's connection that held the ID, if it was here. */
  private tookOver (entry: Entry, old: Holder, previous: Entry | undefined): void {
    this.stats.takeovers++
    const same = sameIdentity(old, entry.holder)
    entry.conn.log.info({ plugin: 'client-id', previous: cutFields(old), sameIdentity: same }, 'client-id: took over the ID')
    // Another instance's connection hears it over Redis (onTakeoverNotice).
    if (previous !== undefined && previous !== entry && previous.holder.owner === old.owner) this.kick(previous, entry.holder.address, same)
  }

  private kick (entry: Entry, by: string, same: boolean): void {
    entry.owns = false
    entry.takenOverBy = { address: by, sameIdentity: same }
    entry.conn.close('GUARD_ERR_SESSION_TAKEN_OVER', `client ID ${String(entry.clientId)} taken over by a connection from ${by}`)
  }

  /** Another instance's (Redis) or worker's (the primary) connection took an ID over. */
  private onTakeoverNotice (notice: TakeoverNotice): void {
    const entry = this.owned.get(notice.id)
    // The newer connection may be ours too: then it is the registered one, and not the owner.
    if (entry === undefined || entry.holder.owner !== notice.owner) return
    this.owned.delete(notice.id)
    this.kick(entry, notice.by, notice.same)
  }

  // ---- CONNACK: an ID the broker assigned ----------------------------------------------------

  connack (conn: ConnectionInfo, packet: IConnackPacket): HookResult {
    const assigned = packet.properties?.assignedClientIdentifier
    const entry = this.entries.get(conn)
    if (assigned === undefined || entry === undefined || entry.clientId !== undefined) return undefined
    entry.clientId = assigned
    this.own(entry)
    // Assigned IDs are unique at the broker; the lease only makes them visible to the fleet.
    const claim: Claim = { clientId: assigned, holder: entry.holder, policy: 'reject-new', flapKeys: [] }
    Promise.resolve(this.store.admit(claim)).then((a) => {
      if (a.kind === 'held') conn.log.warn({ plugin: 'client-id', holder: cutFields(a.holder) }, 'client-id: the broker assigned an ID that another connection holds')
    }, () => {})
    return undefined
  }

  disconnect (conn: ConnectionInfo, packet: IDisconnectPacket): HookResult {
    const entry = this.entries.get(conn)
    if (entry !== undefined) entry.brokerReason = packet.reasonCode ?? 0
    return undefined
  }

  // ---- the end of a connection ---------------------------------------------------------------

  onClose (conn: ConnectionInfo, info: CloseInfo): void {
    const entry = this.entries.get(conn)
    if (entry === undefined) return
    this.entries.delete(conn)
    const owned = entry.clientId !== undefined && this.owned.get(entry.clientId) === entry
    if (owned) this.owned.delete(entry.clientId as string)
    if (!entry.owns && entry.flapKeys.length === 0) return
    const why = explainEnd(info, {
      keepaliveS: entry.keepaliveS,
      durationMs: Date.now() - entry.holder.since,
      brokerReason: entry.brokerReason,
      takenOverBy: entry.takenOverBy
    })
    const end: HistoryEntry = { t: Date.now(), k: 'e', a: entry.holder.address, why }
    Promise.resolve(this.store.release(entry.owns ? entry.clientId : undefined, entry.holder.owner, entry.flapKeys, end)).catch(() => {
      // The lease expires by itself within leaseMs.
    })
  }

  // ---- leases --------------------------------------------------------------------------------

  private renewing = false
  private renewFailing = false

  private async renew (): Promise<void> {
    if (this.renewing || this.owned.size === 0) return
    this.renewing = true
    try {
      const entries = [...this.owned.values()]
      const results = await this.store.renew(entries.map((e) => ({ clientId: e.clientId as string, holder: e.holder })))
      results.forEach((renewal, i) => {
        const entry = entries[i] as Entry
        if (renewal.result !== 'lost' || this.owned.get(entry.clientId as string) !== entry) return
        // Another instance holds the ID now: it won while this one could not renew (Redis
        // down), or it took the ID over and its notice is still on its way. Either way the
        // end says who took it, as the notice would have (the evidence of a flapping ban).
        this.stats.leasesLost++
        this.owned.delete(entry.clientId as string)
        entry.owns = false
        if (renewal.holder !== undefined) entry.takenOverBy = { address: renewal.holder.address, sameIdentity: sameIdentity(entry.holder, renewal.holder) }
        entry.conn.log.warn({ plugin: 'client-id', holder: renewal.holder }, 'client-id: lease lost to another connection; closing')
        entry.conn.close('GUARD_ERR_SESSION_TAKEN_OVER', `client ID lease lost to a connection from ${renewal.holder?.address ?? 'another instance'}`)
      })
      if (this.renewFailing) this.ctx.log.info({ plugin: 'client-id', leases: entries.length }, 'client-id: lease renewals work again')
      this.renewFailing = false
    } catch (err) {
      // Leases live on until leaseMs; the next round tries again. Counted, and said once per
      // outage: a lease that silently expires lets another identity take a held ID.
      this.stats.renewFailures++
      if (!this.renewFailing) this.ctx.log.warn({ plugin: 'client-id', err: (err as Error).message, leaseMs: this.ctx.options.leaseMs }, 'client-id: lease renewals failing; held IDs are unprotected once their leases expire')
      this.renewFailing = true
    } finally {
      this.renewing = false
    }
  }

  close (): void {
    if (this.renewTimer !== undefined) clearInterval(this.renewTimer)
    this.subscriber?.disconnect()
    this.stopNotices?.()
  }
}

const instances = new WeakMap<object, ClientIds>()

/** The plugin's counters (for metrics and tests). */
export function clientIdStats (plugin: object): ClientIdStats | undefined {
  return instances.get(plugin)?.stats
}

export default definePlugin<ClientIdOptions>({
  name: 'client-id',
  options: clientIdOptions,
  primary: primarySide,
  async create (ctx) {
    const ids = new ClientIds(ctx)
    await ids.start()
    const plugin = {
      name: 'client-id',
      in: { connect: (conn: ConnectionInfo, packet: IConnectPacket) => ids.connect(conn, packet) },
      out: {
        connack: (conn: ConnectionInfo, packet: IConnackPacket) => ids.connack(conn, packet),
        disconnect: (conn: ConnectionInfo, packet: IDisconnectPacket) => ids.disconnect(conn, packet)
      },
      onClose: (conn: ConnectionInfo, info: CloseInfo) => { ids.onClose(conn, info) },
      close: () => { ids.close() }
    }
    instances.set(plugin, ids)
    return plugin
  }
})
