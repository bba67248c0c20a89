// Trace lines → pcapng, for Wireshark. The trace keeps each packet's MQTT bytes but not the TCP
// around them, so each (instance, conn, leg) becomes its own synthesised IPv4/TCP stream: a
// handshake at its first packet's time, then one PSH|ACK segment per MQTT packet (more when it
// is larger than one MSS). The server side is always port 1883 so Wireshark's MQTT dissector
// picks the streams up by port, and sequence numbers, acks and both checksums are real so its
// TCP analysis finds nothing to flag.
//
// pcapng layout: https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html, little-endian.

import { isIPv4 } from 'node:net'
import type { TraceLine } from './format.js'

/** Raw IP, no link-layer header: the capture is synthesised, a fake Ethernet header adds nothing. */
const LINKTYPE_RAW = 101
const MQTT_PORT = 1883
const PROXY_ADDRESS = '10.0.0.1'
const BROKER_ADDRESS = '10.0.0.2'
/** Ethernet's 1500 less the IPv4 and TCP headers: what a real peer would put in one segment. */
const MSS = 1460
const SYN = 0x02
const PSH = 0x08
const ACK = 0x10
// MSS 1460, NOP, window scale 14: data segments then advertise 65535 << 14 (1 GiB), so a long
// one-way run (a burst of PUBLISHes to a silent client) never looks like it overran the window.
const SYN_OPTIONS = Buffer.from([2, 4, 0x05, 0xb4, 1, 3, 3, 14])
const WINDOW = 0xffff
const EPHEMERAL_FIRST = 20000
const EPHEMERAL_SPAN = 40000
const EMPTY = Buffer.alloc(0)

const BLOCK_SHB = 0x0a0d0d0a
const BLOCK_IDB = 0x00000001
const BLOCK_EPB = 0x00000006
const OPT_COMMENT = 1
const SHB_USERAPPL = 4
const IF_NAME = 2
const IF_TSRESOL = 9

export interface PcapngExport {
  pcapng: Buffer
  /** MQTT packets written (lines with `frame`); each is one or more TCP segments. */
  packets: number
  /** Lines without `frame` bytes (the trace kept no payloads), left out. */
  skipped: number
  /** TCP streams synthesised: one per (instance, conn, leg). */
  streams: number
}

/** One end of a stream, with the next sequence number it will send. */
interface Side { ip: Buffer, port: number, seq: number, ipId: number }
/** `a` sends what goes `up` (the client, or the proxy on the broker leg); `b` listens on 1883. */
interface Stream { a: Side, b: Side }

export function tracesToPcapng (lines: Iterable<TraceLine>): PcapngExport {
  // Array.prototype.sort is stable, so lines with equal `us` keep their logged order.
  const sorted = [...lines].sort((x, y) => x.us - y.us)
  const streams = new Map<string, Stream>()
  const taken = new Set<string>()
  const blocks: Buffer[] = [sectionHeader(), interfaceDescription()]
  let packets = 0
  let skipped = 0
  for (const line of sorted) {
    const frame = line.frame === undefined ? EMPTY : Buffer.from(line.frame, 'base64')
    if (frame.length === 0) { skipped++; continue }
    const key = `${line.instance}\0${line.conn}\0${line.leg}`
    let stream = streams.get(key)
    if (stream === undefined) {
      stream = openStream(line, taken)
      streams.set(key, stream)
      for (const packet of handshake(stream)) blocks.push(enhancedPacket(line.us, packet))
    }
    const [from, to] = line.dir === 'up' ? [stream.a, stream.b] : [stream.b, stream.a]
    for (let offset = 0; offset < frame.length; offset += MSS) {
      const packet = segment(from, to, PSH | ACK, frame.subarray(offset, offset + MSS))
      blocks.push(enhancedPacket(line.us, packet, offset === 0 ? describe(line) : undefined))
    }
    packets++
  }
  return { pcapng: Buffer.concat(blocks), packets, skipped, streams: streams.size }
}

// --- Streams and addresses ---

