// PROXY protocol: a table of headers written out by hand from the spec (not by our encoder).
// Each valid row is parsed from every prefix of header + MQTT CONNECT: 'incomplete' before the
// header ends, then 'done' with exactly the CONNECT bytes seen so far as `rest`. Each invalid
// row names the shortest prefix that must already be refused. Rows with `encoded` are also
// what the encoder must produce; round trips and trusted-proxy rules follow.

import t from 'tap'
import { compileTrusted, encodeProxyV1, encodeProxyV2, parseProxyHeader } from '../../src/wire/proxy-protocol.js'
import { mulberry32 } from '../helpers/prng.js'
import type { ProxyAddress, ProxyParse } from '../../src/wire/proxy-protocol.js'

interface Valid {
  name: string
  hex: string
  version: 1 | 2
  header: ProxyAddress | undefined
  /** The encoder, given this, writes exactly `hex`. */
  encoded?: ProxyAddress
}

interface Invalid {
  name: string
  hex: string
  /** Shortest prefix already refused; the whole row when omitted. */
  invalidAt?: number
}

const hex = (s: string): Buffer => Buffer.from(s, 'hex')
const text = (s: string): string => Buffer.from(s, 'latin1').toString('hex')

// MQTT 3.1.1 CONNECT, client ID "test": what follows the header.
const CONNECT = '10100004' + '4d515454' + '04' + '02' + '003c' + '0004' + '74657374'
const SIG = '0d0a0d0a000d0a515549540a'
// 192.0.2.1:54321 -> 198.51.100.1:1883, and the same in IPv6 documentation space.
const V4_ADDRESSES = 'c0000201' + 'c6336401' + 'd431' + '075b'
const V6_ADDRESSES = '20010db8000000000000000000000001' + '20010db8000000000000000000000002' + 'd431' + '075b'

const addr = (family: ProxyAddress['family'], sourceAddress: string, sourcePort: number, destinationAddress: string, destinationPort: number): ProxyAddress =>
  ({ family, sourceAddress, sourcePort, destinationAddress, destinationPort })
const TCP4 = addr('IPv4', '192.0.2.1', 54321, '198.51.100.1', 1883)
const TCP6 = addr('IPv6', '2001:db8::1', 54321, '2001:db8::2', 1883)
const MAPPED: ProxyAddress = { ...TCP6, sourceAddress: '::ffff:192.0.2.1', destinationAddress: '::ffff:198.51.100.1' }
const UNKNOWN = addr('unknown', '', 0, '', 0)
const FULL6 = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'

