// Several brokers behind one proxy (issue 21): each new client goes to a broker chosen by the
// balance (balance.ts), skipping brokers that are down (health.ts); a broker that fails a dial
// is skipped for the next one in the client's order, so a dead broker costs a client one
// refused TCP connect, not a timeout. When all are down, the client gets CONNACK 3 / 0x88 at
// once. A broker marked down while its connections are still open (hung, partitioned) has
// them closed by the failover mode: `reconnect` (DISCONNECT 0x8B to MQTT 5 clients; the next
// CONNECT lands on the next broker) or `redirect` (MQTT 5: 0x9C with the Server Reference of
// the client's next broker; 3.1.1 clients as with reconnect).

import type { Duplex } from 'node:stream'
import type { IConnectPacket } from 'mqtt-packet'
import { GuardError, type ErrorCode } from '../errors.js'
import type { Balance, Failover, HealthCheck, PoolBroker } from '../config/config.js'
import type { ConnectionInfo } from '../plugin/api.js'
import type { Upstream } from './upstream.js'
import { brokerSocket, type BrokerSocket } from './broker-socket.js'
import { preferenceOrder, rendezvousOrder, RoundRobin, type BalanceTarget } from './balance.js'
import { BrokerHealth, probeBroker, unavailableCode, type BrokerState } from './health.js'

/** A connection the pool can close with a reason (and, for redirect, a Server Reference). */
export interface PoolClient extends ConnectionInfo {
  close: (code: ErrorCode, reason: string, serverReference?: string) => void
  /** failover: rehome: moves to another broker without closing the client (connection.ts). */
  rehome?: (why: string) => void
}

/** One broker as /upstreams, /metrics and doctor see it. */
export interface BrokerView {
  index: number
  url: string
  weight: number
  state: BrokerState
  /** Drained by an operator (POST /upstreams/{n}/drain): no new clients; since when. */
  drainingSince: string | undefined
  connections: number
  failuresInRow: number
  lastError: string | undefined
  lastCheckMs: number | undefined
  lastCheckAt: string | undefined
  since: string
  /** Times this broker went down. */
  downs: number
  /** Up/down changes in the last ten minutes. */
  recentChanges: number
  /** Clients this broker was chosen for (its dials that worked). */
  dials: number
  /** Dials to it that failed (another broker was then tried). */
  dialFailures: number
  serverReference: string | undefined
}

export interface PoolView {
  balance: Balance
  failover: Failover
  healthCheck: HealthCheck
  brokers: BrokerView[]
}

interface Member {
  readonly spec: PoolBroker
  readonly target: BalanceTarget
  readonly socket: BrokerSocket
  readonly health: BrokerHealth
  readonly clients: Set<PoolClient>
  dials: number
  dialFailures: number
  /** Set while an operator drains it: no new clients, its own moved away at `rate`/s. */
  drain: { rate: number, timer: NodeJS.Timeout, since: number } | undefined
}

export interface PoolOptions {
  brokers: readonly PoolBroker[]
  balance: Balance
  healthCheck: HealthCheck
  failover: Failover
  /** For the probes' client IDs: `mqtt-guard-probe-<instance>`. */
  instanceId: string
  /** Told of each state change (logged by the server). */
  onChange?: (broker: BrokerView, from: BrokerState, why: string) => void
  /** Told of each client's CONNECT → CONNACK time per broker. */
  onConnack?: (url: string, seconds: number) => void
}

/** Dial errors that say this process ran out of something, not that the broker is down. */
const LOCAL_EXHAUSTION = new Set(['EMFILE', 'ENFILE', 'EADDRNOTAVAIL', 'ENOBUFS'])

export class BrokerPool implements Upstream {
  readonly description: string
  readonly rehomes: boolean
  private readonly members: Member[]
  private readonly rr: RoundRobin
  private timer: NodeJS.Timeout | undefined
  private checking = false
  private readonly byConn = new Map<string, Member>()
  private readonly dialedAt = new Map<string, number>()

  constructor (private readonly options: PoolOptions) {
    this.members = options.brokers.map((spec) => ({
      spec,
      target: { key: `${spec.host.toLowerCase()}:${spec.port}`, weight: spec.weight },
      socket: brokerSocket(spec),
      health: new BrokerHealth(options.healthCheck.failures, options.healthCheck.recoveries),
      clients: new Set(),
      dials: 0,
      dialFailures: 0,
      drain: undefined
    }))
    this.rr = new RoundRobin(this.members.map((m) => m.target))
    this.rehomes = options.failover === 'rehome'
    this.description = `${this.members.length} brokers (balance ${options.balance}, failover ${options.failover}): ${this.members.map((m) => m.spec.url).join(', ')}`
  }

  /** Starts the active checks: one round now, then every intervalMs. */
  start (): void {
    void this.checkAll()
    this.timer = setInterval(() => { void this.checkAll() }, this.options.healthCheck.intervalMs)
    this.timer.unref()
  }

