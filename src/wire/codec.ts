// Decodes whole frames (from the Framer) with mqtt-packet for one protocol version, and
// generates packets the proxy made or a plugin changed. Unchanged packets never pass through
// encode(): the Connection forwards their original bytes.
//
// mqtt-packet is lenient where the proxy must not be: a plugin that judges a packet must see
// exactly what the receiver will see. So decode() also refuses truncated packets, invalid
// UTF-8 in topics and names, repeated MQTT 5 properties and bytes after the last field (see
// frame-walk.ts), and replaces a parser that failed (it keeps a stale read position after an
// error in a packet body).

import { isUtf8 } from 'node:buffer'
import mqtt from 'mqtt-packet'
import type { IConnackPacket, IConnectPacket, Packet } from 'mqtt-packet'
import { GuardError } from '../errors.js'
import { walkFrame } from './frame-walk.js'
import { subscriptionFilterProblem } from './topic-filter.js'

export type ProtocolVersion = 3 | 4 | 5

/** Packet type from byte 1 of a frame, without decoding it [MQTT-2.1.2]. */
export const FRAME_TYPE = {
  connect: 1, connack: 2, publish: 3, puback: 4, pubrec: 5, pubrel: 6, pubcomp: 7,
  subscribe: 8, suback: 9, unsubscribe: 10, unsuback: 11, pingreq: 12, pingresp: 13,
  disconnect: 14, auth: 15
} as const

export function frameType (frame: Buffer): number {
  return (frame[0] as number) >> 4
}

/** Length of the fixed header (type byte plus Remaining Length bytes). */
export function fixedHeaderLength (frame: Buffer): number {
  let i = 1
  while (i < frame.length && ((frame[i] as number) & 0x80) !== 0) i++
  return i + 1
}

function malformed (message: string): GuardError {
  return new GuardError('GUARD_ERR_MALFORMED', message)
}

export class Codec {
  private parser!: mqtt.Parser
  private decoded: Packet | null = null
  private failure: Error | null = null
  private readonly generateOptions: { protocolVersion: ProtocolVersion }

  private static readonly instances = new Map<ProtocolVersion, Codec>()

  /**
   * A Codec shared by every connection of one protocol version. Safe because decode() takes
   * exactly one whole frame and finishes synchronously, and a failed parser is replaced.
   */
  static shared (protocolVersion: ProtocolVersion): Codec {
    let codec = Codec.instances.get(protocolVersion)
    if (codec === undefined) {
      codec = new Codec(protocolVersion)
      Codec.instances.set(protocolVersion, codec)
    }
    return codec
  }

  constructor (readonly protocolVersion: ProtocolVersion) {
    this.generateOptions = { protocolVersion }
    this.makeParser()
  }

  private makeParser (): void {
    this.parser = mqtt.parser({ protocolVersion: this.protocolVersion })
    this.parser.on('packet', (packet: Packet) => { this.decoded = packet })
    this.parser.on('error', (err: Error) => { this.failure = err })
  }

  /** Decodes exactly one whole frame. Throws GUARD_ERR_MALFORMED / GUARD_ERR_PROTOCOL. */
  decode (frame: Buffer): Packet {
    const type = frameType(frame)
    if (type === FRAME_TYPE.publish) {
      const publish = decodePublish(frame, this.protocolVersion)
      if (publish !== null) return publish
    } else if (type === FRAME_TYPE.puback) {
      const puback = decodePuback(frame, this.protocolVersion)
      if (puback !== null) return puback
    } else if (type === FRAME_TYPE.connect || type === FRAME_TYPE.connack) {
      // Once per connection each, but a third of the proxy's own CPU per connect went to
      // mqtt-packet's parser (and its debug calls) for these two.
      const packet = type === FRAME_TYPE.connect ? decodeConnect(frame, this.protocolVersion) : decodeConnack(frame, this.protocolVersion)
      if (packet !== null) {
        this.check(packet, frame)
        return packet
      }
    }
    this.decoded = null
    this.failure = null
    let left = 0
    try {
      left = this.parser.parse(frame)
    } catch (err) {
      this.failure = err as Error
    }
    const packet = this.decoded as Packet | null
    const failure = this.failure as Error | null
    if (failure !== null || packet === null || left !== 0) {
      this.makeParser()
      if (failure !== null) throw new GuardError('GUARD_ERR_MALFORMED', failure.message, { cause: failure })
      throw malformed('frame did not decode to exactly one packet')
    }
    this.check(packet, frame)
    return packet
  }

