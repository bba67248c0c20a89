// Lets MQTT 5 clients use the embedded aedes broker, which speaks only MQTT 3.1/3.1.1.
// The proxy writes the client's MQTT 5 bytes into the bridge and reads MQTT 5 bytes back;
// the bridge re-frames, translates (version-bridge-translate.ts) and talks 3.1.1 to aedes over
// `inner`. State is only what a translation needs to remember between a request and its
// answer: the assigned client ID, per-SUBSCRIBE local reason codes, per-UNSUBSCRIBE filter
// counts and QoS 2 messages discarded for the client's Maximum Packet Size.

import { randomUUID } from 'node:crypto'
import { Duplex } from 'node:stream'
import type {
  IDisconnectPacket, IPublishPacket, IPubrelPacket, ISubackPacket, ISubscribePacket,
  IUnsubackPacket, IUnsubscribePacket, Packet
} from 'mqtt-packet'
import { Codec } from '../wire/codec.js'
import { GuardError } from '../errors.js'
import { Framer, MAX_REMAINING_LENGTH } from '../wire/framer.js'
import {
  ackToV4, ackToV5, connackToV5, connectToV4, messageIdOf, publishWithoutProperties, subackToV5, subscribeToV4
} from './version-bridge-translate.js'

export interface VersionBridgeOptions {
  /** Client ID for a client that connects with an empty one. Default: `mg-<uuid>`. */
  assignClientId?: () => string
}

// Packet sizes are limited by the proxy in front of the bridge, not here: 1 type byte,
// 4 length bytes and the largest Remaining Length [MQTT-2.2.3].
const MAX_FRAME = MAX_REMAINING_LENGTH + 5

// MQTT 5 reason codes the bridge sends itself (MQTT 5 section 2.4).
const PROTOCOL_ERROR = 0x82
const BAD_AUTH_METHOD = 0x8c
const TOPIC_ALIAS_INVALID = 0x94

type WriteCallback = (error?: Error | null) => void

/**
 * Wraps `inner` (a stream whose other end is given to `aedes.handle`) into a duplex that
 * speaks MQTT 5. Closing: the bridge's writable end ends `inner`; destroying the bridge
 * destroys `inner` (aedes then publishes the will); `inner` ending or closing ends the bridge's
 * readable side after what aedes already sent is read (so a refusing CONNACK still arrives),
 * then the bridge destroys itself; an error on `inner` destroys the bridge with it.
 */
export function bridgeV5ToV4 (inner: Duplex, options: VersionBridgeOptions = {}): Duplex {
  return new VersionBridge(inner, options.assignClientId ?? (() => 'mg-' + randomUUID()))
}

class VersionBridge extends Duplex {
  private readonly v5 = Codec.shared(5)
  private readonly v4 = Codec.shared(4)
  private readonly clientFramer = new Framer(MAX_FRAME, (frame) => { this.fromClient(this.v5.decode(frame)) })
  private readonly brokerFramer = new Framer(MAX_FRAME, (frame) => { this.fromBroker(this.v4.decode(frame)) })
  private connectSeen = false
  // After DISCONNECT or a refusal: the client must send nothing more [MQTT-3.14.4-1], so its
  // further bytes are dropped instead of reaching aedes.
  private closing = false
  private readableDone = false
  private closeError: Error | undefined
  private innerPaused = false
  private pendingWrite: WriteCallback | null = null
  private assignedClientId: string | undefined
  private clientMaxPacketSize = Infinity
  private readonly subscribeLocal = new Map<number, Array<number | undefined>>()
  private readonly unsubscribeCounts = new Map<number, number>()
  private readonly discardedQos2 = new Set<number>()

