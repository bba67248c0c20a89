// The four aedes functions as proxy hooks: authenticate → in.connect, authorizePublish →
// in.publish (and the will, at CONNECT), authorizeSubscribe → in.subscribe (per filter),
// authorizeForward → out.publish. Each user function gets the same `client` object for the
// whole connection, so what authenticate stores on it (e.g. `client.user`) is there later.

import type { IConnectPacket, IPublishPacket, ISubscribePacket, ISubscription, Packet } from 'mqtt-packet'
import type { ConnectionInfo, HookResult } from '../../src/plugin/api.js'
import type { ErrorCode } from '../../src/errors.js'
import { andThen, callHook, styleOf, type Settled } from './call.js'
import { decisionFrom, deniedFilters, Subacks, type FilterDecision } from './subscribe.js'

type Cb = (error?: unknown, value?: unknown) => void
export interface AedesFunctions {
  authenticate?: (client: AedesClient, username: string | undefined, password: Buffer | undefined, callback: Cb) => unknown
  authorizePublish?: (client: AedesClient, packet: IPublishPacket, callback: Cb) => unknown
  authorizeSubscribe?: (client: AedesClient, subscription: ISubscription, callback: Cb) => unknown
  authorizeForward?: (client: AedesClient, packet: IPublishPacket) => unknown
}
export const HOOK_NAMES = ['authenticate', 'authorizePublish', 'authorizeSubscribe', 'authorizeForward'] as const

/** The part of aedes' Client that hooks commonly read; anything else they set on it is kept. */
export interface AedesClient {
  /** The client ID; the broker-assigned one once CONNACK carried it. */
  readonly id: string
  clean: boolean
  /** Protocol level from CONNECT: 3, 4 (3.1.1) or 5. */
  version: number
  keepalive: number
  conn: { remoteAddress: string, remotePort: number }
  [key: string]: unknown
}

/** A new client object for a connection (fields from its CONNECT when known). */
function newClient (conn: ConnectionInfo, connect?: IConnectPacket): AedesClient {
  return {
    get id () { return conn.clientId },
    clean: connect?.clean ?? true,
    version: connect?.protocolVersion ?? conn.protocolVersion,
    keepalive: connect?.keepalive ?? 0,
    conn: { remoteAddress: conn.address, remotePort: conn.port }
  }
}

/** aedes' CONNACK return codes 2..5 [MQTT-3.2.2-3 table], anything else is 5. */
export function refusalCode (error: unknown): ErrorCode {
  const returnCode = (error as { returnCode?: unknown } | undefined)?.returnCode
  switch (returnCode) {
    case 2: return 'GUARD_ERR_CLIENT_ID_REJECTED'
    case 3: return 'GUARD_ERR_UPSTREAM_UNAVAILABLE'
    case 4: return 'GUARD_ERR_BAD_CREDENTIALS'
    default: return 'GUARD_ERR_NOT_AUTHORIZED'
  }
}

export class Hooks {
  readonly subacks = new Subacks()
  // Per plugin instance: two instances with different modules do not share client objects.
  private readonly clients = new WeakMap<ConnectionInfo, AedesClient>()

  constructor (
    private readonly fns: AedesFunctions,
    private readonly timeoutMs: number,
    private readonly plugin: string
  ) {}

  private clientFor (conn: ConnectionInfo, connect?: IConnectPacket): AedesClient {
    let client = this.clients.get(conn)
    if (client === undefined) {
      client = newClient(conn, connect)
      this.clients.set(conn, client)
    }
    return client
  }

  private failed (conn: ConnectionInfo, hook: string, error: Error): HookResult {
    conn.log.warn({ plugin: this.plugin, hook, err: error.message }, 'aedes hook failed')
    return { action: 'reject', code: 'GUARD_ERR_PLUGIN', reason: `${hook} failed` }
  }

  private denied (conn: ConnectionInfo, hook: string, code: ErrorCode, detail: Record<string, unknown>): HookResult {
    // Never the password, never the hook's error text (it may quote credentials).
    conn.log.info({ plugin: this.plugin, hook, code, ...detail }, 'denied by aedes hook')
    return { action: 'reject', code, reason: `refused by ${hook}` }
  }

  async connect (conn: ConnectionInfo, packet: IConnectPacket): Promise<HookResult> {
    const client = this.clientFor(conn, packet)
    const fn = this.fns.authenticate
    if (fn !== undefined) {
      const s = await callHook<unknown>('authenticate', this.timeoutMs, styleOf(fn, 3),
        (cb) => fn(client, packet.username, packet.password, cb))
      if (s.kind === 'failed') return this.failed(conn, 'authenticate', s.error)
      if (s.kind === 'denied') return this.denied(conn, 'authenticate', refusalCode(s.error), {})
      // aedes admits on any truthy `successful`.
      if (!s.value) return this.denied(conn, 'authenticate', 'GUARD_ERR_NOT_AUTHORIZED', {})
      // aedes has no groups; plugins after this one still learn who was admitted.
      conn.identity = { username: packet.username, groups: [], source: 'aedes-hooks' }
    }
    return await this.will(conn, client, packet)
  }