const VALID: Valid[] = [
  { name: 'v1 TCP4', hex: text('PROXY TCP4 192.0.2.1 198.51.100.1 54321 1883\r\n'), version: 1, header: TCP4, encoded: TCP4 },
  { name: 'v1 TCP6', hex: text('PROXY TCP6 2001:db8::1 2001:db8::2 54321 1883\r\n'), version: 1, header: TCP6, encoded: TCP6 },
  { name: 'v1 TCP6 written long and upper case', hex: text('PROXY TCP6 2001:0DB8:0:0:0:0:0:1 2001:db8::2 54321 1883\r\n'), version: 1, header: TCP6 },
  { name: 'v1 TCP6 mapped IPv4', hex: text('PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.1 54321 1883\r\n'), version: 1, header: MAPPED, encoded: MAPPED },
  { name: 'v1 ports 0 and 65535', hex: text('PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n'), version: 1, header: addr('IPv4', '0.0.0.0', 0, '255.255.255.255', 65535) },
  { name: 'v1 longest TCP6 line', hex: text(`PROXY TCP6 ${FULL6} ${FULL6} 65535 65535\r\n`), version: 1, header: addr('IPv6', FULL6, 65535, FULL6, 65535) },
  { name: 'v1 UNKNOWN', hex: text('PROXY UNKNOWN\r\n'), version: 1, header: undefined, encoded: UNKNOWN },
  { name: 'v1 UNKNOWN with ignored addresses', hex: text('PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n'), version: 1, header: undefined },
  // 107 bytes exactly, CRLF included: the longest line allowed.
  { name: 'v1 UNKNOWN of 107 bytes', hex: text('PROXY UNKNOWN ' + 'x'.repeat(91) + '\r\n'), version: 1, header: undefined },
  { name: 'v2 TCP4', hex: SIG + '21' + '11' + '000c' + V4_ADDRESSES, version: 2, header: TCP4, encoded: TCP4 },
  { name: 'v2 TCP6', hex: SIG + '21' + '21' + '0024' + V6_ADDRESSES, version: 2, header: TCP6, encoded: TCP6 },
  {
    name: 'v2 TCP6 mapped IPv4',
    hex: SIG + '21' + '21' + '0024' + '00000000000000000000ffffc0000201' + '00000000000000000000ffffc6336401' + 'd431075b',
    version: 2,
    header: MAPPED,
    encoded: MAPPED
  },
  { name: 'v2 LOCAL', hex: SIG + '20' + '00' + '0000', version: 2, header: undefined, encoded: UNKNOWN },
  // LOCAL: the address block is skipped whatever the family byte says.
  { name: 'v2 LOCAL with a TCP4 block', hex: SIG + '20' + '11' + '000c' + V4_ADDRESSES, version: 2, header: undefined },
  { name: 'v2 LOCAL with a UDP family byte', hex: SIG + '20' + '12' + '000c' + V4_ADDRESSES, version: 2, header: undefined },
  { name: 'v2 PROXY UNSPEC', hex: SIG + '21' + '00' + '0000', version: 2, header: undefined },
  // NOOP (0x04) with 3 bytes, then ALPN (0x01) "mq": 12 + 6 + 5 = 23 bytes.
  { name: 'v2 TCP4 with TLVs', hex: SIG + '21' + '11' + '0017' + V4_ADDRESSES + '040003aabbcc' + '0100026d71', version: 2, header: TCP4 },
  { name: 'v2 TCP6 with TLVs', hex: SIG + '21' + '21' + '0029' + V6_ADDRESSES + '0400020000', version: 2, header: TCP6 },
  { name: 'v2 unix stream', hex: SIG + '21' + '31' + '00d8' + text('/run/a.sock').padEnd(216, '0') + text('/run/b.sock').padEnd(216, '0'), version: 2, header: undefined },
  { name: 'v2 unix datagram', hex: SIG + '21' + '32' + '00d8' + '00'.repeat(216), version: 2, header: undefined }
]

