// One client connection and its own upstream connection to the broker.
// States: awaiting-connect → admitting (plugins' connect hooks) → dialing (upstream CONNECT,
// waiting for CONNACK; client packets queue, bounded) → relaying → closed.
// Each direction is a Lane: frames run through the plugin chain in order, and are forwarded as
// their original bytes unless a plugin changed them.

import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { IConnackPacket, IConnectPacket, Packet } from 'mqtt-packet'
import { Codec, FRAME_TYPE, fixedHeaderLength, frameType, type ProtocolVersion } from '../wire/codec.js'
import { Framer } from '../wire/framer.js'
import { isGuardError, type ErrorCode } from '../errors.js'
import { Lane } from './lane.js'
import { TokenBucket } from './limits.js'
import { TopicAliases } from '../wire/topic-alias.js'
import { connackFor, reasonFor, rejectionFor } from './answers.js'
import type { PluginHost, Outcome } from '../plugin/host.js'
import type { CloseInfo, ConnectionInfo, Direction, PacketTap, ReceivedVerdict } from '../plugin/api.js'
import type { Upstream } from '../upstream/upstream.js'
import { peekProtocolLevel, UNSUPPORTED_PROTOCOL_CONNACK } from '../wire/connect-peek.js'
import { checkClientFrame } from '../wire/header-check.js'
import { Sides, CLOSE_GRACE_MS } from './sides.js'
import type { GuardMetrics } from '../observe/metrics.js'
import { Telemetry } from '../observe/telemetry.js'
import type { ConnectionView } from '../views.js'
import { ConnectionLog, type Who } from './connection-log.js'
import type { Peer } from './listeners.js'

let connections = 0

/** DISCONNECT with reason 0x00 in both versions: the session ends and the will is discarded. */
const NORMAL_DISCONNECT = Buffer.from([0xe0, 0x00])
const RECEIVED: Record<Outcome['verdict']['action'], ReceivedVerdict> = { continue: 'forwarded', drop: 'dropped', answer: 'answered', reject: 'refused' }

function receivedVerdict (outcome: Outcome): ReceivedVerdict {
  return RECEIVED[outcome.verdict.action]
}

/** Unique per process, cheap: base-36 counter. */
function nextConnectionId (): string {
  return (++connections).toString(36)
}

export type ConnectionState = 'awaiting-connect' | 'admitting' | 'dialing' | 'relaying' | 'closed'

export interface ConnectionDeps {
  readonly host: PluginHost
  readonly upstream: Upstream
  readonly limits: { maxPacketSize: number, connectTimeoutMs: number, maxQueuedPackets: number, maxPublishesPerSecond: number }
  readonly log: Logger
  readonly metrics: GuardMetrics
  readonly listener: string
  readonly onClosed: (conn: Connection, info: CloseInfo) => void
  /** Set when the proxy must refuse this connection once it has read its CONNECT. */
  readonly refuse?: ErrorCode | undefined
  /** Told of each client PUBLISH a plugin stopped (for `doctor`). */
  readonly onRefusedPublish?: ((conn: Connection, topic: string, plugin: string | undefined) => void) | undefined
}


export class Connection implements ConnectionInfo {
  readonly id = nextConnectionId()
  readonly openedAt = Date.now()
  readonly address: string
  readonly port: number
  readonly listener: string
  readonly certificate: Peer['certificate']
  clientId = ''
  private user: string | undefined
  /** From CONNECT: its keepalive, and whether the session outlives the connection. */
  keepalive = 0
  persistentSession = false
  /** The CONNECT was read: clientId, username and keepalive are known. */
  identified = false
  /** A successful CONNACK reached the client. */
  accepted = false
  protocolVersion: ProtocolVersion = 4
  private readonly logs: ConnectionLog
  state: ConnectionState = 'awaiting-connect'
  private readonly sides: Sides
  /** Counts, sampled round trips and subscriptions, for /metrics and /connections. */
  readonly telemetry: Telemetry
  // One decoder per protocol version, shared: every decode is one whole frame, synchronously.
  private codec: Codec | null = null
  private readonly inLane: Lane
  private outLane: Lane | null = null
  private early: Buffer[] = []
  private timer: NodeJS.Timeout | null = null
  private connackSent = false
  private clientSentDisconnect = false
  /** The CONNECT the broker got carries a will. */
  private hasWill = false
  private inAliases: TopicAliases | null = null
  private outAliases: TopicAliases | null = null
  private drainTimer: NodeJS.Timeout | null = null
  private clientEnded = false
  private brokerEnded = false
  private publishRate: TokenBucket | null = null
  /** Set while a plugin traces this connection; undefined otherwise (one check per packet). */
  private tap: PacketTap | undefined

