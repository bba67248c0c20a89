// trace export --pcap: hand-made trace lines carrying real MQTT frames (from mqtt-packet) for
// three connections (MQTT 3.1.1, MQTT 5, MQTT 5 from IPv6 with a PUBLISH larger than one
// segment), both legs each. The capture is read back twice: by a small pcapng reader written
// here from the spec (blocks, timestamps, addresses, payload bytes, checksums), and by tshark,
// which must decode every packet as MQTT and find nothing wrong with the TCP around them.
// tshark is required: CI installs the Debian package, and a missing one fails, not skips.

import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import mqtt from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import type { TraceDir, TraceLine } from '../../plugins/trace/format.js'
import { tracesToPcapng } from '../../plugins/trace/pcapng.js'

const run = promisify(execFile)
const TSHARK = '/usr/bin/tshark'
const BASE_US = 1_700_000_000_123_457

interface Conn { conn: string, version: 4 | 5, address: string, port: number, big?: boolean }
const CONNS: Conn[] = [
  { conn: 'c-v4', version: 4, address: '192.0.2.10', port: 50001 },
  { conn: 'c-v5', version: 5, address: '::ffff:192.0.2.11', port: 50002 },
  { conn: 'c-v6', version: 5, address: '2001:db8::5', port: 50003, big: true }
]
const BIG = Buffer.alloc(4000, 'x')

function conversation (c: Conn): Array<[TraceDir, Packet]> {
  const ok = c.version === 5 ? { reasonCode: 0 } : { returnCode: 0 }
  return [
    ['up', { cmd: 'connect', clientId: `sensor-${c.conn}`, protocolVersion: c.version, protocolId: 'MQTT', clean: true, keepalive: 30 }],
    ['down', { cmd: 'connack', sessionPresent: false, ...ok }],
    ['up', { cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'plant/+/temp', qos: 1 }] }],
    ['down', { cmd: 'suback', messageId: 1, granted: [1] }],
    ['up', { cmd: 'publish', messageId: 2, qos: 1, dup: false, retain: false, topic: 'plant/3/temp', payload: c.big === true ? BIG : '21.5' }],
    ['down', { cmd: 'puback', messageId: 2 }]
  ]
}

/** Each packet on both legs: up crosses the client leg first, down the broker leg first. */
function traceLines (): TraceLine[] {
  const lines: TraceLine[] = []
  CONNS.forEach((c, k) => {
    conversation(c).forEach(([dir, packet], i) => {
      const frame = mqtt.generate(packet, { protocolVersion: c.version })
      const at = BASE_US + i * 1000 + k * 100
      const legs = dir === 'up' ? ['client', 'broker'] as const : ['broker', 'client'] as const
      legs.forEach((leg, j) => lines.push({
        level: 30, time: Math.floor(at / 1000), msg: 'packet', us: at + j * 10, trace: 'config', instance: 'i1',
        conn: c.conn, clientId: `sensor-${c.conn}`, address: c.address, port: c.port, leg, dir,
        verdict: j === 0 ? 'forwarded' : 'sent', type: packet.cmd, protocolVersion: c.version,
        size: frame.length, frame: frame.toString('base64')
      }))
    })
  })
  // A line from a trace that kept no bytes: counted, not exported.
  const first = lines[0]
  if (first !== undefined) lines.push({ ...first, us: BASE_US + 50, type: 'pingreq', frame: undefined })
  return lines.reverse() // out of order: the export sorts by `us`
}

// --- A pcapng reader, from the spec rather than from the writer ---

interface Epb { us: number, ip: Buffer }

function readPcapng (file: Buffer): { types: number[], linktype: number, tsresol: number | undefined, packets: Epb[] } {
  const types: number[] = []
  const packets: Epb[] = []
  let linktype = -1
  let tsresol: number | undefined
  for (let at = 0; at < file.length;) {
    const type = file.readUInt32LE(at)
    const length = file.readUInt32LE(at + 4)
    if (length % 4 !== 0 || length < 12 || file.readUInt32LE(at + length - 4) !== length) throw new Error(`bad block at ${at}`)
    const body = file.subarray(at + 8, at + length - 4)
    types.push(type)
    if (type === 0x0a0d0d0a && body.readUInt32LE(0) !== 0x1a2b3c4d) throw new Error('not little-endian')
    if (type === 1) { linktype = body.readUInt16LE(0); tsresol = readOption(body.subarray(8), 9)?.[0] }
    if (type === 6) packets.push({ us: body.readUInt32LE(4) * 2 ** 32 + body.readUInt32LE(8), ip: body.subarray(20, 20 + body.readUInt32LE(12)) })
    at += length
  }
  return { types, linktype, tsresol, packets }
}