const V1_GOOD = 'PROXY TCP4 192.0.2.1 198.51.100.1 54321 1883'
const INVALID: Invalid[] = [
  { name: 'MQTT CONNECT without header', hex: CONNECT, invalidAt: 1 },
  { name: 'HTTP request', hex: text('GET / HTTP/1.1\r\n\r\n'), invalidAt: 1 },
  { name: 'lower-case proxy', hex: text('proxy TCP4'), invalidAt: 1 },
  { name: 'PROXX', hex: text('PROXX TCP4'), invalidAt: 5 },
  { name: 'PROXY then CRLF', hex: text('PROXY\r\n'), invalidAt: 6 },
  { name: 'v1 no CRLF within 107 bytes', hex: text('PROXY UNKNOWN ' + 'x'.repeat(200)), invalidAt: 107 },
  { name: 'v1 line of 108 bytes', hex: text('PROXY UNKNOWN ' + 'x'.repeat(92) + '\r\n'), invalidAt: 107 },
  { name: 'v1 ended by LF alone', hex: text('PROXY UNKNOWN\n') },
  { name: 'v1 UNKNOWN with more, ended by LF alone', hex: text('PROXY UNKNOWN x\n') },
  { name: 'v1 TCP4 ended by LF alone', hex: text(V1_GOOD + '\n') },
  { name: 'v1 no protocol', hex: text('PROXY \r\n') },
  { name: 'v1 unknown protocol', hex: text('PROXY TCP5 192.0.2.1 198.51.100.1 54321 1883\r\n') },
  { name: 'v1 lower-case protocol', hex: text('PROXY tcp4 192.0.2.1 198.51.100.1 54321 1883\r\n') },
  { name: 'v1 two spaces', hex: text('PROXY  TCP4 192.0.2.1 198.51.100.1 54321 1883\r\n') },
  { name: 'v1 missing port', hex: text('PROXY TCP4 192.0.2.1 198.51.100.1 54321\r\n') },
  { name: 'v1 extra field', hex: text(V1_GOOD + ' 1\r\n') },
  { name: 'v1 trailing space', hex: text(V1_GOOD + ' \r\n') },
  { name: 'v1 port 65536', hex: text('PROXY TCP4 192.0.2.1 198.51.100.1 65536 1883\r\n') },
  { name: 'v1 port with +', hex: text('PROXY TCP4 192.0.2.1 198.51.100.1 +54321 1883\r\n') },
  { name: 'v1 port with -', hex: text('PROXY TCP4 192.0.2.1 198.51.100.1 54321 -1\r\n') },
  { name: 'v1 port in hex', hex: text('PROXY TCP4 192.0.2.1 198.51.100.1 0x50 1883\r\n') },
  { name: 'v1 port of 6 digits', hex: text('PROXY TCP4 192.0.2.1 198.51.100.1 054321 1883\r\n') },
  { name: 'v1 bad IPv4', hex: text('PROXY TCP4 192.0.2.256 198.51.100.1 54321 1883\r\n') },
  { name: 'v1 TCP4 with IPv6', hex: text('PROXY TCP4 2001:db8::1 198.51.100.1 54321 1883\r\n') },
  { name: 'v1 TCP6 with IPv4', hex: text('PROXY TCP6 192.0.2.1 2001:db8::2 54321 1883\r\n') },
  { name: 'v1 TCP6 with zone', hex: text('PROXY TCP6 fe80::1%eth0 2001:db8::2 54321 1883\r\n') },
  { name: 'v1 CR inside the line', hex: text('PROXY TCP4 192.0.2.1\r 198.51.100.1 54321 1883\r\n') },
  { name: 'v2 signature wrong at byte 6', hex: '0d0a0d0a000e0a515549540a' + '21' + '11' + '000c' + V4_ADDRESSES, invalidAt: 6 },
  { name: 'v2 version 1', hex: SIG + '11' + '11' + '000c' + V4_ADDRESSES, invalidAt: 13 },
  { name: 'v2 version 3', hex: SIG + '31' + '11' + '000c' + V4_ADDRESSES, invalidAt: 13 },
  { name: 'v2 command 2', hex: SIG + '22' + '11' + '000c' + V4_ADDRESSES, invalidAt: 13 },
  { name: 'v2 command 15', hex: SIG + '2f' + '11' + '000c' + V4_ADDRESSES, invalidAt: 13 },
  { name: 'v2 UDP4', hex: SIG + '21' + '12' + '000c' + V4_ADDRESSES, invalidAt: 14 },
  { name: 'v2 UDP6', hex: SIG + '21' + '22' + '0024' + V6_ADDRESSES, invalidAt: 14 },
  { name: 'v2 family 4', hex: SIG + '21' + '41' + '000c' + V4_ADDRESSES, invalidAt: 14 },
  { name: 'v2 transport 3', hex: SIG + '21' + '13' + '000c' + V4_ADDRESSES, invalidAt: 14 },
  { name: 'v2 UNSPEC family, STREAM transport', hex: SIG + '21' + '01' + '0000', invalidAt: 14 },
  { name: 'v2 TCP4 length 11', hex: SIG + '21' + '11' + '000b' + V4_ADDRESSES, invalidAt: 16 },
  { name: 'v2 TCP6 length 35', hex: SIG + '21' + '21' + '0023' + V6_ADDRESSES, invalidAt: 16 },
  { name: 'v2 TCP6 length 16, no body sent', hex: SIG + '21' + '21' + '0010', invalidAt: 16 }
]

/** A result reduced to what the table states; `rest` as hex. */
function summary (r: ProxyParse): unknown {
  if (r.status === 'done') return { status: 'done', version: r.version, header: r.header ?? null, rest: r.rest.toString('hex') }
  if (r.status === 'invalid') return { status: r.reason.length > 0 ? 'invalid' : 'invalid without a reason' }
  return { status: 'incomplete' }
}

t.test('valid headers, from every prefix', async (t) => {
  for (const row of VALID) {
    const header = hex(row.hex)
    const all = Buffer.concat([header, hex(CONNECT)])
    const got: unknown[] = []
    const want: unknown[] = []
    for (let n = 0; n <= all.length; n++) {
      got.push(summary(parseProxyHeader(all.subarray(0, n))))
      want.push(n < header.length
        ? { status: 'incomplete' }
        : { status: 'done', version: row.version, header: row.header ?? null, rest: all.subarray(header.length, n).toString('hex') })
    }
    t.same(got, want, row.name)
  }
})