  /** The connection's logger, bound to who it is, with its log budget (connection-log.ts). */
  get log (): Logger {
    return this.logs.log
  }

  private who (): Who {
    if (!this.identified) return { conn: this.id, address: this.address }
    return { conn: this.id, address: this.address, clientId: this.clientId, username: this.user }
  }

  /** From CONNECT; a plugin may set it (auth: a certificate's user name), and the log follows. */
  get username (): string | undefined {
    return this.user
  }

  set username (name: string | undefined) {
    if (name === this.user) return
    this.user = name
    this.logs.rebind()
  }

  constructor (client: Duplex, remote: Peer, private readonly deps: ConnectionDeps) {
    this.address = remote.address
    this.port = remote.port
    this.certificate = remote.certificate
    this.listener = deps.listener
    this.logs = new ConnectionLog(deps.log, () => this.who())
    this.sides = new Sides(client)
    this.telemetry = new Telemetry(deps.metrics)
    this.inLane = new Lane((f) => this.fromClient(f), (e) => { this.failed(e) }, this.sides.clientValve, deps.limits.maxQueuedPackets)
    this.sides.read('client', new Framer(deps.limits.maxPacketSize, (frame) => { this.inLane.push(frame) }), (e) => { this.failed(e) })
    client.on('end', () => { this.clientGone() })
    client.on('close', () => { this.clientGone() })
    client.on('error', (err: NodeJS.ErrnoException) => { this.close('client-error', err.code ?? err.message) })
    this.startTimer(deps.limits.connectTimeoutMs, 'GUARD_ERR_CONNECT_TIMEOUT', 'no CONNECT within connectTimeoutMs')
    if (deps.log.isLevelEnabled('debug')) this.log.debug({ port: this.port, listener: this.listener }, 'connection opened')
  }

  // ---- client → broker -------------------------------------------------------------------

  private fromClient (frame: Buffer): void | Promise<void> {
    const type = frameType(frame)
    this.telemetry.seen(0, type, frame, this.codec)
    switch (this.state) {
      case 'awaiting-connect': return this.onConnect(frame, type)
      case 'admitting':
      case 'dialing': return this.queueEarly(frame, type)
      case 'relaying':
        if (type === FRAME_TYPE.publish && this.publishRate !== null && this.publishRate.take() > 0) return this.throttled(this.publishRate, frame, type)
        return this.relay('in', frame, type)
      case 'closed': return undefined
    }
  }

  /**
   * limits.maxPublishesPerSecond: this PUBLISH waits for its token. The lane keeps order and
   * queues what follows; when its queue is full, reading from the client pauses.
   */
  private async throttled (bucket: TokenBucket, frame: Buffer, type: number): Promise<void> {
    this.deps.metrics.throttled.inc()
    for (let wait = bucket.take(); wait > 0; wait = bucket.take()) {
      await new Promise((resolve) => { setTimeout(resolve, wait) })
      if (this.state === 'closed') return
    }
    await this.relay('in', frame, type)
  }