  async dial (connect: IConnectPacket, conn: ConnectionInfo, avoid?: string): Promise<Duplex> {
    const client = conn as PoolClient
    const up = (i: number): boolean => this.takes(this.members[i]) && this.members[i]?.spec.url !== avoid
    const order = preferenceOrder(this.options.balance, this.members.map((m) => m.target), connect.clientId, up, (i) => this.members[i]?.clients.size ?? 0, this.rr)
    if (order.length === 0) throw new GuardError('GUARD_ERR_UPSTREAM_UNAVAILABLE', `all ${this.members.length} brokers are down`)
    // redirect: an MQTT 5 client whose own broker (client-id: its hash; first: the first) is
    // down or drained is sent to its next broker's public address (CONNACK 0x9C) instead of
    // being relayed there. The other balances give a client no broker of its own.
    if (this.options.failover === 'redirect' && connect.protocolVersion === 5 && avoid === undefined) {
      const own = this.options.balance === 'client-id' && connect.clientId !== '' ? rendezvousOrder(this.members.map((m) => m.target), connect.clientId)[0] : this.options.balance === 'first' ? 0 : undefined
      const home = own === undefined ? undefined : this.members[own]
      const reference = home === undefined || this.takes(home) ? undefined : this.referenceFor(conn, home.spec.url)
      if (reference !== undefined) throw new GuardError('GUARD_ERR_USE_ANOTHER_SERVER', `broker ${home?.spec.url ?? '?'} is ${home?.drain === undefined ? 'down' : 'drained'}: use ${reference}`, { serverReference: reference })
    }
    const errors: string[] = []
    this.untrack(client) // a client moving to another broker is no longer its old broker's
    for (const i of order) {
      const m = this.members[i] as Member
      if (!this.takes(m)) continue // went down during an earlier attempt
      try {
        const socket = await m.socket.open(conn, this.options.healthCheck.timeoutMs)
        this.track(m, client, socket)
        return socket
      } catch (err) {
        // Out of descriptors or local ports: this process is full, not the broker down. Marking
        // it down would move (or close) every client on it for a fault of ours: refuse this one.
        const code = ((err as Error).cause as NodeJS.ErrnoException | undefined)?.code
        if (code !== undefined && LOCAL_EXHAUSTION.has(code)) throw new GuardError('GUARD_ERR_UPSTREAM_UNAVAILABLE', `cannot open a connection to broker ${m.spec.url}: ${code} (this process is out of descriptors or local ports; raise ulimit -n, or lower limits.maxConnections)`)
        m.dialFailures++
        errors.push((err as Error).message)
        this.failed(m, (err as Error).message)
      }
    }
    throw new GuardError('GUARD_ERR_UPSTREAM_UNAVAILABLE', `no broker could be reached: ${errors.join('; ')}`)
  }

  /** The broker's answer to a client's CONNECT (code) or its absence: passive health. */
  connacked (conn: ConnectionInfo, code: number | 'timeout'): void {
    const m = this.byConn.get(conn.id)
    if (m === undefined) return
    const at = this.dialedAt.get(conn.id)
    this.dialedAt.delete(conn.id)
    if (code === 'timeout') return void this.failed(m, 'a client\'s CONNECT got no CONNACK in time')
    if (unavailableCode(code)) return void this.failed(m, `CONNACK ${code} (server unavailable) to a client`)
    if (at !== undefined) this.options.onConnack?.(m.spec.url, (performance.now() - at) / 1000)
    m.health.passed(false)
  }

  async check (): Promise<boolean> {
    return this.members.some((m) => this.takes(m))
  }