t.test('rest is a view into the bytes given, not a copy', async (t) => {
  const all = hex(VALID[0]?.hex + CONNECT)
  const r = parseProxyHeader(all)
  if (r.status !== 'done') throw new Error('expected done')
  t.equal(r.rest.buffer, all.buffer)
  t.equal(r.rest.byteOffset, all.byteOffset + all.length - CONNECT.length / 2)
})

t.test('invalid headers, refused as early as they can be', async (t) => {
  for (const row of INVALID) {
    const all = Buffer.concat([hex(row.hex), hex(CONNECT)])
    const at = row.invalidAt ?? row.hex.length / 2
    const got: unknown[] = []
    const want: unknown[] = []
    for (let n = 0; n <= all.length; n++) {
      got.push(summary(parseProxyHeader(all.subarray(0, n))))
      want.push({ status: n < at ? 'incomplete' : 'invalid' })
    }
    t.same(got, want, row.name)
  }
})

t.test('v2 with the largest length waits for all of it', async (t) => {
  // TCP4 addresses, then one NOOP TLV filling the rest of 65535 bytes.
  const tlv = 65535 - 12 - 3
  const all = hex(SIG + '21' + '11' + 'ffff' + V4_ADDRESSES + '04' + tlv.toString(16).padStart(4, '0') + '00'.repeat(tlv) + CONNECT)
  const end = 16 + 65535
  t.same(summary(parseProxyHeader(all.subarray(0, end - 1))), { status: 'incomplete' })
  t.same(summary(parseProxyHeader(all.subarray(0, end))), { status: 'done', version: 2, header: TCP4, rest: '' })
  t.same(summary(parseProxyHeader(all)), { status: 'done', version: 2, header: TCP4, rest: CONNECT })
})

t.test('encoder writes the fixture bytes', async (t) => {
  for (const row of VALID) {
    if (row.encoded === undefined) continue
    const encode = row.version === 1 ? encodeProxyV1 : encodeProxyV2
    t.equal(encode(row.encoded).toString('hex'), row.hex, row.name)
  }
})

t.test('encode → parse round trips', async (t) => {
  // [given, parsed back]: the encoder writes addresses in the header's family.
  const cases: Array<[string, ProxyAddress, ProxyAddress | undefined]> = [
    ['IPv4', TCP4, TCP4],
    ['IPv6', TCP6, TCP6],
    ['IPv6 mapped', MAPPED, MAPPED],
    ['IPv6 written long', { ...TCP6, sourceAddress: '2001:0DB8:0000::0001' }, TCP6],
    ['IPv6 with zone index', { ...TCP6, sourceAddress: 'fe80::1%eth0' }, { ...TCP6, sourceAddress: 'fe80::1' }],
    ['mapped given as IPv4', { ...TCP4, sourceAddress: '::ffff:192.0.2.1' }, TCP4],
    ['IPv4 given as IPv6', { ...TCP6, sourceAddress: '192.0.2.1' }, { ...TCP6, sourceAddress: '::ffff:192.0.2.1' }],
    ['IPv6 all ones and all zeros', addr('IPv6', FULL6, 0, '::', 65535), addr('IPv6', FULL6, 0, '::', 65535)],
    ['IPv6 with embedded IPv4 tail', { ...TCP6, sourceAddress: '64:ff9b::192.0.2.1' }, { ...TCP6, sourceAddress: '64:ff9b::c000:201' }],
    ['unknown', UNKNOWN, undefined]
  ]
  for (const [name, given, back] of cases) {
    for (const [version, encode] of [[1, encodeProxyV1], [2, encodeProxyV2]] as const) {
      const r = parseProxyHeader(Buffer.concat([encode(given), hex(CONNECT)]))
      t.same(summary(r), { status: 'done', version, header: back ?? null, rest: CONNECT }, `v${version} ${name}`)
    }
  }
})