  private onConnect (frame: Buffer, type: number): void | Promise<void> {
    if (type !== FRAME_TYPE.connect) {
      // [MQTT-3.1.0-1]: the first packet from the client must be CONNECT.
      return this.close('GUARD_ERR_PROTOCOL', `first packet was type ${type}, not CONNECT`)
    }
    const level = peekProtocolLevel(frame)
    if (level === undefined) return this.close('GUARD_ERR_MALFORMED', 'CONNECT ends before its protocol level')
    if (level !== 3 && level !== 4 && level !== 5) {
      // [MQTT-3.1.2-2]: answer an unsupported level with CONNACK 0x01, then close.
      this.toClient(UNSUPPORTED_PROTOCOL_CONNACK)
      return this.close('GUARD_ERR_UNSUPPORTED_PROTOCOL', `protocol level ${String(level)}`)
    }
    this.protocolVersion = level
    this.codec = Codec.shared(level)
    const connects = this.deps.metrics.connects
    connects.set(this.listener, (connects.get(this.listener) ?? 0) + 1)
    const rate = this.deps.limits.maxPublishesPerSecond
    if (rate > 0) this.publishRate = new TokenBucket(rate)
    const packet = this.codec.decode(frame) as IConnectPacket
    this.clientId = packet.clientId
    this.username = packet.username
    this.keepalive = packet.keepalive ?? 0
    this.identified = true
    this.persistentSession = level === 5 ? (packet.properties?.sessionExpiryInterval ?? 0) > 0 : !packet.clean
    this.tap = this.deps.host.tapFor(this)
    this.clearTimer()
    this.state = 'admitting'
    this.logs.rebind() // the next line binds the client ID and user name
    if (this.deps.refuse !== undefined) return this.refuseConnect(this.deps.refuse, 'refused by the proxy')
    const outcome = this.deps.host.run('in', this, packet, type)
    if (outcome instanceof Promise) return outcome.then((o) => { this.admitted(frame, o) })
    this.admitted(frame, outcome)
  }

  private admitted (frame: Buffer, outcome: Outcome): void {
    if (this.state !== 'admitting') return
    this.observe('in', outcome, frame.length)
    this.tap?.received('client', frame, receivedVerdict(outcome), outcome.plugin, outcome.packet)
    const { verdict } = outcome
    if (verdict.action === 'continue') {
      const bytes = outcome.changed ? (this.codec as Codec).encode(outcome.packet) : frame
      this.hasWill = (outcome.packet as IConnectPacket).will != null
      this.dial(bytes, outcome.packet as IConnectPacket)
    } else if (verdict.action === 'reject') {
      this.refuseConnect(verdict.code, verdict.reason ?? `refused by ${outcome.plugin ?? 'a plugin'}`)
    } else {
      if (verdict.action === 'answer') this.answer('client', verdict.packets)
      this.close('GUARD_ERR_NOT_AUTHORIZED', `connect ${verdict.action === 'answer' ? 'answered' : 'dropped'} by ${outcome.plugin ?? 'a plugin'}`)
    }
  }

  private refuseConnect (code: ErrorCode, reason: string): void {
    const connack = connackFor(this.protocolVersion, code, reason)
    this.deps.metrics.refusals.inc({ code, reason_code: String(connack.reasonCode ?? connack.returnCode ?? '') })
    this.toClient((this.codec as Codec).encode(connack), true)
    this.close(code, reason)
  }

  private queueEarly (frame: Buffer, type: number): void {
    // Enhanced authentication (MQTT 5 AUTH) happens before CONNACK and must flow [MQTT-4.12].
    if (type === FRAME_TYPE.auth && this.sides.broker !== null) return this.toBroker(frame)
    if (this.early.length >= this.deps.limits.maxQueuedPackets) {
      return this.close('GUARD_ERR_QUEUE_FULL', `more than ${this.deps.limits.maxQueuedPackets} packets before CONNACK`)
    }
    this.early.push(frame)
  }