function readOption (options: Buffer, code: number): Buffer | undefined {
  for (let at = 0; at + 4 <= options.length;) {
    const [c, length] = [options.readUInt16LE(at), options.readUInt16LE(at + 2)]
    if (c === code) return options.subarray(at + 4, at + 4 + length)
    if (c === 0) return undefined
    at += 4 + Math.ceil(length / 4) * 4
  }
  return undefined
}

/** RFC 1071: a correct header (or pseudo-header + segment) sums to 0xffff. */
function sums (data: Buffer): number {
  let sum = 0
  for (let i = 0; i < data.length; i += 2) sum += (data[i] ?? 0) * 256 + (data[i + 1] ?? 0)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return sum
}

interface Segment { src: string, dst: string, flags: number, seq: number, ack: number, data: Buffer, ipOk: boolean, tcpOk: boolean }

function parseIp (ip: Buffer): Segment {
  const tcp = ip.subarray(20, ip.readUInt16BE(2))
  const pseudo = Buffer.concat([ip.subarray(12, 20), Buffer.from([0, 6, tcp.length >> 8, tcp.length & 0xff])])
  const address = (at: number): string => `${[...ip.subarray(at, at + 4)].join('.')}`
  return {
    src: `${address(12)}:${tcp.readUInt16BE(0)}`,
    dst: `${address(16)}:${tcp.readUInt16BE(2)}`,
    flags: tcp[13] ?? 0,
    seq: tcp.readUInt32BE(4),
    ack: tcp.readUInt32BE(8),
    data: tcp.subarray(((tcp[12] ?? 0) >> 4) * 4),
    ipOk: ip[0] === 0x45 && sums(ip.subarray(0, 20)) === 0xffff,
    tcpOk: sums(Buffer.concat([pseudo, tcp])) === 0xffff
  }
}

// --- Tests ---

const lines = traceLines()
const sorted = [...lines].sort((x, y) => x.us - y.us)
const withBytes = sorted.filter((l) => l.frame !== undefined)
const result = tracesToPcapng(lines)
const read = readPcapng(result.pcapng)
const segments = read.packets.map((p) => parseIp(p.ip))

t.test('counts', async (t) => {
  t.equal(result.packets, withBytes.length)
  t.equal(result.skipped, 1)
  t.equal(result.streams, CONNS.length * 2)
})

t.test('blocks parse back: one section, one raw-IP interface in µs, then packets', async (t) => {
  t.same(read.types.slice(0, 2), [0x0a0d0d0a, 1])
  t.ok(read.types.slice(2).every((type) => type === 6))
  t.equal(read.linktype, 101)
  t.equal(read.tsresol, 6)
})

t.test('timestamps are the lines\' us: a handshake at each stream\'s first, then each frame\'s segments', async (t) => {
  const seen = new Set<string>()
  const expected: number[] = []
  for (const line of withBytes) {
    const key = `${line.conn}/${line.leg}`
    if (!seen.has(key)) { seen.add(key); expected.push(line.us, line.us, line.us) }
    const size = Buffer.from(line.frame ?? '', 'base64').length
    for (let i = 0; i < Math.ceil(size / 1460); i++) expected.push(line.us)
  }
  t.same(read.packets.map((p) => p.us), expected)
})

t.test('segments carry the frames in order, with valid checksums and sizes', async (t) => {
  const data = segments.filter((s) => s.data.length > 0)
  t.ok(data.every((s) => s.flags === 0x18 && s.data.length <= 1460), 'PSH|ACK, at most one MSS')
  t.ok(segments.every((s) => s.ipOk && s.tcpOk), 'IPv4 and TCP checksums')
  t.same(Buffer.concat(data.map((s) => s.data)), Buffer.concat(withBytes.map((l) => Buffer.from(l.frame ?? '', 'base64'))))
  t.equal(data.length, withBytes.length + 4, 'the 4000-byte PUBLISH takes three segments on each leg')
})