function openStream (line: TraceLine, taken: Set<string>): Stream {
  const hash = fnv1a(`${line.instance}\0${line.conn}`)
  const client = line.leg === 'client'
  const aAddress = client ? clientIPv4(line.address, hash) : PROXY_ADDRESS
  const bAddress = client ? PROXY_ADDRESS : BROKER_ADDRESS
  const wanted = client && Number.isInteger(line.port) && line.port > 0 && line.port < 65536 ? line.port : ephemeral(hash)
  const aPort = freePort(taken, aAddress, wanted, bAddress)
  return {
    a: { ip: ipv4Bytes(aAddress), port: aPort, seq: hash, ipId: hash & 0xffff },
    b: { ip: ipv4Bytes(bAddress), port: MQTT_PORT, seq: Math.imul(hash, 0x9e3779b1) >>> 0, ipId: hash >>> 16 }
  }
}

/**
 * Two streams on one address and port pair would read as a port reused before the first
 * stream closed (reconnects from the same port, two instances, a hash collision), so the
 * client-side port moves on until the pair is free; after every port is taken, reuse is fine.
 */
function freePort (taken: Set<string>, aAddress: string, wanted: number, bAddress: string): number {
  let port = wanted
  for (let i = 0; i < 65536 && taken.has(`${aAddress}:${port}>${bAddress}`); i++) port = port >= 65535 ? 1024 : port + 1
  taken.add(`${aAddress}:${port}>${bAddress}`)
  return port
}

/** The client's own address where it is IPv4 (also IPv4-mapped IPv6), else one in 10.1/16. */
function clientIPv4 (address: string, hash: number): string {
  const plain = address.toLowerCase().startsWith('::ffff:') ? address.slice(7) : address
  if (isIPv4(plain)) return plain
  return `10.1.${(hash >>> 8) & 0xff}.${1 + (hash % 254)}`
}

const ephemeral = (hash: number): number => EPHEMERAL_FIRST + (hash % EPHEMERAL_SPAN)
const ipv4Bytes = (address: string): Buffer => Buffer.from(address.split('.').map(Number))

/** FNV-1a, 32 bits: stable across runs, so the same trace exports the same capture. */
function fnv1a (text: string): number {
  let hash = 0x811c9dc5
  for (const byte of Buffer.from(text)) hash = Math.imul(hash ^ byte, 0x01000193)
  return hash >>> 0
}

/** Shown as the first segment's comment in Wireshark (frame.comment). */
function describe (line: TraceLine): string {
  const plugin = line.plugin === undefined ? '' : ` by ${line.plugin}`
  return `${line.type} ${line.leg} ${line.dir} ${line.verdict}${plugin}; conn ${line.conn} (${line.clientId}) on ${line.instance}`
}

// --- IPv4 and TCP ---

function handshake (stream: Stream): Buffer[] {
  return [
    segment(stream.a, stream.b, SYN, EMPTY, SYN_OPTIONS),
    segment(stream.b, stream.a, SYN | ACK, EMPTY, SYN_OPTIONS),
    segment(stream.a, stream.b, ACK, EMPTY)
  ]
}

/** One IPv4 packet from `from` to `to`; acknowledges all `to` has sent, as nothing is ever lost. */
function segment (from: Side, to: Side, flags: number, data: Buffer, options = EMPTY): Buffer {
  const ack = (flags & ACK) !== 0 ? to.seq : 0
  const packet = ipv4(from, to, tcp(from, to, ack, flags, options, data))
  from.seq = (from.seq + data.length + ((flags & SYN) !== 0 ? 1 : 0)) >>> 0
  from.ipId = (from.ipId + 1) & 0xffff
  return packet
}

function tcp (from: Side, to: Side, ack: number, flags: number, options: Buffer, data: Buffer): Buffer {
  const headerLength = 20 + options.length
  const seg = Buffer.alloc(headerLength + data.length)
  seg.writeUInt16BE(from.port, 0)
  seg.writeUInt16BE(to.port, 2)
  seg.writeUInt32BE(from.seq, 4)
  seg.writeUInt32BE(ack, 8)
  seg[12] = (headerLength / 4) << 4
  seg[13] = flags
  seg.writeUInt16BE(WINDOW, 14)
  options.copy(seg, 20)
  data.copy(seg, headerLength)
  // RFC 793: the checksum covers a pseudo-header of addresses, protocol and TCP length too.
  const pseudo = Buffer.alloc(12)
  from.ip.copy(pseudo, 0)
  to.ip.copy(pseudo, 4)
  pseudo[9] = 6
  pseudo.writeUInt16BE(seg.length, 10)
  seg.writeUInt16BE(checksum(Buffer.concat([pseudo, seg])), 16)
  return seg
}

