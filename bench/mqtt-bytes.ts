// Hand-built MQTT 3.1.1 packets and a minimal stream splitter for the load generator.
// Only what the benchmark needs: CONNECT, SUBSCRIBE, PUBLISH (QoS 0/1), PUBACK, DISCONNECT,
// and framing by the fixed header. No MQTT library: the generator must cost far less CPU than
// the target it measures.

export const TYPE = { connack: 2, publish: 3, puback: 4, suback: 9 } as const

/** Remaining Length as a variable byte integer [MQTT-2.2.3]. */
function remainingLength (n: number): number[] {
  const out: number[] = []
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    out.push(byte)
  } while (n > 0)
  return out
}

function packet (first: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([first, ...remainingLength(body.length)]), body])
}

function utf8 (s: string): Buffer {
  const b = Buffer.from(s, 'utf8')
  const len = Buffer.alloc(2)
  len.writeUInt16BE(b.length)
  return Buffer.concat([len, b])
}

export interface Credentials { username: string, password: string }

/** CONNECT, MQTT 3.1.1, clean session, no will; user name and password when given. */
export function connectPacket (clientId: string, keepaliveSeconds = 0, credentials?: Credentials): Buffer {
  // Connect flags [MQTT-3.1.2.3]: 0x80 user name, 0x40 password, 0x02 clean session.
  const flags = credentials === undefined ? 0x02 : 0xc2
  const header = Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, flags, keepaliveSeconds >> 8, keepaliveSeconds & 0xff])
  const fields = [header, utf8(clientId)]
  if (credentials !== undefined) fields.push(utf8(credentials.username), utf8(credentials.password))
  return packet(0x10, Buffer.concat(fields))
}

export function subscribePacket (packetId: number, topic: string, qos: 0 | 1): Buffer {
  return packet(0x82, Buffer.concat([Buffer.from([packetId >> 8, packetId & 0xff]), utf8(topic), Buffer.from([qos])]))
}

/** A whole PUBLISH; `payloadOffset` says where the payload starts (to write a timestamp into it). */
export function publishPacket (topic: string, payload: Buffer, qos: 0 | 1, packetId = 0): { bytes: Buffer, payloadOffset: number } {
  const id = qos > 0 ? Buffer.from([packetId >> 8, packetId & 0xff]) : Buffer.alloc(0)
  const bytes = packet(0x30 | (qos << 1), Buffer.concat([utf8(topic), id, payload]))
  return { bytes, payloadOffset: bytes.length - payload.length }
}

export function pubackPacket (packetId: number): Buffer {
  return Buffer.from([0x40, 2, packetId >> 8, packetId & 0xff])
}

export const DISCONNECT = Buffer.from([0xe0, 0])

/**
 * Called once per whole packet: `buf[start]` is the first header byte, the variable header
 * starts at `body`, the packet ends before `end`. No copy, no object per packet.
 */
export type PacketHandler = (buf: Buffer, start: number, body: number, end: number) => void

/**
 * Splits a byte stream into packets by the fixed header. Whole packets inside a chunk are
 * handed on in place; a packet split across chunks is joined once.
 */
export class Splitter {
  private rest: Buffer | null = null

  constructor (private readonly onPacket: PacketHandler) {}

  push (chunk: Buffer): void {
    let buf = chunk
    if (this.rest !== null) {
      buf = Buffer.concat([this.rest, chunk])
      this.rest = null
    }
    let offset = 0
    const length = buf.length
    while (offset < length) {
      // Remaining Length: up to 4 bytes after the first byte.
      let remaining = 0
      let multiplier = 1
      let at = offset + 1
      let complete = false
      while (at < length && at <= offset + 4) {
        const byte = buf[at++] as number
        remaining += (byte & 0x7f) * multiplier
        if ((byte & 0x80) === 0) { complete = true; break }
        multiplier *= 128
      }
      if (!complete) {
        if (at > offset + 4) throw new Error('malformed remaining length')
        break
      }
      const end = at + remaining
      if (end > length) break
      this.onPacket(buf, offset, at, end)
      offset = end
    }
    if (offset < length) this.rest = buf.subarray(offset)
  }
}
