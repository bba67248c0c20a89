// Reads the protocol level of a CONNECT frame before decoding it, so that an unsupported
// level still gets its CONNACK 0x01 [MQTT-3.1.2-2] instead of a parser error.

import { fixedHeaderLength } from './codec.js'

/** CONNACK with return code 1, "unacceptable protocol version", in the 3.1.1 layout. */
export const UNSUPPORTED_PROTOCOL_CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x01])

export function peekProtocolLevel (frame: Buffer): number | undefined {
  const offset = fixedHeaderLength(frame)
  if (offset + 2 > frame.length) return undefined
  const nameLength = frame.readUInt16BE(offset)
  const levelAt = offset + 2 + nameLength
  return levelAt < frame.length ? frame[levelAt] : undefined
}
