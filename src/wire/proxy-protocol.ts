// HAProxy PROXY protocol, v1 (text) and v2 (binary): reads the header a load balancer puts in
// front of the MQTT stream, and writes one towards a broker. Parsing takes every byte received
// so far and answers at once: no state is kept between calls, and a stream that cannot start
// with either signature is refused from its first byte, so a plain MQTT client is not left
// waiting for a timeout. Spec: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt

import { BlockList, SocketAddress, isIPv4, isIPv6 } from 'node:net'

export interface ProxyAddress {
  family: 'IPv4' | 'IPv6' | 'unknown'
  sourceAddress: string
  sourcePort: number
  destinationAddress: string
  destinationPort: number
}

/**
 * The outcome of reading the start of a connection. `header: undefined` for v1 `UNKNOWN` and
 * v2 LOCAL (health checks): use the socket's own address. `rest` is what followed the header in
 * the bytes given (the start of the MQTT stream); it is a view into them, not a copy.
 */
export type ProxyParse =
  | { status: 'incomplete' }
  | { status: 'done', header: ProxyAddress | undefined, version: 1 | 2, rest: Buffer }
  | { status: 'invalid', reason: string }

type IpFamily = 'IPv4' | 'IPv6'

const V1_PREFIX = Buffer.from('PROXY ', 'latin1')
// Longest v1 line, CRLF included: "PROXY TCP6 " plus two full IPv6 addresses and ports.
const V1_MAX = 107
const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex')
// Signature, version/command, family/protocol, 2-byte length.
const V2_FIXED = 16
const V2_LOCAL = 0x0
const V2_PROXY = 0x1
// Family/protocol bytes we accept, and what we read from each. AF_UNSPEC and AF_UNIX carry
// nothing a TCP socket could use, so they count as "no header"; UDP cannot carry MQTT here.
const V2_FAMILIES = new Map<number, IpFamily | 'none'>([
  [0x00, 'none'], [0x11, 'IPv4'], [0x21, 'IPv6'], [0x31, 'none'], [0x32, 'none']
])
const INCOMPLETE: ProxyParse = { status: 'incomplete' }

/** Parses the start of a stream (all bytes received so far). Never throws. */
export function parseProxyHeader (data: Buffer): ProxyParse {
  if (startsLike(data, V1_PREFIX)) return data.length < V1_PREFIX.length ? INCOMPLETE : parseV1(data)
  if (startsLike(data, V2_SIGNATURE)) return data.length < V2_SIGNATURE.length ? INCOMPLETE : parseV2(data)
  return invalid('no PROXY protocol header')
}

/** True while the bytes so far could still grow into `signature` (or already contain it). */
function startsLike (data: Buffer, signature: Buffer): boolean {
  const n = Math.min(data.length, signature.length)
  return data.subarray(0, n).equals(signature.subarray(0, n))
}

function parseV1 (data: Buffer): ProxyParse {
  // A bare LF ends the line too, so it is refused now rather than after 107 bytes.
  const lf = data.subarray(0, V1_MAX).indexOf(0x0a)
  if (lf === -1) return data.length < V1_MAX ? INCOMPLETE : invalid(`v1 header longer than ${V1_MAX} bytes`)
  if (data[lf - 1] !== 0x0d) return invalid('v1 header not ended by CRLF')
  const rest = data.subarray(lf + 1)
  const fields = data.toString('latin1', 0, lf - 1).split(' ')
  // The receiver must ignore whatever follows UNKNOWN on the line.
  if (fields[1] === 'UNKNOWN') return done(undefined, 1, rest)
  const family = fields[1] === 'TCP4' ? 'IPv4' : fields[1] === 'TCP6' ? 'IPv6' : undefined
  if (family === undefined) return invalid(`v1 unknown protocol ${JSON.stringify(fields[1])}`)
  if (fields.length !== 6) return invalid(`v1 ${fields[1]} needs 6 fields, got ${fields.length}`)
  const sourceAddress = v1Address(fields[2], family)
  const destinationAddress = v1Address(fields[3], family)
  if (sourceAddress === undefined || destinationAddress === undefined) return invalid(`v1 bad ${family} address`)
  const sourcePort = v1Port(fields[4])
  const destinationPort = v1Port(fields[5])
  if (sourcePort === undefined || destinationPort === undefined) return invalid('v1 bad port')
  return done({ family, sourceAddress, sourcePort, destinationAddress, destinationPort }, 1, rest)
}

function v1Address (text: string | undefined, family: IpFamily): string | undefined {
  if (text === undefined) return undefined
  if (family === 'IPv4') return isIPv4(text) ? text : undefined
  // A zone index means nothing to the receiving host.
  return isIPv6(text) && !text.includes('%') ? formatIPv6(text) : undefined
}