  private dial (bytes: Buffer, connect: IConnectPacket): void {
    this.state = 'dialing'
    this.startTimer(this.deps.limits.connectTimeoutMs, 'GUARD_ERR_CONNACK_TIMEOUT', 'broker did not answer CONNECT within connectTimeoutMs')
    const dialStart = performance.now()
    this.deps.upstream.dial(connect, this).then((socket) => {
      this.deps.metrics.dial.observe((performance.now() - dialStart) / 1000)
      if (this.state !== 'dialing') {
        socket.destroy()
        return
      }
      this.attachBroker(socket)
      this.toBroker(bytes)
      const auth = this.early.filter((f) => frameType(f) === FRAME_TYPE.auth)
      if (auth.length > 0) {
        this.early = this.early.filter((f) => frameType(f) !== FRAME_TYPE.auth)
        for (const f of auth) this.toBroker(f)
      }
    }, (err: unknown) => {
      if (this.state !== 'dialing') return
      const reason = err instanceof Error ? err.message : String(err)
      this.refuseConnect(isGuardError(err) ? err.code : 'GUARD_ERR_UPSTREAM_UNAVAILABLE', reason)
    })
  }

  private attachBroker (socket: Duplex): void {
    const valve = this.sides.attachBroker(socket)
    const lane = new Lane((f) => this.fromBroker(f), (e) => { this.failed(e) }, valve, this.deps.limits.maxQueuedPackets)
    this.outLane = lane
    // The broker is trusted with large packets up to the protocol maximum; the client's own
    // CONNECT maximumPacketSize is the broker's business [MQTT-3.1.2-24].
    this.sides.read('broker', new Framer(268_435_460, (frame) => { lane.push(frame) }), (e) => { this.failed(e) })
    socket.on('end', () => { this.brokerGone(lane) })
    socket.on('close', () => { this.brokerGone(lane) })
    // A GuardError here comes from the embedded broker's version bridge judging the client's
    // packet: it is the client's fault and gets the client the matching reason code.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (isGuardError(err)) this.close(err.code, err.message)
      else this.close('broker-error', err.code ?? err.message)
    })
  }

  // ---- broker → client -------------------------------------------------------------------

  private fromBroker (frame: Buffer): void | Promise<void> {
    const type = frameType(frame)
    this.telemetry.seen(1, type, frame, this.codec)
    if (this.state === 'relaying') return this.relay('out', frame, type)
    if (this.state !== 'dialing') return undefined
    if (type === FRAME_TYPE.auth) return this.relay('out', frame, type)
    if (type !== FRAME_TYPE.connack) {
      return this.close('GUARD_ERR_PROTOCOL', `broker sent packet type ${type} before CONNACK`)
    }
    const packet = (this.codec as Codec).decode(frame) as IConnackPacket
    const outcome = this.deps.host.run('out', this, packet, type)
    if (outcome instanceof Promise) return outcome.then((o) => { this.onConnack(frame, o) })
    this.onConnack(frame, outcome)
  }

  private onConnack (frame: Buffer, outcome: Outcome): void {
    if (this.state !== 'dialing') return
    this.clearTimer()
    this.observe('out', outcome, frame.length)
    this.tap?.received('broker', frame, receivedVerdict(outcome), outcome.plugin, outcome.packet)
    if (outcome.verdict.action === 'reject') return this.refuseConnect(outcome.verdict.code, outcome.verdict.reason ?? 'refused')
    let packet = outcome.packet as IConnackPacket
    const code = this.protocolVersion === 5 ? packet.reasonCode ?? 0 : packet.returnCode ?? 0
    const announced = code === 0 ? this.announceLimits(packet) : packet
    const changed = outcome.changed || announced !== packet
    packet = announced
    this.toClient(changed ? (this.codec as Codec).encode(packet) : frame)
    this.connackSent = true
    if (code !== 0) {
      // The broker's own refusal is relayed unchanged; it closes the connection itself.
      this.deps.metrics.refusals.inc({ code: 'broker', reason_code: String(code) })
      return this.close('broker-refused', `CONNACK code ${code}`)
    }
    const assigned = packet.properties?.assignedClientIdentifier
    if (assigned !== undefined) {
      this.clientId = assigned
      this.logs.rebind()
    }
    this.setUpAliases(packet)
    this.state = 'relaying'
    this.accepted = true
    if (this.deps.log.isLevelEnabled('info')) this.log.info({ protocolVersion: this.protocolVersion, sessionPresent: packet.sessionPresent }, 'connection opened')
    const early = this.early
    this.early = []
    for (const f of early) this.inLane.push(f)
    // A client that sent its packets and left before CONNACK: they are on their way now.
    if (this.clientEnded) {
      this.clientEnded = false
      this.clientGone()
    }
  }

  /**
   * MQTT 5 clients learn the proxy's packet size limit from CONNACK when it is stricter than
   * the broker's [MQTT-3.2.2-15], so they can avoid being disconnected with 0x95.
   */
  private announceLimits (connack: IConnackPacket): IConnackPacket {
    if (this.protocolVersion !== 5) return connack
    const limit = this.deps.limits.maxPacketSize
    const brokers = connack.properties?.maximumPacketSize
    if (brokers !== undefined && brokers <= limit) return connack
    return { ...connack, properties: { ...connack.properties, maximumPacketSize: limit } }
  }

  private setUpAliases (connack: IConnackPacket): void {
    if (this.protocolVersion !== 5) return
    const toBroker = connack.properties?.topicAliasMaximum ?? 0
    if (toBroker > 0) this.inAliases = new TopicAliases(toBroker)
    // What the client allows the broker was in its CONNECT; 0 means none [MQTT-3.1.2-27].
    this.outAliases = new TopicAliases(0xffff)
  }

  // ---- both directions -------------------------------------------------------------------

  private relay (direction: Direction, frame: Buffer, type: number): void | Promise<void> {
    if (direction === 'in') {
      checkClientFrame(frame, this.protocolVersion === 5)
      if (type === FRAME_TYPE.connect) return this.close('GUARD_ERR_PROTOCOL', 'second CONNECT') // [MQTT-3.1.0-2]
      if (type === FRAME_TYPE.disconnect) {
        this.clientSentDisconnect = true
        if (this.hasWill) frame = this.disconnectWithWill(frame)
      }
    }
    if (!this.deps.host.wants(direction, type)) {
      this.tap?.received(direction === 'in' ? 'client' : 'broker', frame, 'forwarded', undefined, undefined)
      return this.forward(direction, frame)
    }
    const packet = (this.codec as Codec).decode(frame)
    if (packet.cmd === 'publish') (direction === 'in' ? this.inAliases : this.outAliases)?.resolve(packet)
    const outcome = this.deps.host.run(direction, this, packet, type)
    if (outcome instanceof Promise) return outcome.then((o) => { this.decided(direction, frame, o) })
    this.decided(direction, frame, outcome)
  }

  private decided (direction: Direction, frame: Buffer, outcome: Outcome): void {
    if (this.state === 'closed') return
    this.observe(direction, outcome, frame.length)
    this.tap?.received(direction === 'in' ? 'client' : 'broker', frame, receivedVerdict(outcome), outcome.plugin, outcome.packet)
    const { verdict, packet } = outcome
    if (verdict.action !== 'continue' && packet.cmd === 'publish') {
      (direction === 'in' ? this.inAliases : this.outAliases)?.withheld(packet)
      if (direction === 'in') this.deps.onRefusedPublish?.(this, packet.topic, outcome.plugin)
    }
    switch (verdict.action) {
      case 'continue': {
        const aliases = direction === 'in' ? this.inAliases : this.outAliases
        const reencode = outcome.changed || (packet.cmd === 'publish' && aliases !== null && aliases.needsTopic(packet))
        if (!reencode) return this.forward(direction, frame)
        const out = packet.cmd === 'publish' && aliases !== null ? aliases.prepare(packet) : packet
        return this.forward(direction, (this.codec as Codec).encode(out))
      }
      case 'drop': return undefined
      case 'answer': return this.answer(direction === 'in' ? 'client' : 'broker', verdict.packets)
      case 'reject': return this.reject(direction, packet, verdict.code, verdict.reason ?? `refused by ${outcome.plugin ?? 'a plugin'}`)
    }
  }

  private reject (direction: Direction, packet: Packet, code: ErrorCode, reason: string): void {
    const { answer, close } = rejectionFor(direction, this.protocolVersion, packet, code)
    this.answer(direction === 'in' ? 'client' : 'broker', answer)
    this.log.info({ direction, cmd: packet.cmd, code, reason }, 'packet refused')
    if (close) this.close(code, reason)
  }

  private forward (direction: Direction, bytes: Buffer): void {
    if (direction === 'in') this.toBroker(bytes)
    else this.toClient(bytes)
  }

  /** `made`: the proxy made this packet (an answer, a refusal), for traces. */
  private toBroker (bytes: Buffer, made = false): void {
    this.tap?.sent('broker', bytes, made)
    this.sides.toBroker(bytes)
  }

  private toClient (bytes: Buffer, made = false): void {
    this.telemetry.toClient(bytes, this.codec)
    this.tap?.sent('client', bytes, made)
    this.sides.toClient(bytes)
  }

  /** Trace started or stopped: ask the plugins again whether they tap this connection. */
  retap (): void {
    if (this.state !== 'awaiting-connect' && this.state !== 'closed') this.tap = this.deps.host.tapFor(this)
  }

  /** Sends proxy-made packets back towards `to` (the side a packet came from). */
  private answer (to: 'client' | 'broker', packets: Packet[]): void {
    for (const p of packets) {
      const bytes = (this.codec as Codec).encode(p)
      if (to === 'client') this.telemetry.answered(p)
      if (to === 'client') {
        this.tap?.sent('client', bytes, true)
        this.sides.toClient(bytes)
      } else {
        this.toBroker(bytes, true)
      }
    }
  }

  private observe (direction: Direction, outcome: Outcome, size: number): void {
    if (outcome.verdict.action !== 'continue') this.deps.metrics.verdicts.inc({ plugin: outcome.plugin ?? 'unknown', action: outcome.verdict.action })
    if (!this.deps.host.observing) return
    this.deps.host.observe({ conn: this, direction, packet: outcome.packet, size, verdict: outcome.verdict.action, plugin: outcome.plugin })
  }

  /** What /connections shows. */
  view (): ConnectionView {
    return {
      id: this.id,
      clientId: this.clientId,
      username: this.username,
      address: this.address,
      port: this.port,
      protocolVersion: this.protocolVersion,
      listener: this.listener,
      since: new Date(this.openedAt).toISOString(),
      state: this.state,
      bytesIn: this.sides.bytesIn,
      bytesOut: this.sides.bytesOut,
      persistentSession: this.persistentSession,
      keepalive: this.keepalive,
      stalls: this.sides.clientStalls,
      stalledMs: this.sides.clientStalledMs(),
      queueFullHolds: this.sides.clientValve.queueFullHolds + (this.sides.brokerValve?.queueFullHolds ?? 0),
      subscriptions: [...this.telemetry.subscriptions].map(([filter, qos]) => ({ filter, qos }))
    }
  }

  // ---- closing ---------------------------------------------------------------------------

  /** The end of a drain: sockets that did not finish flushing in time are cut. */
  destroy (): void {
    this.close('GUARD_ERR_SHUTTING_DOWN', 'drain timeout')
    this.sides.destroy()
  }

  private startTimer (ms: number, code: ErrorCode, reason: string): void {
    this.clearTimer()
    this.timer = setTimeout(() => {
      this.timer = null
      if (code === 'GUARD_ERR_CONNACK_TIMEOUT' && this.state === 'dialing') this.refuseConnect(code, reason)
      else this.close(code, reason)
    }, ms)
  }

  private clearTimer (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }

  private failed (err: unknown): void {
    if (isGuardError(err)) this.close(err.code, err.message)
    else this.close('GUARD_ERR_PLUGIN', err instanceof Error ? err.message : String(err))
  }

  /**
   * Closes both sides; idempotent. The broker side is ended without DISCONNECT unless the
   * client sent one, so the broker publishes the will of a client that vanished [MQTT-3.1.2-8].
   */
  close (reason: string, detail?: string): void {
    if (this.state === 'closed') return
    const wasRelaying = this.state === 'relaying'
    const neverConnected = this.state === 'awaiting-connect'
    this.state = 'closed'
    this.clearTimer()
    if (this.drainTimer !== null) clearTimeout(this.drainTimer)
    const code = reason.startsWith('GUARD_ERR_') ? reason as ErrorCode : undefined
    // [MQTT-3.14.0-1]: the server sends DISCONNECT only after CONNACK, and only in MQTT 5.
    if (code !== undefined && this.protocolVersion === 5 && this.connackSent && this.codec !== null && !this.sides.client.destroyed) {
      const disconnect = { cmd: 'disconnect', reasonCode: reasonFor(code) } as const
      this.toClient(this.codec.encode(disconnect), true)
    }
    if (this.hasWill && this.connackSent && !this.clientSentDisconnect && this.willWithheld()) {
      this.toBroker(NORMAL_DISCONNECT, true) // the broker discards the will [MQTT-3.1.2-10]
    }
    this.sides.end()
    // A socket that closed before CONNECT (a health check, a port scan) is not news at info.
    const level = code !== undefined && wasRelaying ? 'warn' : code === undefined && neverConnected ? 'debug' : 'info'
    this.logs.flush()
    if (this.deps.log.isLevelEnabled(level)) this.log[level]({ reason, detail }, 'connection closed')
    this.deps.onClosed(this, { reason, detail, clientIdleMs: Date.now() - this.sides.clientDataAt })
  }

  /** True when a plugin no longer allows the will that the broker would now publish (logged). */
  private willWithheld (): boolean {
    const by = this.deps.host.willWithheldBy(this)
    if (by === undefined) return false
    this.log.info({ plugin: by }, 'will withheld: no longer allowed since CONNECT')
    return true
  }

  /** MQTT 5 DISCONNECT 0x04 asks the broker to publish the will: a normal one when it is withheld. */
  private disconnectWithWill (frame: Buffer): Buffer {
    const at = fixedHeaderLength(frame)
    if (this.protocolVersion !== 5 || frame[at] !== 0x04 || !this.willWithheld()) return frame
    const normal = Buffer.from(frame)
    normal[at] = 0x00
    return normal
  }

  /**
   * The client closed its side. What it sent before still goes to the broker in order (a hook
   * may be awaiting Redis for it): close once its lane is drained, or after a grace period.
   * Before CONNACK the early packets wait for the broker's answer, bounded by the CONNACK timer.
   */
  private clientGone (): void {
    if (this.clientEnded) return
    this.clientEnded = true
    this.closeWhenDrained(this.inLane, () => this.clientSentDisconnect ? 'client-disconnect' : 'client-closed')
  }

  private brokerGone (lane: Lane): void {
    if (this.brokerEnded) return
    this.brokerEnded = true
    // After the client's DISCONNECT the broker closes first, often before the client does:
    // the client ended it, and logs, flapping counts and doctor must say so.
    this.closeWhenDrained(lane, () => this.clientSentDisconnect ? 'client-disconnect' : 'broker-closed')
  }

  private closeWhenDrained (lane: Lane, reason: () => string): void {
    if (this.state === 'closed') return
    if (this.state === 'admitting' || (this.state === 'dialing' && lane === this.inLane)) return // see onConnack
    if (lane.idle) return this.close(reason())
    this.drainTimer ??= setTimeout(() => { this.close(reason(), 'plugins did not finish in time') }, CLOSE_GRACE_MS)
    lane.whenIdle(() => { this.close(reason()) })
  }
}