function ipv4 (from: Side, to: Side, payload: Buffer): Buffer {
  const header = Buffer.alloc(20)
  header[0] = 0x45 // version 4, 5 words
  header.writeUInt16BE(20 + payload.length, 2)
  header.writeUInt16BE(from.ipId, 4)
  header.writeUInt16BE(0x4000, 6) // don't fragment: TCP sized its segments
  header[8] = 64 // TTL
  header[9] = 6 // TCP
  from.ip.copy(header, 12)
  to.ip.copy(header, 16)
  header.writeUInt16BE(checksum(header), 10)
  return Buffer.concat([header, payload])
}

/** RFC 1071 ones' complement sum; an odd last byte is padded with zero. */
function checksum (data: Buffer): number {
  let sum = 0
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i)
  if (data.length % 2 === 1) sum += (data[data.length - 1] ?? 0) << 8
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return ~sum & 0xffff
}

// --- pcapng blocks ---

function sectionHeader (): Buffer {
  const head = Buffer.alloc(16)
  head.writeUInt32LE(0x1a2b3c4d, 0) // byte-order magic: readers learn little-endian from it
  head.writeUInt16LE(1, 4)
  head.writeUInt16LE(0, 6)
  head.writeBigInt64LE(-1n, 8) // section length not given
  return block(BLOCK_SHB, head, [option(SHB_USERAPPL, Buffer.from('mqtt-guard trace export'))])
}

function interfaceDescription (): Buffer {
  const head = Buffer.alloc(8)
  head.writeUInt16LE(LINKTYPE_RAW, 0)
  head.writeUInt32LE(0xffff, 4) // snaplen: every segment fits whole
  // if_tsresol 6: timestamps count microseconds, as `us` does (the default would too, but
  // saying so keeps readers from guessing).
  return block(BLOCK_IDB, head, [option(IF_NAME, Buffer.from('mqtt-guard')), option(IF_TSRESOL, Buffer.from([6]))])
}

function enhancedPacket (us: number, packet: Buffer, comment?: string): Buffer {
  const ts = BigInt(Math.max(0, Math.round(us)))
  const head = Buffer.alloc(20)
  head.writeUInt32LE(0, 0) // interface 0, the only one
  head.writeUInt32LE(Number(ts >> 32n), 4)
  head.writeUInt32LE(Number(ts & 0xffffffffn), 8)
  head.writeUInt32LE(packet.length, 12)
  head.writeUInt32LE(packet.length, 16)
  const options = comment === undefined ? [] : [option(OPT_COMMENT, Buffer.from(comment))]
  return block(BLOCK_EPB, Buffer.concat([head, pad4(packet)]), options)
}

/** Type, total length, body, options ended by opt_endofopt (when any), total length again. */
function block (type: number, body: Buffer, options: Buffer[]): Buffer {
  const inner = options.length === 0 ? body : Buffer.concat([body, ...options, Buffer.alloc(4)])
  const length = 12 + inner.length
  const out = Buffer.alloc(length)
  out.writeUInt32LE(type, 0)
  out.writeUInt32LE(length, 4)
  inner.copy(out, 8)
  out.writeUInt32LE(length, length - 4)
  return out
}

function option (code: number, value: Buffer): Buffer {
  const head = Buffer.alloc(4)
  head.writeUInt16LE(code, 0)
  head.writeUInt16LE(value.length, 2)
  return Buffer.concat([head, pad4(value)])
}

const pad4 = (data: Buffer): Buffer =>
  data.length % 4 === 0 ? data : Buffer.concat([data, Buffer.alloc(4 - (data.length % 4))])