t.test('encoder refuses what it cannot write', async (t) => {
  const bad: Array<[string, ProxyAddress]> = [
    ['IPv6 address in an IPv4 header', { ...TCP4, destinationAddress: '2001:db8::2' }],
    ['not an address', { ...TCP4, sourceAddress: 'localhost' }],
    ['empty address', { ...TCP6, sourceAddress: '' }],
    ['port 65536', { ...TCP4, sourcePort: 65536 }],
    ['port -1', { ...TCP4, destinationPort: -1 }],
    ['port 1.5', { ...TCP6, sourcePort: 1.5 }],
    ['port NaN', { ...TCP6, destinationPort: Number.NaN }]
  ]
  for (const [name, a] of bad) {
    t.throws(() => encodeProxyV1(a), Error, `v1 ${name}`)
    t.throws(() => encodeProxyV2(a), Error, `v2 ${name}`)
  }
})

t.test('never throws on damaged headers', async (t) => {
  const rand = mulberry32(7)
  const seeds = [...VALID, ...INVALID].map((row) => hex(row.hex + CONNECT))
  let thrown = 0
  for (let i = 0; i < 20_000; i++) {
    const base = Buffer.from(seeds[i % seeds.length] ?? Buffer.alloc(0))
    // One to three bytes changed, then cut at a random length.
    for (let k = 1 + Math.floor(rand() * 3); k > 0; k--) base[Math.floor(rand() * base.length)] = Math.floor(rand() * 256)
    try {
      const r = parseProxyHeader(base.subarray(0, Math.floor(rand() * (base.length + 1))))
      if (r.status === 'done' && r.rest.length > base.length) thrown++
    } catch {
      thrown++
    }
  }
  t.equal(thrown, 0)
})

t.test('compileTrusted', async (t) => {
  const cases: Array<[string[], string, boolean]> = [
    [['10.0.0.0/8'], '10.1.2.3', true],
    [['10.0.0.0/8'], '11.0.0.1', false],
    [['10.0.0.0/8'], '::ffff:10.1.2.3', true],
    [['10.0.0.0/8'], '::FFFF:10.1.2.3', true],
    [['10.0.0.0/8'], '::ffff:a01:203', true],
    [['10.0.0.0/8'], '::ffff:11.0.0.1', false],
    [['10.0.0.0/8'], '::10.1.2.3', false],
    [['127.0.0.1'], '127.0.0.1', true],
    [['127.0.0.1'], '::ffff:127.0.0.1', true],
    [['127.0.0.1'], '127.0.0.2', false],
    [['192.0.2.7/32'], '192.0.2.7', true],
    [['0.0.0.0/0'], '203.0.113.9', true],
    [['0.0.0.0/0'], '2001:db8::1', false],
    [['::1'], '::1', true],
    [['::1'], '0:0:0:0:0:0:0:1', true],
    [['::1'], '127.0.0.1', false],
    [['fd00::/8'], 'fd12:3456::1', true],
    [['fd00::/8'], 'fe80::1', false],
    [['fe80::/10'], 'fe80::1%eth0', true],
    [['::ffff:10.1.2.3'], '10.1.2.3', true],
    [['2001:db8::/32', '10.0.0.0/8'], '2001:db8:ffff::1', true],
    [['2001:db8::/32', '10.0.0.0/8'], '10.255.255.255', true],
    [['2001:db8::/32', '10.0.0.0/8'], '172.16.0.1', false],
    [[], '127.0.0.1', false],
    [['10.0.0.0/8'], '', false],
    [['10.0.0.0/8'], 'localhost', false]
  ]
  for (const [cidrs, address, expected] of cases) {
    t.equal(compileTrusted(cidrs)(address), expected, `${JSON.stringify(cidrs)} ${address}`)
  }
})

t.test('compileTrusted refuses bad rules, naming them', async (t) => {
  const bad = ['10.0.0.0/33', '::/129', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/8/8', '10.0.0.0/x',
    '10.0.0.256', '10.0.0', 'localhost', '', ' 10.0.0.1', 'fe80::1%eth0', '*']
  for (const cidr of bad) {
    let message = 'nothing thrown'
    try {
      compileTrusted(['127.0.0.1', cidr])
    } catch (err) {
      message = err instanceof Error ? err.message : String(err)
    }
    t.ok(message.startsWith(`trusted proxy ${JSON.stringify(cidr)}: `), `${JSON.stringify(cidr)}: ${message}`)
  }
})