  private check (packet: Packet, frame: Buffer): void {
    if (packet.messageId === -1) throw malformed(`${packet.cmd} truncated: no packet identifier`)
    const start = fixedHeaderLength(frame)
    const remaining = frame.length - start
    const v5 = this.protocolVersion === 5
    switch (packet.cmd) {
      case 'suback': case 'unsuback':
        if (remaining < (v5 ? 3 : 2) + (packet.cmd === 'suback' && !v5 ? 1 : 0)) throw malformed(`${packet.cmd.toUpperCase()} truncated`)
        break
      case 'publish':
        this.checkPublish(packet, frame)
        break
      case 'subscribe':
        if (packet.subscriptions.length === 0) throw new GuardError('GUARD_ERR_PROTOCOL', 'SUBSCRIBE without a topic filter') // [MQTT-3.8.3-3]
        for (const s of packet.subscriptions) checkFilter(s.topic, 'SUBSCRIBE')
        break
      case 'unsubscribe':
        if (packet.unsubscriptions.length === 0) throw new GuardError('GUARD_ERR_PROTOCOL', 'UNSUBSCRIBE without a topic filter') // [MQTT-3.10.3-2]
        for (const f of packet.unsubscriptions) checkFilter(f, 'UNSUBSCRIBE')
        break
      default:
        break
    }
    walkFrame(frame, start, packet.cmd, this.protocolVersion)
  }

  private checkPublish (packet: Extract<Packet, { cmd: 'publish' }>, frame: Buffer): void {
    const start = fixedHeaderLength(frame)
    const topicLength = frame.readUInt16BE(start)
    const end = start + 2 + topicLength + (packet.qos > 0 ? 2 : 0)
    // [MQTT-3.3.2.3]: an MQTT 5 PUBLISH always has a property length.
    if (this.protocolVersion === 5 && end >= frame.length) throw malformed('PUBLISH truncated: no property length')
    checkTopic(packet.topic, frame, start + 2, start + 2 + topicLength, this.protocolVersion, packet.properties?.topicAlias !== undefined)
  }

  encode (packet: Packet): Buffer {
    try {
      return mqtt.generate(packet, this.generateOptions)
    } catch (err) {
      throw new GuardError('GUARD_ERR_ENCODE', `cannot encode ${packet.cmd}: ${(err as Error).message}`, { cause: err })
    }
  }
}

/**
 * The common PUBLISH, decoded without mqtt-packet and without copying the payload (it is a
 * view into the frame). Returns null when mqtt-packet must do it: MQTT 5 properties, QoS 3,
 * or anything short, so that every error comes from one place.
 */
function decodePublish (frame: Buffer, version: ProtocolVersion): Extract<Packet, { cmd: 'publish' }> | null {
  const first = frame[0] as number
  const qos = (first >> 1) & 3
  if (qos === 3) return null
  const start = fixedHeaderLength(frame)
  if (start + 2 > frame.length) return null
  const topicEnd = start + 2 + frame.readUInt16BE(start)
  let offset = topicEnd + (qos > 0 ? 2 : 0)
  if (version === 5) {
    if (offset >= frame.length || frame[offset] !== 0) return null // properties present
    offset++
  }
  if (offset > frame.length) return null
  const topic = frame.toString('utf8', start + 2, topicEnd)
  checkTopic(topic, frame, start + 2, topicEnd, version, false)
  const packet: Extract<Packet, { cmd: 'publish' }> = {
    cmd: 'publish',
    retain: (first & 1) === 1,
    qos: qos as 0 | 1 | 2,
    dup: (first & 8) === 8,
    length: frame.length - start,
    topic,
    payload: frame.subarray(offset)
  }
  if (qos > 0) packet.messageId = frame.readUInt16BE(topicEnd)
  if (qos > 0 && packet.messageId === 0) throw malformed('PUBLISH packet identifier 0') // [MQTT-2.3.1-1]
  return packet
}

/**
 * The common 3.1 / 3.1.1 CONNECT, decoded as mqtt-packet decodes it (same fields, strings and
 * copies). Returns null for MQTT 5, the bridge flag, or anything odd or short: mqtt-packet then
 * decodes it and says what is wrong. walkFrame() checks the rest either way.
 */
