// The connect phase of a connection: awaiting CONNECT → admitting (plugins' connect hooks) →
// dialing (upstream CONNECT, waiting for CONNACK; client packets queue, bounded) → relaying.
// Runs once per connection, before the relay (connection.ts) takes over; the base
// (connection-core.ts) holds the state and the closing.

import type { Duplex } from 'node:stream'
import type { IConnackPacket, IConnectPacket } from 'mqtt-packet'
import { Codec, FRAME_TYPE, frameType } from '../wire/codec.js'
import { Framer } from '../wire/framer.js'
import { isGuardError, type ErrorCode } from '../errors.js'
import { Lane } from './lane.js'
import { TokenBucket } from './limits.js'
import { TopicAliases } from '../wire/topic-alias.js'
import { connackFor } from './answers.js'
import type { Outcome } from '../plugin/host.js'
import type { Direction } from '../plugin/api.js'
import { peekProtocolLevel, UNSUPPORTED_PROTOCOL_CONNACK } from '../wire/connect-peek.js'
import { ConnectionCore, receivedVerdict } from './connection-core.js'
import { SessionRecord } from './session-record.js'

export abstract class Admission extends ConnectionCore {
  /** failover: rehome: the CONNECT as the broker got it, to send another broker. */
  protected connectSent: { packet: IConnectPacket, bytes: Buffer } | undefined
  /** failover: rehome: the session as sent both ways, from CONNACK on. */
  protected record: SessionRecord | null = null

  // The relay, in connection.ts.
  protected abstract relay (direction: Direction, frame: Buffer, type: number): void | Promise<void>
  protected abstract fromBroker (frame: Buffer): void | Promise<void>
  protected abstract observe (direction: Direction, outcome: Outcome, size: number): void

  protected onConnect (frame: Buffer, type: number): void | Promise<void> {
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

  protected refuseConnect (code: ErrorCode, reason: string, serverReference?: string): void {
    const connack = connackFor(this.protocolVersion, code, reason, serverReference)
    this.deps.metrics.refusals.inc({ code, reason_code: String(connack.reasonCode ?? connack.returnCode ?? '') })
    this.toClient((this.codec as Codec).encode(connack), true)
    this.close(code, reason)
  }

  protected queueEarly (frame: Buffer, type: number): void {
    // Enhanced authentication (MQTT 5 AUTH) happens before CONNACK and must flow [MQTT-4.12].
    if (type === FRAME_TYPE.auth && this.sides.broker !== null) return this.toBroker(frame)
    if (this.early.length >= this.deps.limits.maxQueuedPackets) {
      return this.close('GUARD_ERR_QUEUE_FULL', `more than ${this.deps.limits.maxQueuedPackets} packets before CONNACK`)
    }
    this.early.push(frame)
  }

  private dial (bytes: Buffer, connect: IConnectPacket): void {
    this.state = 'dialing'
    // Several brokers: kept to send another broker (one that dies during CONNECT, a re-home).
    if (this.deps.upstream.brokerOf !== undefined) this.connectSent = { packet: connect, bytes }
    this.startTimer(this.deps.limits.connectTimeoutMs, () => {
      const reason = 'broker did not answer CONNECT within connectTimeoutMs'
      if (this.sides.broker !== null) this.deps.upstream.connacked?.(this, 'timeout')
      if (this.state === 'dialing') this.refuseConnect('GUARD_ERR_CONNACK_TIMEOUT', reason)
      else this.close('GUARD_ERR_CONNACK_TIMEOUT', reason)
    })
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
      this.refuseConnect(isGuardError(err) ? err.code : 'GUARD_ERR_UPSTREAM_UNAVAILABLE', reason, isGuardError(err) ? err.serverReference : undefined)
    })
  }

  protected attachBroker (socket: Duplex): void {
    this.broker = this.deps.upstream.brokerOf?.(this)
    const valve = this.sides.attachBroker(socket)
    // After a move (failover: rehome), what the old broker's lane still holds is dropped.
    const lane: Lane = new Lane((f) => lane === this.outLane ? this.fromBroker(f) : undefined, (e) => { this.failed(e) }, valve, this.deps.limits.maxQueuedPackets)
    this.outLane = lane
    // The broker is trusted with large packets up to the protocol maximum; the client's own
    // CONNECT maximumPacketSize is the broker's business [MQTT-3.1.2-24].
    const framer = new Framer(268_435_460, (frame) => {
      this.sides.keepBrokerChunk() // the frame may wait in the lane, or a plugin keep it
      lane.push(frame)
    }, (buf, start, end) => this.plainFromBroker(lane, buf, start, end))
    this.sides.read('broker', framer, (e) => { this.failed(e) })
    socket.on('end', () => { this.brokerGone(lane) })
    socket.on('close', () => { this.brokerGone(lane) })
    // A GuardError here comes from the embedded broker's version bridge judging the client's
    // packet: it is the client's fault and gets the client the matching reason code.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (lane !== this.outLane || this.brokerLost(lane)) return
      if (isGuardError(err)) this.close(err.code, err.message)
      else this.close('broker-error', err.code ?? err.message)
    })
  }

  /** The broker's first packets: MQTT 5 AUTH, then its CONNACK. */
  protected beforeConnack (frame: Buffer, type: number): void | Promise<void> {
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
    this.deps.upstream.connacked?.(this, code)
    const announced = code === 0 ? this.announceLimits(packet) : packet
    if (code === 0 && this.deps.upstream.rehomes === true) this.record = new SessionRecord(this.codec as Codec, this.deps.limits.maxQueuedPackets)
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
    if (this.deps.log.isLevelEnabled('info')) this.log.info({ protocolVersion: this.protocolVersion, sessionPresent: packet.sessionPresent, broker: this.broker }, 'connection opened')
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
    // failover: rehome cannot carry a client's topic aliases to another broker: none are allowed.
    const aliases = this.deps.upstream.rehomes === true && (connack.properties?.topicAliasMaximum ?? 0) > 0
    const limit = this.deps.limits.maxPacketSize
    const brokers = connack.properties?.maximumPacketSize
    if (!aliases && brokers !== undefined && brokers <= limit) return connack
    const properties = { ...connack.properties, ...(brokers === undefined || brokers > limit ? { maximumPacketSize: limit } : {}) }
    if (aliases) delete properties.topicAliasMaximum
    return { ...connack, properties }
  }

  private setUpAliases (connack: IConnackPacket): void {
    if (this.protocolVersion !== 5) return
    const toBroker = connack.properties?.topicAliasMaximum ?? 0
    if (toBroker > 0) this.inAliases = new TopicAliases(toBroker)
    // What the client allows the broker was in its CONNECT; 0 means none [MQTT-3.1.2-27].
    this.outAliases = new TopicAliases(0xffff)
  }
}