  /**
   * aedes runs authorizePublish on the will when it publishes it, and drops a denied will. The
   * broker publishes it here, so it is judged at CONNECT: denied → the will is removed from the
   * CONNECT (the client still connects, as with aedes); changed → the changed will is sent.
   */
  private async will (conn: ConnectionInfo, client: AedesClient, packet: IConnectPacket): Promise<HookResult> {
    const fn = this.fns.authorizePublish
    const will = packet.will
    if (fn === undefined || will === undefined || will === null) return undefined
    const original: IPublishPacket = { cmd: 'publish', topic: will.topic, payload: will.payload, qos: will.qos ?? 0, retain: will.retain ?? false, dup: false }
    if (will.properties !== undefined) original.properties = will.properties
    const copy = { ...original }
    const s = await callHook<unknown>('authorizePublish', this.timeoutMs, styleOf(fn, 2), (cb) => fn(client, copy, cb))
    if (s.kind === 'failed') return this.failed(conn, 'authorizePublish', s.error)
    if (s.kind === 'denied') {
      conn.log.info({ plugin: this.plugin, hook: 'authorizePublish', topic: will.topic }, 'will denied by aedes hook; removed')
      const { will: _removed, ...rest } = packet
      return { action: 'continue', packet: rest }
    }
    if (!publishChanged(original, copy)) return undefined
    return { action: 'continue', packet: { ...packet, will: { ...will, topic: copy.topic, payload: copy.payload, retain: copy.retain } } }
  }

  publish (conn: ConnectionInfo, packet: IPublishPacket): HookResult | Promise<HookResult> {
    const fn = this.fns.authorizePublish as NonNullable<AedesFunctions['authorizePublish']>
    const copy = { ...packet }
    const s = callHook<unknown>('authorizePublish', this.timeoutMs, styleOf(fn, 2), (cb) => fn(this.clientFor(conn), copy, cb))
    return andThen(s, (r) => {
      if (r.kind === 'failed') return this.failed(conn, 'authorizePublish', r.error)
      if (r.kind === 'denied') return this.denied(conn, 'authorizePublish', 'GUARD_ERR_NOT_AUTHORIZED', { topic: packet.topic, qos: packet.qos })
      return publishChanged(packet, copy) ? { action: 'continue', packet: withChanges(packet, copy) } : undefined
    })
  }

  async subscribe (conn: ConnectionInfo, packet: ISubscribePacket): Promise<HookResult> {
    const fn = this.fns.authorizeSubscribe as NonNullable<AedesFunctions['authorizeSubscribe']>
    const client = this.clientFor(conn)
    const style = styleOf(fn, 2)
    // aedes asks for every filter of one SUBSCRIBE in parallel.
    const settled = await Promise.all(packet.subscriptions.map(async (sub) =>
      await callHook<unknown>('authorizeSubscribe', this.timeoutMs, style, (cb) => fn(client, { ...sub }, cb))))
    const failed = settled.find((s): s is Extract<Settled<unknown>, { kind: 'failed' }> => s.kind === 'failed')
    if (failed !== undefined) return this.failed(conn, 'authorizeSubscribe', failed.error)
    const errored = settled.findIndex((s) => s.kind === 'denied')
    if (errored >= 0) {
      // aedes closes a client whose authorizeSubscribe answered with an error.
      this.denied(conn, 'authorizeSubscribe', 'GUARD_ERR_NOT_AUTHORIZED', { filter: packet.subscriptions[errored]?.topic, closing: true })
      conn.close('GUARD_ERR_NOT_AUTHORIZED', 'authorizeSubscribe answered with an error')
      return { action: 'drop', reason: 'authorizeSubscribe answered with an error' }
    }
    const decisions: FilterDecision[] = settled.map((s, i) =>
      decisionFrom(packet.subscriptions[i] as ISubscription, s.kind === 'value' ? s.value : null))
    const denied = deniedFilters(packet, decisions)
    if (denied.count > 0) {
      // One line per SUBSCRIBE, however many filters it denies: a client cannot multiply lines.
      this.denied(conn, 'authorizeSubscribe', 'GUARD_ERR_NOT_AUTHORIZED', { filterCount: decisions.length, deniedCount: denied.count, denied: denied.examples })
    }
    return this.subacks.verdict(conn, packet, decisions)
  }

  forward (conn: ConnectionInfo, packet: IPublishPacket): HookResult | Promise<HookResult> {
    const fn = this.fns.authorizeForward as NonNullable<AedesFunctions['authorizeForward']>
    const copy = { ...packet }
    const s = callHook<unknown>('authorizeForward', this.timeoutMs, 'value', () => fn(this.clientFor(conn), copy))
    return andThen(s, (r) => {
      if (r.kind === 'failed') return this.failed(conn, 'authorizeForward', r.error)
      const answer = r.kind === 'value' ? r.value : undefined
      if (answer === null || answer === undefined || typeof answer !== 'object') {
        return this.denied(conn, 'authorizeForward', 'GUARD_ERR_NOT_AUTHORIZED', { topic: packet.topic })
      }
      const answered = answer as IPublishPacket
      return publishChanged(packet, answered) ? { action: 'continue', packet: withChanges(packet, answered) } : undefined
    })
  }
}

/** Changed by the hook: topic, payload (a new value; bytes are compared), retain, properties. */
function publishChanged (original: IPublishPacket, answered: IPublishPacket): boolean {
  if (answered.topic !== original.topic || answered.retain !== original.retain || answered.properties !== original.properties) return true
  if (answered.payload === original.payload) return false
  return !Buffer.from(answered.payload).equals(Buffer.from(original.payload))
}

/** QoS, packet ID and dup stay the original's: the acknowledgement flow must not change. */
function withChanges (original: IPublishPacket, answered: IPublishPacket): Packet {
  const packet: IPublishPacket = { ...original, topic: answered.topic, payload: answered.payload, retain: answered.retain }
  if (answered.properties !== undefined) packet.properties = answered.properties
  else delete packet.properties
  return packet
}