  async close (): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    this.members.forEach((_m, i) => { this.undrain(i) })
  }

  /**
   * Drains broker `index` for maintenance (as EMQX evacuates a node): it takes no new clients,
   * and its clients are moved away by the failover mode, `rate` a second (at least one). Ends
   * by itself when it has no client left? No: it stays drained until undrain(), so that
   * clients that reconnect do not come back to it. False when there is no such broker.
   */
  drainBroker (index: number, rate: number): BrokerView | undefined {
    const m = this.members[index]
    if (m === undefined) return undefined
    if (m.drain !== undefined) clearInterval(m.drain.timer)
    const perTick = Math.max(1, Math.round(rate / 10))
    const timer = setInterval(() => {
      let moved = 0
      for (const client of m.clients) {
        if (moved++ >= perTick) break
        this.move(client, 'GUARD_ERR_BROKER_DRAINING', `broker ${m.spec.url} is drained for maintenance`)
      }
    }, 100)
    timer.unref()
    m.drain = { rate, timer, since: Date.now() }
    return this.memberView(m, index)
  }

  /** Ends a drain: the broker takes new clients again (if its checks pass). */
  undrain (index: number): BrokerView | undefined {
    const m = this.members[index]
    if (m === undefined) return undefined
    if (m.drain !== undefined) clearInterval(m.drain.timer)
    m.drain = undefined
    return this.memberView(m, index)
  }

  /** Up and not drained: may get new clients. */
  private takes (m: Member | undefined): boolean {
    return m !== undefined && m.health.state === 'up' && m.drain === undefined
  }

  /** The broker a connection went to, for the trace and /connections. */
  brokerOf (conn: ConnectionInfo): string | undefined {
    return this.byConn.get(conn.id)?.spec.url
  }

  view (): PoolView {
    const { balance, failover, healthCheck } = this.options
    return { balance, failover, healthCheck, brokers: this.members.map((m, i) => this.memberView(m, i)) }
  }

  private memberView (m: Member, index: number): BrokerView {
    const h = m.health
    return {
      index,
      url: m.spec.url,
      weight: m.spec.weight,
      state: h.state,
      drainingSince: m.drain === undefined ? undefined : new Date(m.drain.since).toISOString(),
      connections: m.clients.size,
      failuresInRow: h.failuresInRow,
      lastError: h.lastError,
      lastCheckMs: h.lastCheckMs,
      lastCheckAt: h.lastCheckAt === undefined ? undefined : new Date(h.lastCheckAt).toISOString(),
      since: new Date(h.changedAt).toISOString(),
      downs: h.downs,
      recentChanges: h.recentChanges(),
      dials: m.dials,
      dialFailures: m.dialFailures,
      serverReference: m.spec.serverReference
    }
  }

  /** One active check of the broker at `url` now (a client's connection to it ended). */
  async probe (url: string): Promise<boolean> {
    const m = this.members.find((x) => x.spec.url === url)
    if (m === undefined) return false
    const r = await probeBroker(m.socket, `mqtt-guard-probe-${this.options.instanceId}-${this.members.indexOf(m)}`, this.options.healthCheck.timeoutMs)
    if (!r.ok) this.failed(m, r.error)
    return r.ok
  }

  private track (m: Member, client: PoolClient, socket: Duplex): void {
    m.dials++
    m.clients.add(client)
    this.byConn.set(client.id, m)
    this.dialedAt.set(client.id, performance.now())
    socket.once('close', () => {
      // A client that moved to another broker is that broker's now.
      if (this.byConn.get(client.id) !== m) return
      this.untrack(client)
    })
  }

  private untrack (client: PoolClient): void {
    const m = this.byConn.get(client.id)
    m?.clients.delete(client)
    this.byConn.delete(client.id)
    this.dialedAt.delete(client.id)
  }

  private async checkAll (): Promise<void> {
    if (this.checking) return
    this.checking = true
    try {
      await Promise.all(this.members.map(async (m, i) => {
        const r = await probeBroker(m.socket, `mqtt-guard-probe-${this.options.instanceId}-${i}`, this.options.healthCheck.timeoutMs)
        m.health.lastCheckMs = r.ms
        m.health.lastCheckAt = Date.now()
        if (r.ok) {
          if (m.health.passed(true)) this.changed(m, 'down', `${this.options.healthCheck.recoveries} checks passed`)
        } else {
          this.failed(m, r.error)
        }
      }))
    } finally {
      this.checking = false
    }
  }

  private failed (m: Member, why: string): void {
    if (!m.health.failed(why)) return
    this.changed(m, 'up', why)
    this.failover(m)
  }

  private changed (m: Member, from: BrokerState, why: string): void {
    this.options.onChange?.(this.memberView(m, this.members.indexOf(m)), from, why)
  }

  /** The broker is down: its clients still connected are moved by the failover mode. */
  private failover (m: Member): void {
    const why = `broker ${m.spec.url} is down: ${m.health.lastError ?? 'failed its checks'}`
    for (const client of [...m.clients]) this.move(client, 'GUARD_ERR_BROKER_DOWN', why)
  }

  /** Moves one client by the failover mode: rehome, redirect (MQTT 5, with a reference), else closed with `code`. */
  private move (client: PoolClient, code: ErrorCode, why: string): void {
    if (this.rehomes && client.rehome !== undefined) return client.rehome(why)
    if (this.options.failover === 'redirect' && client.protocolVersion === 5) {
      const reference = this.referenceFor(client)
      if (reference !== undefined) return client.close('GUARD_ERR_USE_ANOTHER_SERVER', why, reference)
    }
    client.close(code, why)
  }

  /** failover redirect: the Server Reference of the client's next broker that is up and has one. */
  referenceFor (client: ConnectionInfo, avoid = this.brokerOf(client)): string | undefined {
    if (this.options.failover !== 'redirect') return undefined
    const up = (i: number): boolean => this.takes(this.members[i]) && this.members[i]?.spec.serverReference !== undefined && this.members[i]?.spec.url !== avoid
    const order = preferenceOrder(this.options.balance === 'round-robin' ? 'least-connections' : this.options.balance, this.members.map((m) => m.target), client.clientId, up, (i) => this.members[i]?.clients.size ?? 0, this.rr)
    const first = order[0]
    return first === undefined ? undefined : this.members[first]?.spec.serverReference
  }
}