/** Plain decimal digits only: Number() would also take '+80', '0x50', '8e1' or ' 80'. */
function v1Port (text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,5}$/.test(text)) return undefined
  const port = Number(text)
  return port <= 65535 ? port : undefined
}

// Each check runs as soon as its byte is there, so a bad header fails without waiting for the
// (up to 64 KiB) body its length announces.
function parseV2 (data: Buffer): ProxyParse {
  const versionCommand = data[12]
  if (versionCommand === undefined) return INCOMPLETE
  if (versionCommand >> 4 !== 2) return invalid(`v2 unsupported version ${versionCommand >> 4}`)
  const command = versionCommand & 0x0f
  if (command !== V2_LOCAL && command !== V2_PROXY) return invalid(`v2 unknown command ${command}`)
  const familyByte = data[13]
  if (familyByte === undefined) return INCOMPLETE
  // LOCAL: the proxy's own connection (a health check). Its address block, whatever the
  // family byte says, is skipped unread.
  const family = command === V2_LOCAL ? 'none' : V2_FAMILIES.get(familyByte)
  if (family === undefined) return invalid(v2FamilyProblem(familyByte))
  if (data.length < V2_FIXED) return INCOMPLETE
  // A 16-bit length: the whole header is at most 16 + 65535 bytes.
  const length = data.readUInt16BE(14)
  const needed = family === 'IPv4' ? 12 : family === 'IPv6' ? 36 : 0
  if (length < needed) return invalid(`v2 ${family} needs ${needed} address bytes, length is ${length}`)
  if (data.length < V2_FIXED + length) return INCOMPLETE
  // TLVs after the addresses (ALPN, SSL, unique ID...) are skipped: nothing here uses them.
  const header = family === 'none' ? undefined : v2Addresses(data, family)
  return done(header, 2, data.subarray(V2_FIXED + length))
}

function v2FamilyProblem (familyByte: number): string {
  const hex = `0x${familyByte.toString(16).padStart(2, '0')}`
  return (familyByte & 0x0f) === 0x2 ? `v2 UDP (${hex}) is not supported` : `v2 unknown family/protocol ${hex}`
}

function v2Addresses (data: Buffer, family: IpFamily): ProxyAddress {
  const size = family === 'IPv4' ? 4 : 16
  const read = (at: number): string => {
    const bytes = data.subarray(at, at + size)
    if (family === 'IPv4') return bytes.join('.')
    const groups: string[] = []
    for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16))
    return formatIPv6(groups.join(':'))
  }
  const sourceAddress = read(V2_FIXED)
  const destinationAddress = read(V2_FIXED + size)
  const ports = V2_FIXED + 2 * size
  return { family, sourceAddress, sourcePort: data.readUInt16BE(ports), destinationAddress, destinationPort: data.readUInt16BE(ports + 2) }
}

function done (header: ProxyAddress | undefined, version: 1 | 2, rest: Buffer): ProxyParse {
  return { status: 'done', header, version, rest }
}

function invalid (reason: string): ProxyParse {
  return { status: 'invalid', reason }
}

/** Node's own compressed form (as socket.remoteAddress shows it). The input must be valid. */
function formatIPv6 (address: string): string {
  return new SocketAddress({ address, family: 'ipv6' }).address
}

/**
 * `address` as written in `family`: an IPv4-mapped IPv6 address becomes dotted IPv4 and back,
 * and a zone index is dropped. Undefined when it has no form in that family.
 */
function inFamily (address: string, family: IpFamily): string | undefined {
  const plain = address.split('%')[0] ?? ''
  if (isIPv4(plain)) return family === 'IPv4' ? plain : formatIPv6(`::ffff:${plain}`)
  if (!isIPv6(plain)) return undefined
  const v6 = formatIPv6(plain)
  if (family === 'IPv6') return v6
  const tail = v6.slice('::ffff:'.length)
  return v6.startsWith('::ffff:') && isIPv4(tail) ? tail : undefined
}

