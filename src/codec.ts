// Decodes whole frames (from the Framer) with mqtt-packet for one protocol version, and
// generates packets the proxy made or a plugin changed. Unchanged packets never pass through
// encode(): the Connection forwards their original bytes.

import mqtt from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import { GuardError } from './errors.js'

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

export class Codec {
  private readonly parser: mqtt.Parser
  private decoded: Packet | null = null
  private failure: Error | null = null
  private readonly generateOptions: { protocolVersion: ProtocolVersion }

  constructor (readonly protocolVersion: ProtocolVersion) {
    this.parser = mqtt.parser({ protocolVersion })
    this.parser.on('packet', (packet: Packet) => { this.decoded = packet })
    this.parser.on('error', (err: Error) => { this.failure = err })
    this.generateOptions = { protocolVersion }
  }

  /** Decodes exactly one whole frame. Throws GUARD_ERR_MALFORMED with the parser's reason. */
  decode (frame: Buffer): Packet {
    this.decoded = null
    this.failure = null
    const left = this.parser.parse(frame)
    const packet = this.decoded as Packet | null
    const failure = this.failure as Error | null
    if (failure !== null) throw new GuardError('GUARD_ERR_MALFORMED', failure.message, { cause: failure })
    if (packet === null || left !== 0) {
      throw new GuardError('GUARD_ERR_MALFORMED', 'frame did not decode to exactly one packet')
    }
    return packet
  }

  encode (packet: Packet): Buffer {
    try {
      return mqtt.generate(packet, this.generateOptions)
    } catch (err) {
      throw new GuardError('GUARD_ERR_ENCODE', `cannot encode ${packet.cmd}: ${(err as Error).message}`, { cause: err })
    }
  }
}
