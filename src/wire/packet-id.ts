// Packet identifiers read and rewritten in place of whole decodes, for the frames that carry
// one: a QoS 1/2 PUBLISH (after its topic), and the acknowledgements, SUBSCRIBE, UNSUBSCRIBE
// and their acks (right after the fixed header). Used by failover: rehome, which must follow
// every identifier in flight on both legs at the cost of a few byte reads per packet.

import { fixedHeaderLength, FRAME_TYPE } from './codec.js'

/** Where a frame's packet identifier is, or -1 when it has none (QoS 0 PUBLISH, PING, ...). */
export function packetIdOffset (frame: Buffer): number {
  const type = (frame[0] ?? 0) >> 4
  const header = fixedHeaderLength(frame)
  if (type === FRAME_TYPE.publish) {
    if (((frame[0] ?? 0) & 0x06) === 0) return -1
    return header + 2 + frame.readUInt16BE(header)
  }
  switch (type) {
    case FRAME_TYPE.puback: case FRAME_TYPE.pubrec: case FRAME_TYPE.pubrel: case FRAME_TYPE.pubcomp:
    case FRAME_TYPE.subscribe: case FRAME_TYPE.suback: case FRAME_TYPE.unsubscribe: case FRAME_TYPE.unsuback:
      return header
    default:
      return -1
  }
}

export function readPacketId (frame: Buffer, offset: number): number {
  return frame.readUInt16BE(offset)
}

/** A copy of `frame` with another packet identifier (the original may still be referenced). */
export function withPacketId (frame: Buffer, offset: number, id: number): Buffer {
  const copy = Buffer.from(frame)
  copy.writeUInt16BE(id, offset)
  return copy
}

/** A copy of a PUBLISH with its DUP flag set: a resend [MQTT-3.3.1-1]. */
export function withDup (publish: Buffer): Buffer {
  const copy = Buffer.from(publish)
  copy[0] = (copy[0] ?? 0) | 0x08
  return copy
}

/** The QoS of a PUBLISH frame. */
export function publishQos (frame: Buffer): number {
  return ((frame[0] ?? 0) >> 1) & 0x03
}