/** Addresses in the header's family and valid ports, or a thrown Error: a caller's bug. */
function checked (a: ProxyAddress, family: IpFamily): { source: string, destination: string } {
  const source = inFamily(a.sourceAddress, family)
  const destination = inFamily(a.destinationAddress, family)
  if (source === undefined || destination === undefined) {
    throw new Error(`PROXY header: ${a.sourceAddress} and ${a.destinationAddress} are not both ${family}`)
  }
  for (const port of [a.sourcePort, a.destinationPort]) {
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PROXY header: bad port ${port}`)
  }
  return { source, destination }
}

/**
 * Encodes a header to send towards a broker. Addresses are written in the header's family
 * where they can be (IPv4 <-> IPv4-mapped IPv6, as a dual-stack socket reports them); throws
 * Error when they cannot or a port is out of range.
 */
export function encodeProxyV1 (a: ProxyAddress): Buffer {
  if (a.family === 'unknown') return Buffer.from('PROXY UNKNOWN\r\n', 'latin1')
  const { source, destination } = checked(a, a.family)
  const protocol = a.family === 'IPv4' ? 'TCP4' : 'TCP6'
  return Buffer.from(`PROXY ${protocol} ${source} ${destination} ${a.sourcePort} ${a.destinationPort}\r\n`, 'latin1')
}

/**
 * Encodes a v2 header. `unknown` becomes LOCAL with no addresses, as HAProxy sends it: the
 * broker then uses the connection's own endpoints. No TLVs are written.
 */
export function encodeProxyV2 (a: ProxyAddress): Buffer {
  if (a.family === 'unknown') return Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])])
  const { source, destination } = checked(a, a.family)
  const v4 = a.family === 'IPv4'
  const size = v4 ? 4 : 16
  const ports = V2_FIXED + 2 * size
  const out = Buffer.alloc(ports + 4)
  V2_SIGNATURE.copy(out)
  out[12] = 0x20 | V2_PROXY
  out[13] = v4 ? 0x11 : 0x21
  out.writeUInt16BE(ports + 4 - V2_FIXED, 14)
  const bytes = v4 ? ipv4Bytes : ipv6Bytes
  bytes(source).copy(out, V2_FIXED)
  bytes(destination).copy(out, V2_FIXED + size)
  out.writeUInt16BE(a.sourcePort, ports)
  out.writeUInt16BE(a.destinationPort, ports + 2)
  return out
}

function ipv4Bytes (address: string): Buffer {
  return Buffer.from(address.split('.').map(Number))
}

/** 16 bytes of a valid IPv6 address (from formatIPv6, so lower case and no zone). */
function ipv6Bytes (address: string): Buffer {
  // A dotted IPv4 tail (::ffff:1.2.3.4) stands for the last two groups.
  const dotted = /\d+\.\d+\.\d+\.\d+$/.exec(address)
  const text = dotted === null
    ? address
    : address.slice(0, dotted.index) + ipv4Bytes(dotted[0]).toString('hex').replace(/^(.{4})/, '$1:')
  const [head = '', tail = ''] = text.split('::')
  const front = head === '' ? [] : head.split(':')
  const back = tail === '' ? [] : tail.split(':')
  const groups = [...front, ...Array<string>(8 - front.length - back.length).fill('0'), ...back]
  const out = Buffer.alloc(16)
  groups.forEach((group, i) => out.writeUInt16BE(parseInt(group, 16), 2 * i))
  return out
}

/**
 * True when `address` (as Node reports socket.remoteAddress, possibly '::ffff:1.2.3.4') is in
 * one of `cidrs` ('10.0.0.0/8', '127.0.0.1', '::1', 'fd00::/8'). Throws Error naming the first
 * bad entry, so a config with a typo fails at load rather than trusting nobody (or everybody).
 */
export function compileTrusted (cidrs: string[]): (address: string) => boolean {
  const list = new BlockList()
  for (const cidr of cidrs) addRule(list, cidr)
  return (address) => {
    // Mapped addresses are checked as IPv4 so that an IPv4 rule covers clients reaching a
    // dual-stack listener; BlockList does this too, but its docs do not promise it.
    const v4 = inFamily(address, 'IPv4')
    if (v4 !== undefined) return list.check(v4, 'ipv4')
    const v6 = inFamily(address, 'IPv6')
    return v6 !== undefined && list.check(v6, 'ipv6')
  }
}

function addRule (list: BlockList, cidr: string): void {
  const [address = '', prefix, extra] = cidr.split('/')
  const bad = (problem: string): Error => new Error(`trusted proxy ${JSON.stringify(cidr)}: ${problem}`)
  if (address.includes('%')) throw bad('a zone index (%) cannot be trusted')
  const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined
  if (family === undefined) throw bad('not an IPv4 or IPv6 address')
  if (extra !== undefined) throw bad('more than one "/"')
  const max = family === 'ipv4' ? 32 : 128
  // A single address is a subnet of full length.
  const bits = prefix === undefined ? max : /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN
  if (!(bits <= max)) throw bad(`prefix length must be 0..${max}`)
  list.addSubnet(address, bits, family)
}