t.test('addresses: the client\'s IPv4 (mapped too), else 10.1/16; the broker leg from 10.0.0.1', async (t) => {
  const syns = segments.filter((s) => s.flags === 0x02).map((s) => `${s.src} > ${s.dst}`)
  const broker = syns.filter((s) => s.endsWith('> 10.0.0.2:1883'))
  t.same(syns.filter((s) => !broker.includes(s)).slice(0, 2), ['192.0.2.10:50001 > 10.0.0.1:1883', '192.0.2.11:50002 > 10.0.0.1:1883'])
  t.match(syns.filter((s) => !broker.includes(s))[2], /^10\.1\.\d+\.\d+:50003 > 10\.0\.0\.1:1883$/)
  t.equal(broker.length, 3)
  t.ok(broker.every((s) => /^10\.0\.0\.1:\d+ > /.test(s)), broker.join(', '))
  t.equal(new Set(broker).size, 3, 'one port per broker-leg stream')
})

t.test('sequence and ack numbers follow each direction\'s bytes', async (t) => {
  const next = new Map<string, number>()
  const wrong: string[] = []
  segments.forEach((s, i) => {
    const syn = (s.flags & 0x02) !== 0
    if (!syn && s.seq !== next.get(`${s.src} > ${s.dst}`)) wrong.push(`packet ${i + 1} seq`)
    if ((s.flags & 0x10) !== 0 && s.ack !== next.get(`${s.dst} > ${s.src}`)) wrong.push(`packet ${i + 1} ack`)
    next.set(`${s.src} > ${s.dst}`, (s.seq + s.data.length + (syn ? 1 : 0)) >>> 0)
  })
  t.same(wrong, [])
})

t.test('tshark decodes every packet as MQTT and flags no TCP problem', async (t) => {
  if (!existsSync(TSHARK)) {
    t.fail(`${TSHARK} not found: this test needs tshark (DEBIAN_FRONTEND=noninteractive apt-get install -y tshark)`)
    return
  }
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-pcapng-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'trace.pcapng')
  await writeFile(file, result.pcapng)
  const tshark = async (...args: string[]): Promise<string[]> =>
    (await run(TSHARK, ['-r', file, '-o', 'ip.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', ...args])).stdout.split('\n').filter((l) => l !== '')

  const decoded = await tshark('-Y', 'mqtt', '-T', 'fields', '-e', 'tcp.stream', '-e', 'mqtt.msgtype', '-e', 'mqtt.topic')
  const perStream = new Map<string, string[]>()
  for (const row of decoded) {
    const [stream = '', type = '', topic = ''] = row.split('\t')
    perStream.set(stream, [...(perStream.get(stream) ?? []), `${type} ${topic}`.trim()])
  }
  t.equal(perStream.size, 6, 'six TCP streams')
  for (const [stream, rows] of perStream) {
    t.same(rows, ['1', '2', '8 plant/+/temp', '9', '3 plant/3/temp', '4'], `stream ${stream}: CONNECT … PUBACK`)
  }
  t.same(await tshark('-Y', 'mqtt.ver', '-T', 'fields', '-e', 'mqtt.ver'), ['4', '4', '5', '5', '5', '5'], 'protocol versions')
  t.same(await tshark('-Y', 'mqtt.msgtype == 3', '-T', 'fields', '-e', 'mqtt.msg'), ['32312e35', '32312e35', '32312e35', '32312e35', BIG.toString('hex'), BIG.toString('hex')], 'payloads, the big one reassembled')

  const trouble = 'tcp.analysis.flags || _ws.expert.severity >= "Warning" || _ws.malformed || ip.checksum.status != 1 || tcp.checksum.status != 1'
  t.same(await tshark('-Y', trouble), [], 'no TCP analysis flags, warnings, malformed packets or bad checksums')
})

t.test('the export command writes the same capture from a log file', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-export-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const [input, output] = [path.join(dir, 'trace.log'), path.join(dir, 'out.pcapng')]
  const other = ['not json', JSON.stringify({ level: 30, msg: 'listening' })]
  await writeFile(input, [...other, ...lines.map((l) => JSON.stringify(l))].join('\n') + '\n')
  const exportJs = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../plugins/trace/export.js')
  const script = `const m = await import(${JSON.stringify(exportJs)}); process.exitCode = await m.exportCommand(process.argv.slice(1))`
  const node = (...args: string[]) => run(process.execPath, ['--input-type=module', '-e', script, ...args])
  const { stdout } = await node(input, '--pcap', output)
  t.equal(stdout, `wrote ${output}: ${withBytes.length} packets in 6 streams (1 lines without bytes: the trace kept no payloads)\n`)
  t.same(await readFile(output), result.pcapng)
  await t.rejects(node(input), { code: 2 }, 'no --pcap: usage error')
  await writeFile(input, lines.map((l) => JSON.stringify({ ...l, frame: undefined })).join('\n'))
  await t.rejects(node(input, '--pcap', output), { code: 1 }, 'no line with bytes')
})