function decodeConnect (frame: Buffer, version: ProtocolVersion): IConnectPacket | null {
  if (version === 5 || frame[0] !== 0x10) return null
  const start = fixedHeaderLength(frame)
  const end = frame.length
  if (start + 2 > end) return null
  const nameEnd = start + 2 + frame.readUInt16BE(start)
  if (nameEnd + 4 > end) return null
  const protocolId = frame.toString('latin1', start + 2, nameEnd)
  if (protocolId !== 'MQTT' && protocolId !== 'MQIsdp') return null
  const level = frame[nameEnd] as number
  const flags = frame[nameEnd + 1] as number
  const willQos = (flags >> 3) & 3
  const willFlag = (flags & 0x04) !== 0
  if (level !== version || (flags & 0x01) !== 0 || (!willFlag && (flags & 0x38) !== 0)) return null
  let at = nameEnd + 4
  /** Start of the next length-prefixed field (`at` moves past it), or -1 when it runs past the frame. */
  const field = (): number => {
    if (at + 2 > end) return -1
    const fieldEnd = at + 2 + frame.readUInt16BE(at)
    if (fieldEnd > end) return -1
    const fieldStart = at + 2
    at = fieldEnd
    return fieldStart
  }
  const id = field()
  if (id < 0) return null
  const packet: IConnectPacket = {
    cmd: 'connect', retain: false, qos: 0, dup: false, length: end - start, topic: null, payload: null,
    protocolId, protocolVersion: level as 3 | 4, clean: (flags & 0x02) !== 0, keepalive: frame.readUInt16BE(nameEnd + 2),
    clientId: frame.toString('utf8', id, at)
  } as IConnectPacket
  if (willFlag) {
    const topic = field()
    if (topic < 0) return null
    const topicEnd = at
    const payload = field()
    if (payload < 0) return null
    packet.will = { retain: (flags & 0x20) !== 0, qos: willQos as 0 | 1 | 2, topic: frame.toString('utf8', topic, topicEnd), payload: Buffer.from(frame.subarray(payload, at)) }
  }
  if ((flags & 0x80) !== 0) {
    const user = field()
    if (user < 0) return null
    packet.username = frame.toString('utf8', user, at)
  }
  if ((flags & 0x40) !== 0) {
    const password = field()
    if (password < 0) return null
    packet.password = Buffer.from(frame.subarray(password, at))
  }
  return packet
}

/** The common CONNACK: 3.1.1's four bytes, or MQTT 5's without properties. Else null. */
function decodeConnack (frame: Buffer, version: ProtocolVersion): IConnackPacket | null {
  const v5 = version === 5
  if (frame[0] !== 0x20 || frame.length !== (v5 ? 5 : 4) || frame[1] !== frame.length - 2 || (v5 && frame[4] !== 0)) return null
  const flags = frame[2] as number
  if (flags > 1) return null
  const packet = { cmd: 'connack', retain: false, qos: 0, dup: false, length: frame[1], topic: null, payload: null, sessionPresent: flags === 1 } as unknown as IConnackPacket
  if (v5) packet.reasonCode = frame[3] as number
  else packet.returnCode = frame[3] as number
  return packet
}

// [MQTT-3.4.2.1]
const PUBACK_REASONS = new Set([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99])

/**
 * The common PUBACK: 3.1.1's two bytes, or MQTT 5's with at most a reason code and an empty
 * property list. Anything else (properties, odd flags or lengths) goes to mqtt-packet.
 */
function decodePuback (frame: Buffer, version: ProtocolVersion): Extract<Packet, { cmd: 'puback' }> | null {
  if (frame[0] !== 0x40) return null
  const remaining = frame[1] as number
  if (frame.length !== remaining + 2) return null
  // 3.1.1: exactly 2; MQTT 5: 2 to 4 (reason code, empty property list). Shorter goes to the
  // strict path, which refuses it as malformed.
  if (remaining < 2 || (remaining !== 2 && (version !== 5 || remaining > 4 || (remaining === 4 && frame[5] !== 0)))) return null
  const reasonCode = remaining >= 3 ? frame[4] as number : 0
  if (!PUBACK_REASONS.has(reasonCode)) return null // mqtt-packet says which rule it breaks
  const packet: Extract<Packet, { cmd: 'puback' }> = { cmd: 'puback', messageId: frame.readUInt16BE(2), length: remaining }
  if (version === 5) packet.reasonCode = reasonCode
  return packet
}

/** [MQTT-1.5.3-1] valid UTF-8, [MQTT-3.3.2-2] no wildcards, and a topic unless an alias stands for it. */
function checkTopic (topic: string, frame: Buffer, start: number, end: number, version: ProtocolVersion, aliased: boolean): void {
  // Checked on the bytes only when the decoder had to substitute: the common case is one scan.
  if (topic.includes('\uFFFD') && !isUtf8(frame.subarray(start, end))) throw malformed('PUBLISH topic is not valid UTF-8')
  if (topic.includes('\u0000')) throw malformed('PUBLISH topic contains U+0000') // [MQTT-1.5.4-2]
  if (topic.includes('+') || topic.includes('#')) throw new GuardError('GUARD_ERR_TOPIC_INVALID', 'PUBLISH topic contains a wildcard')
  if (topic === '' && !(version === 5 && aliased)) throw new GuardError('GUARD_ERR_PROTOCOL', 'PUBLISH without a topic')
}

/** A filter the broker would refuse by closing the connection: refused here, with the reason. */
function checkFilter (filter: string, where: string): void {
  const problem = subscriptionFilterProblem(filter)
  if (problem !== undefined) throw malformed(`${where}: ${problem}`)
}