  constructor (private readonly inner: Duplex, private readonly assignClientId: () => string) {
    super()
    inner.on('data', (chunk: Buffer) => { this.onInnerData(chunk) })
    inner.on('drain', () => { this.releaseWrite() })
    inner.on('end', () => { this.endReadable(undefined) })
    inner.on('close', () => {
      this.releaseWrite()
      this.endReadable(undefined)
    })
    inner.on('error', (err: Error) => { this.destroy(err) })
    // Once the client has read everything, the bridge is done: destroying rather than ending
    // the writable side means a late client write is dropped instead of raising an error.
    this.once('end', () => { this.destroy(this.closeError) })
  }

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: WriteCallback): void {
    if (this.closing) {
      callback()
      return
    }
    try {
      this.clientFramer.push(chunk)
    } catch (err) {
      callback(err as Error)
      return
    }
    // Backpressure from aedes: take no more client bytes until `inner` drains.
    if (this.inner.writableNeedDrain && !this.inner.destroyed) this.pendingWrite = callback
    else callback()
  }

  override _final (callback: WriteCallback): void {
    // The client's side ended (after DISCONNECT, or abruptly): aedes sees the same.
    if (!this.inner.destroyed && !this.inner.writableEnded) this.inner.end()
    callback()
  }

  override _read (): void {
    if (!this.innerPaused) return
    this.innerPaused = false
    this.inner.resume()
  }

  override _destroy (error: Error | null, callback: (error?: Error | null) => void): void {
    this.releaseWrite()
    // An abrupt close without DISCONNECT: aedes publishes the will [MQTT-3.1.2-8].
    if (!this.inner.destroyed) this.inner.destroy()
    callback(error)
  }

  private releaseWrite (): void {
    const callback = this.pendingWrite
    this.pendingWrite = null
    callback?.()
  }

  private onInnerData (chunk: Buffer): void {
    if (this.destroyed) return
    try {
      this.brokerFramer.push(chunk)
    } catch (err) {
      this.destroy(err as Error)
    }
  }

  private toBroker (packet: Packet): void {
    if (this.inner.destroyed || this.inner.writableEnded) return
    this.inner.write(this.v4.encode(packet))
  }

  private toClient (packet: Packet): void {
    this.pushToClient(this.v5.encode(packet))
  }

  private pushToClient (bytes: Buffer): void {
    if (this.readableDone || this.destroyed) return
    // Backpressure from the client: stop reading aedes until _read asks for more.
    if (!this.push(bytes) && !this.innerPaused) {
      this.innerPaused = true
      this.inner.pause()
    }
  }

  private endReadable (error: Error | undefined): void {
    if (this.readableDone || this.destroyed) return
    this.readableDone = true
    this.closeError = error
    this.push(null)
  }

  /** Answers the client with a last packet, closes aedes' side, then the bridge. */
  private finish (last: Packet, error: Error | undefined): void {
    this.toClient(last)
    this.closing = true
    this.endReadable(error)
    this.inner.destroy()
  }

  private protocolError (reasonCode: number, message: string): void {
    // [MQTT-4.13.1-1] a protocol error closes the connection, with DISCONNECT and a reason code
    // first. aedes sees an abrupt close and publishes the will, as a server must [MQTT-3.1.2-8].
    this.finish({ cmd: 'disconnect', reasonCode }, new GuardError('GUARD_ERR_PROTOCOL', message))
  }

  private fromClient (packet: Packet): void {
    if (!this.connectSeen) {
      this.onConnect(packet)
      return
    }
    switch (packet.cmd) {
      case 'publish': return this.onClientPublish(packet)
      case 'puback':
      case 'pubrec':
      case 'pubrel':
      case 'pubcomp': return this.toBroker(ackToV4(packet))
      case 'subscribe': return this.onSubscribe(packet)
      case 'unsubscribe': return this.onUnsubscribe(packet)
      case 'pingreq': return this.toBroker(packet)
      case 'disconnect': return this.onClientDisconnect(packet)
      // AUTH without an Authentication Method in CONNECT (MQTT 5 section 3.15; the bridge never
      // accepts one), a second CONNECT [MQTT-3.1.0-2], or a packet only a server sends.
      default: return this.protocolError(PROTOCOL_ERROR, `client sent ${packet.cmd} after CONNECT`)
    }
  }

  private onConnect (packet: Packet): void {
    // [MQTT-3.1.0-1] the first packet is CONNECT. Nothing was acknowledged, so no DISCONNECT.
    if (packet.cmd !== 'connect') throw new GuardError('GUARD_ERR_PROTOCOL', `first packet is ${packet.cmd}, not connect`)
    if (packet.protocolVersion !== 5) {
      throw new GuardError('GUARD_ERR_UNSUPPORTED_PROTOCOL', `bridge expects MQTT 5, got version ${packet.protocolVersion}`)
    }
    this.connectSeen = true
    // Enhanced authentication (MQTT 5 section 4.12) cannot be carried to a 3.1.1 broker: refuse
    // the method with 0x8C and close [MQTT-4.12.0-1].
    if (packet.properties?.authenticationMethod !== undefined) {
      this.finish({ cmd: 'connack', sessionPresent: false, reasonCode: BAD_AUTH_METHOD }, undefined)
      return
    }
    this.clientMaxPacketSize = packet.properties?.maximumPacketSize ?? Infinity
    const { connect, assignedClientId } = connectToV4(packet, this.assignClientId)
    this.assignedClientId = assignedClientId
    this.toBroker(connect)
  }

  private onClientPublish (packet: IPublishPacket): void {
    const alias = packet.properties?.topicAlias
    if (alias !== undefined) {
      // CONNACK left Topic Alias Maximum out (0), so no alias is allowed [MQTT-3.2.2-18]: 0x94
      // (Topic Alias invalid). 0 is never a valid alias, a plain protocol error [MQTT-3.3.2-8].
      this.protocolError(alias === 0 ? PROTOCOL_ERROR : TOPIC_ALIAS_INVALID, `topic alias ${alias} not allowed`)
      return
    }
    // Without an alias a PUBLISH needs its topic name [MQTT-3.3.2-1].
    if (packet.topic === '') {
      this.protocolError(PROTOCOL_ERROR, 'PUBLISH without topic name')
      return
    }
    this.toBroker(publishWithoutProperties(packet))
  }

  private onSubscribe (packet: ISubscribePacket): void {
    const messageId = messageIdOf(packet)
    const { forward, local } = subscribeToV4(packet)
    if (forward === null) {
      this.toClient(subackToV5(messageId, [], local))
      return
    }
    this.subscribeLocal.set(messageId, local)
    this.toBroker(forward)
  }

  private onUnsubscribe (packet: IUnsubscribePacket): void {
    const messageId = messageIdOf(packet)
    // A 3.1.1 UNSUBACK has no payload; MQTT 5 needs one reason code per filter [MQTT-3.11.3-1].
    this.unsubscribeCounts.set(messageId, packet.unsubscriptions.length)
    this.toBroker({ cmd: 'unsubscribe', messageId, unsubscriptions: packet.unsubscriptions })
  }

  private onClientDisconnect (packet: IDisconnectPacket): void {
    this.closing = true
    // Only 0x00 (normal) discards the will [MQTT-3.14.4-3]; 0x04 asks for it, and any error
    // code keeps it too [MQTT-3.1.2-8]. 3.1.1 cannot say "disconnect with will", so aedes
    // gets the abrupt close that makes it publish the will.
    if ((packet.reasonCode ?? 0) !== 0) {
      this.inner.destroy()
      return
    }
    this.toBroker({ cmd: 'disconnect' })
    this.inner.end()
  }

  private fromBroker (packet: Packet): void {
    switch (packet.cmd) {
      case 'connack': return this.toClient(connackToV5(packet, this.assignedClientId))
      case 'publish': return this.onBrokerPublish(packet)
      case 'puback':
      case 'pubrec':
      case 'pubcomp': return this.toClient(ackToV5(packet))
      case 'pubrel': return this.onBrokerPubrel(packet)
      case 'suback': return this.onSuback(packet)
      case 'unsuback': return this.onUnsuback(packet)
      case 'pingresp': return this.toClient(packet)
      default: throw new GuardError('GUARD_ERR_PROTOCOL', `broker sent ${packet.cmd}`)
    }
  }

  private onBrokerPublish (packet: IPublishPacket): void {
    const bytes = this.v5.encode(publishWithoutProperties(packet))
    if (bytes.length <= this.clientMaxPacketSize) {
      this.pushToClient(bytes)
      return
    }
    // [MQTT-3.1.2-25] a packet over the client's Maximum Packet Size is discarded and treated
    // as delivered: the bridge acknowledges it to aedes in the client's place.
    if (packet.qos === 0) return
    const messageId = messageIdOf(packet)
    if (packet.qos === 1) {
      this.toBroker({ cmd: 'puback', messageId })
      return
    }
    this.discardedQos2.add(messageId)
    this.toBroker({ cmd: 'pubrec', messageId })
  }

  private onBrokerPubrel (packet: IPubrelPacket): void {
    const messageId = messageIdOf(packet)
    // The client never saw this QoS 2 message (see onBrokerPublish): complete it for it.
    if (this.discardedQos2.delete(messageId)) this.toBroker({ cmd: 'pubcomp', messageId })
    else this.toClient(ackToV5(packet))
  }

  private onSuback (packet: ISubackPacket): void {
    const messageId = messageIdOf(packet)
    const granted = packet.granted as number[]
    const local = this.subscribeLocal.get(messageId) ?? granted.map(() => undefined)
    this.subscribeLocal.delete(messageId)
    this.toClient(subackToV5(messageId, granted, local))
  }

  private onUnsuback (packet: IUnsubackPacket): void {
    const messageId = messageIdOf(packet)
    const count = this.unsubscribeCounts.get(messageId)
    if (count === undefined) throw new GuardError('GUARD_ERR_PROTOCOL', `broker UNSUBACK ${messageId} matches no UNSUBSCRIBE`)
    this.unsubscribeCounts.delete(messageId)
    // aedes cannot say "no subscription existed" (0x11), so every filter reports success.
    this.toClient({ cmd: 'unsuback', messageId, granted: new Array<number>(count).fill(0) })
  }
}
