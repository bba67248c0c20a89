// Seeded fuzz input for the proxy: valid packets of every type for MQTT 3.1.1 and 5 (made with
// mqtt-packet), the ways to break them, and what the proxy must do with the result where the
// fixed header alone decides. The same seed gives the same cases in the same order.

import mqtt from 'mqtt-packet'
import type { Packet, PacketCmd } from 'mqtt-packet'
import { remainingLength } from './raw-client.js'

export { mulberry32 } from './prng.js'

export type Version = 4 | 5

export class Dice {
  constructor (readonly next: () => number) {}
  /** 0 .. n-1 */
  int (n: number): number { return Math.floor(this.next() * n) }
  /** lo .. hi, both included */
  between (lo: number, hi: number): number { return lo + this.int(hi - lo + 1) }
  chance (p: number): boolean { return this.next() < p }
  pick<T> (items: readonly T[]): T { return items[this.int(items.length)] as T }
  bytes (n: number): Buffer { return Buffer.from(Array.from({ length: n }, () => this.int(256))) }
}

/** Every packet type, in the order of their type numbers 1..15 [MQTT-2.1.2]. */
export const ALL_CMDS: readonly PacketCmd[] = ['connect', 'connack', 'publish', 'puback', 'pubrec', 'pubrel', 'pubcomp',
  'subscribe', 'suback', 'unsubscribe', 'unsuback', 'pingreq', 'pingresp', 'disconnect', 'auth']

const frameCmd = (bytes: Buffer): PacketCmd => ALL_CMDS[((bytes[0] as number) >> 4) - 1] as PacketCmd

/** The largest Remaining Length the encoding can express [MQTT-1.5.5]. */
export const MAX_REMAINING_LENGTH = 268_435_455

export function encode (packet: Packet, v: Version): Buffer {
  // AUTH exists only in MQTT 5; on a 3.1.1 connection it is sent as MQTT 5 bytes all the same.
  return mqtt.generate(packet, { protocolVersion: packet.cmd === 'auth' ? 5 : v })
}

/** A valid packet of type `cmd`; `tag` keeps client IDs and topics apart between cases. */
export function validPacket (cmd: PacketCmd, v: Version, dice: Dice, tag: string): Packet {
  const v5 = v === 5
  const messageId = dice.between(1, 0xffff)
  const reasonCode = v5 ? 0 : undefined
  const user = v5 && dice.chance(0.5) ? { userProperties: { fuzz: tag } } : undefined
  switch (cmd) {
    case 'connect': return {
      cmd, protocolId: 'MQTT', protocolVersion: v, clientId: `fuzz-${tag}`, clean: true, keepalive: 60,
      properties: v5 ? { sessionExpiryInterval: 0, receiveMaximum: 10, ...user } : undefined,
      will: dice.chance(0.3) ? { topic: `fuzz/${tag}/will`, payload: dice.bytes(8), qos: dice.pick([0, 1, 2] as const), retain: false } : undefined,
      username: dice.chance(0.3) ? 'fuzzer' : undefined
    }
    case 'connack': return { cmd, sessionPresent: false, ...(v5 ? { reasonCode: 0 } : { returnCode: 0 }) }
    case 'publish': {
      const qos = dice.pick([0, 1, 2] as const)
      const properties = v5 && dice.chance(0.5) ? { payloadFormatIndicator: false, messageExpiryInterval: 60, contentType: 'application/octet-stream', ...user } : undefined
      return { cmd, topic: `fuzz/${tag}`, payload: dice.bytes(dice.int(64)), qos, dup: false, retain: false, messageId: qos > 0 ? messageId : undefined, properties }
    }
    case 'puback': case 'pubrec': case 'pubrel': case 'pubcomp': return { cmd, messageId, reasonCode }
    case 'subscribe': return {
      cmd, messageId, subscriptions: [{ topic: `fuzz/${tag}/+`, qos: dice.pick([0, 1, 2] as const), ...(v5 ? { nl: false, rap: false, rh: 0 } : {}) }],
      properties: v5 && dice.chance(0.5) ? { subscriptionIdentifier: dice.between(1, 1000) } : undefined
    }
    case 'suback': return { cmd, messageId, granted: [1] }
    case 'unsubscribe': return { cmd, messageId, unsubscriptions: [`fuzz/${tag}/+`] }
    case 'unsuback': return { cmd, messageId, granted: v5 ? [0] : [] }
    case 'pingreq': case 'pingresp': return { cmd }
    case 'disconnect': return { cmd, reasonCode }
    case 'auth': return { cmd, reasonCode: 0x18, properties: { authenticationMethod: 'fuzz' } }
  }
}

// ---- hand-made packets: what mqtt-packet refuses to generate --------------------------------

const str = (s: string | Buffer): number[] => { const b = Buffer.from(s); return [b.length >> 8, b.length & 0xff, ...b] }
const u16 = (n: number): number[] => [(n >> 8) & 0xff, n & 0xff]
const u32 = (n: number): number[] => [(n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]

function frame (first: number, body: number[]): Buffer {
  return Buffer.from([first, ...remainingLength(body.length), ...body])
}

/** Property block: its variable byte length, then the properties [MQTT-2.2.2]. */
function propertyBlock (props: number[]): number[] {
  return [...remainingLength(props.length), ...props]
}

/** CONNECT with any client ID and connect flags (0x00: clean session off), and v5 properties. */
export function connectBytes (v: Version, clientId: string, flags: number, props: number[] = []): Buffer {
  return frame(0x10, [...str('MQTT'), v, flags, ...u16(60), ...(v === 5 ? propertyBlock(props) : []), ...str(clientId)])
}

/** PUBLISH with any topic bytes (invalid UTF-8, wildcards) and v5 properties. */
export function publishBytes (v: Version, topic: Buffer, qos: 0 | 1 | 2, props: number[], payload: Buffer): Buffer {
  return frame(0x30 | (qos << 1), [...str(topic), ...(qos > 0 ? u16(1) : []), ...(v === 5 ? propertyBlock(props) : []), ...payload])
}

type PropKind = 'byte' | 'u16' | 'u32' | 'var' | 'str'

// Properties that may appear at most once in each packet [MQTT-2.2.2-2], and their types.
const ONCE_ONLY: Record<'publish' | 'connect' | 'subscribe' | 'puback' | 'disconnect', ReadonlyArray<readonly [number, PropKind]>> = {
  publish: [[0x01, 'byte'], [0x02, 'u32'], [0x03, 'str'], [0x08, 'str']],
  connect: [[0x11, 'u32'], [0x21, 'u16'], [0x27, 'u32'], [0x22, 'u16'], [0x19, 'byte'], [0x17, 'byte']],
  // The Subscription Identifier repeats in a PUBLISH to a client, never in a SUBSCRIBE [MQTT-3.8.2.1.2].
  subscribe: [[0x0b, 'var']],
  puback: [[0x1f, 'str']],
  disconnect: [[0x1f, 'str'], [0x11, 'u32']]
}

type DuplicableCmd = keyof typeof ONCE_ONLY
const DUPLICABLE_CMDS = Object.keys(ONCE_ONLY) as DuplicableCmd[]

/** One value of a property; `zero` asks for 0 or empty where the type allows (not 'u16', 'var'). */
function propertyValue (kind: PropKind, zero: boolean, dice: Dice): number[] {
  switch (kind) {
    case 'byte': return [zero ? 0 : 1]
    // 0 is not a valid Receive Maximum, Topic Alias Maximum... or Subscription Identifier
    case 'u16': return u16(dice.between(1, 0xffff))
    case 'u32': return u32(zero ? 0 : dice.between(1, 0x7fffffff))
    case 'var': return remainingLength(dice.between(1, 0x0fffffff))
    case 'str': return str(zero ? '' : `v${dice.int(100)}`)
  }
}

/**
 * A v5 packet of type `cmd` whose properties hold one once-only property twice. `zero`: the
 * first value is 0 or empty where its type allows; `zeroed` says whether it was.
 */
export function duplicatePropertyPacket (cmd: DuplicableCmd, dice: Dice, tag: string, zero: boolean): { bytes: Buffer, zeroed: boolean } {
  const [id, kind] = dice.pick(ONCE_ONLY[cmd])
  const zeroed = zero && kind !== 'u16' && kind !== 'var'
  const props = [id, ...propertyValue(kind, zeroed, dice), id, ...propertyValue(kind, false, dice)]
  const bytes = ((): Buffer => {
    switch (cmd) {
      case 'publish': return publishBytes(5, Buffer.from(`fuzz/${tag}`), dice.pick([0, 1] as const), props, dice.bytes(8))
      case 'connect': return connectBytes(5, `fuzz-${tag}`, 0x02, props)
      case 'subscribe': return frame(0x82, [...u16(1), ...propertyBlock(props), ...str(`fuzz/${tag}`), 0x01])
      case 'puback': return frame(0x40, [...u16(1), 0x00, ...propertyBlock(props)])
      case 'disconnect': return frame(0xe0, [0x00, ...propertyBlock(props)])
    }
  })()
  return { bytes, zeroed }
}

/** Topic bytes that are not UTF-8 [MQTT-1.5.4-1]: overlong NUL, 0xFF, a lone surrogate, a cut sequence. */
export const INVALID_UTF8: readonly number[][] = [[0xc0, 0x80], [0xff], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf8, 0x88, 0x80, 0x80, 0x80]]
export const WILDCARD_TOPICS: readonly string[] = ['#', '+', 'fuzz/+/x', 'fuzz/#', 'fuzz/a+', '+/#']

// ---- mutations of whole frames ----------------------------------------------------------------

/** Fixed header length: type byte plus Remaining Length bytes (at most 4 counted). */
export function headerLength (bytes: Buffer): number {
  let i = 1
  while (i < bytes.length && i < 5 && ((bytes[i] as number) & 0x80) !== 0) i++
  return i + 1
}

export function flipBits (bytes: Buffer, dice: Dice): Buffer {
  const out = Buffer.from(bytes)
  const flips = dice.between(1, 4)
  for (let i = 0; i < flips; i++) {
    // half the flips land in the fixed header, where one bit changes the most
    const at = dice.chance(0.5) ? dice.int(Math.min(out.length, headerLength(out))) : dice.int(out.length)
    out[at] = (out[at] as number) ^ (1 << dice.int(8))
  }
  return out
}

/** The frame with a new Remaining Length; the body is kept, cut or padded as `body` says. */
export function withRemainingLength (bytes: Buffer, length: number, body: Buffer = bytes.subarray(headerLength(bytes))): Buffer {
  return Buffer.concat([bytes.subarray(0, 1), Buffer.from(remainingLength(length)), body])
}

/** Remaining Lengths from just over `limit` up to the maximum, the boundaries most of all. */
export function hugeLength (dice: Dice, limit: number): number {
  return dice.pick([MAX_REMAINING_LENGTH, limit - 3, limit - 2, limit + dice.int(1000), 2_097_152, 16_384 + limit, dice.between(limit, MAX_REMAINING_LENGTH)])
}

/** A Remaining Length padded with 0x80 continuation bytes: not minimal [MQTT-1.5.5], still at most 4. */
export function paddedLength (bytes: Buffer): Buffer {
  const body = bytes.subarray(headerLength(bytes))
  const length = remainingLength(body.length)
  if (length.length >= 4) return bytes
  const padded = length.map((b) => b | 0x80)
  padded.push(...new Array<number>(3 - length.length).fill(0x80), 0x00)
  return Buffer.concat([bytes.subarray(0, 1), Buffer.from(padded.slice(0, 4)), body])
}

// ---- what the fixed header decides ------------------------------------------------------------

const BAD_HEADER = ['GUARD_ERR_MALFORMED', 'GUARD_ERR_PROTOCOL']

/** Can a client send this first byte? Types and their fixed flags per [MQTT-2.1.3-1]. */
function clientFirstByteOk (first: number, v: Version): boolean {
  const type = first >> 4
  const flags = first & 0x0f
  if (type === 3) {
    const qos = (flags >> 1) & 3
    return qos !== 3 && !(qos === 0 && (flags & 0x08) !== 0) // [MQTT-3.3.1-4], [MQTT-3.3.1-2]
  }
  const required: Record<number, number> = { 1: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 10: 2, 12: 0, 14: 0 }
  if (v === 5) required[15] = 0
  return required[type] === flags
}

/** Fixed header length and Remaining Length; 'malformed' for a fifth length byte; undefined if cut short. */
function readLength (bytes: Buffer): { header: number, remaining: number } | 'malformed' | undefined {
  let remaining = 0
  for (let i = 1, multiplier = 1; i <= 4; i++, multiplier *= 128) {
    const byte = bytes[i]
    if (byte === undefined) return undefined
    remaining += (byte & 0x7f) * multiplier
    if ((byte & 0x80) === 0) return { header: i + 1, remaining }
  }
  return 'malformed' // [MQTT-1.5.5-1]
}

/**
 * What the proxy must do with `bytes` on the strength of their first fixed header: refuse a
 * length over `limit` before reading the body, a fifth length byte, a packet a client may not
 * send or one with the wrong flags [MQTT-2.1.3-1]; as the first packet, anything but a CONNECT
 * of a level it speaks [MQTT-3.1.0-1], [MQTT-3.1.2-2]. undefined: the header does not decide, or is cut short.
 */
export function judgeHeader (bytes: Buffer, v: Version, phase: 'connect' | 'relay', limit: number): string[] | undefined {
  const length = readLength(bytes)
  if (length === undefined) return undefined
  if (length === 'malformed') return ['GUARD_ERR_MALFORMED']
  const end = length.header + length.remaining
  if (end > limit) return ['GUARD_ERR_PACKET_TOO_LARGE']
  if (bytes.length < end) return undefined
  const first = bytes[0] as number
  if (phase === 'relay') {
    if (!clientFirstByteOk(first, v)) return BAD_HEADER
    return first >> 4 === 1 ? ['GUARD_ERR_PROTOCOL'] : undefined // a second CONNECT [MQTT-3.1.0-2]
  }
  if (first >> 4 !== 1) return ['GUARD_ERR_PROTOCOL']
  const flags = (first & 0x0f) === 0 ? [] : ['GUARD_ERR_MALFORMED']
  if (length.header + 2 > end) return ['GUARD_ERR_MALFORMED']
  const levelAt = length.header + 2 + bytes.readUInt16BE(length.header)
  if (levelAt >= end) return ['GUARD_ERR_MALFORMED']
  // either fault may be the one noticed first
  if (![3, 4, 5].includes(bytes[levelAt] as number)) return [...flags, 'GUARD_ERR_UNSUPPORTED_PROTOCOL']
  return flags.length > 0 ? flags : undefined
}

/**
 * Framing faults after the first packet of `bytes`: a proxy still busy with an earlier packet
 * (a hook awaiting) reads ahead, and may refuse a later header first.
 */
export function laterFraming (bytes: Buffer, limit: number): string[] {
  let offset = 0
  for (let i = 0; offset < bytes.length; i++) {
    const length = readLength(bytes.subarray(offset))
    if (length === undefined || (length === 'malformed' && i === 0)) return []
    if (length === 'malformed') return ['GUARD_ERR_MALFORMED']
    const size = length.header + length.remaining
    if (i > 0 && size > limit) return ['GUARD_ERR_PACKET_TOO_LARGE']
    offset += size
  }
  return []
}

// ---- cases ------------------------------------------------------------------------------------

export interface FuzzCase {
  index: number
  /** `v5 relay bitflip publish`: version, path, mutation, the packet type it started from. */
  name: string
  kind: Kind
  /** The packet type the mutation started from ('random' for random bytes). */
  from: string
  /** A detail of the mutation that matters to the outcome, e.g. 'first value zero'. */
  note: string | undefined
  version: Version
  /** A valid CONNECT, answered by CONNACK before `bytes` go out; undefined: `bytes` come first. */
  connect: Buffer | undefined
  bytes: Buffer
  /** Where in `bytes` the mutated packet starts, after any valid packets sent before it. */
  at: number
  /** Offsets where `bytes` is cut into separate writes. */
  splits: number[]
  /** Codes one of which the proxy must close with, decided by the fixed header alone. */
  framing: string[] | undefined
  /** Codes one of which the proxy must close with where it decodes the packet (a CONNECT, always). */
  decoded: string[] | undefined
  /** Someone (the proxy or the broker) must close the connection. */
  mustClose: boolean
  /** The CONNACK code the client must get (the broker's refusal, passed on). */
  connack: number | undefined
}

type Mutated = Pick<FuzzCase, 'bytes' | 'from'> & Partial<Pick<FuzzCase, 'decoded' | 'mustClose' | 'connack' | 'note'>> & { phase: 'connect' | 'relay' }

const KINDS = {
  valid: 6, bitflip: 20, truncate: 6, 'cut-length': 5, extend: 4, 'huge-length': 10, 'small-length': 4, 'padded-length': 2,
  flags: 7, qos3: 5, utf8: 5, wildcard: 5, 'dup-props': 7, 'empty-id': 3, 'after-disconnect': 5, random: 6
} as const
export type Kind = keyof typeof KINDS
const WEIGHT = Object.values(KINDS).reduce((a, b) => a + b, 0)

function pickKind (dice: Dice): Kind {
  let roll = dice.int(WEIGHT)
  for (const [kind, weight] of Object.entries(KINDS) as Array<[Kind, number]>) {
    if (roll < weight) return kind
    roll -= weight
  }
  return 'random'
}

/** A valid packet to start from: mostly a CONNECT where it opens the connection. */
function base (phase: 'connect' | 'relay', v: Version, dice: Dice, tag: string): { cmd: PacketCmd, bytes: Buffer } {
  const cmd = phase === 'connect' && dice.chance(0.8) ? 'connect' : dice.pick(ALL_CMDS)
  return { cmd, bytes: encode(validPacket(cmd, v, dice, tag), v) }
}

function mutate (kind: Kind, v: Version, dice: Dice, tag: string, limit: number): Mutated {
  const phase = dice.chance(0.25) ? 'connect' : 'relay'
  const { cmd, bytes } = base(phase, v, dice, tag)
  const body = bytes.subarray(headerLength(bytes))
  const publish = (topic: Buffer): Buffer => publishBytes(v, topic, dice.pick([0, 1, 2] as const), [], dice.bytes(8))
  switch (kind) {
    case 'valid': return { phase, from: cmd, bytes, mustClose: cmd === 'disconnect' && phase === 'relay' }
    case 'bitflip': return { phase, from: cmd, bytes: flipBits(bytes, dice) }
    case 'truncate': return { phase, from: cmd, bytes: bytes.subarray(0, dice.int(bytes.length - 1) + 1) }
    case 'cut-length': return { phase, from: cmd, bytes: withRemainingLength(bytes, dice.int(body.length + 1), body.subarray(0, dice.int(body.length + 1))) }
    case 'extend': {
      const longer = Buffer.concat([body, dice.bytes(dice.between(1, 16))])
      return { phase, from: cmd, bytes: withRemainingLength(bytes, longer.length, longer) }
    }
    case 'huge-length': return { phase, from: cmd, bytes: withRemainingLength(bytes, hugeLength(dice, limit)) }
    case 'small-length': return { phase, from: cmd, bytes: withRemainingLength(bytes, dice.int(limit - 4)) }
    case 'padded-length': return { phase, from: cmd, bytes: paddedLength(bytes) }
    case 'flags': {
      const first = bytes[0] as number
      const flags = (first + dice.between(1, 15)) & 0x0f // always different from the valid flags
      return { phase, from: cmd, bytes: Buffer.concat([Buffer.from([(first & 0xf0) | flags]), bytes.subarray(1)]) }
    }
    case 'qos3': {
      const valid = encode(validPacket('publish', v, dice, tag), v)
      return { phase: 'relay', from: 'publish', bytes: Buffer.concat([Buffer.from([(valid[0] as number) | 0x06]), valid.subarray(1)]) }
    }
    case 'utf8': return { phase: 'relay', from: 'publish', bytes: publish(Buffer.from([...Buffer.from('fuzz/'), ...dice.pick(INVALID_UTF8), 0x78])), decoded: ['GUARD_ERR_MALFORMED'] }
    case 'wildcard': return { phase: 'relay', from: 'publish', bytes: publish(Buffer.from(dice.pick(WILDCARD_TOPICS))), decoded: ['GUARD_ERR_TOPIC_INVALID'] }
    case 'dup-props': { // v is 5: see makeCase
      const { bytes, zeroed } = duplicatePropertyPacket(dice.pick(DUPLICABLE_CMDS), dice, tag, dice.chance(0.3))
      const from = frameCmd(bytes)
      return { phase: from === 'connect' ? 'connect' : 'relay', from, note: zeroed ? 'first value zero' : undefined, bytes, decoded: ['GUARD_ERR_PROTOCOL'] }
    }
    case 'empty-id': {
      // [MQTT-3.1.3-8]: 3.1.1 refuses an empty client ID without a clean session, CONNACK 0x02.
      const follow = dice.chance(0.5) ? encode(validPacket('publish', v, dice, tag), v) : Buffer.alloc(0)
      return { phase: 'connect', from: 'connect', bytes: Buffer.concat([connectBytes(v, '', 0x00), follow]), mustClose: v === 4, connack: v === 4 ? 2 : undefined }
    }
    case 'after-disconnect': {
      const after = Array.from({ length: dice.between(1, 3) }, () => base('relay', v, dice, tag).bytes).map((b) => dice.chance(0.5) ? flipBits(b, dice) : b)
      return { phase: 'relay', from: 'disconnect', bytes: Buffer.concat([encode({ cmd: 'disconnect', reasonCode: v === 5 ? 0 : undefined }, v), ...after]), mustClose: true }
    }
    case 'random': return { phase, from: 'random', bytes: dice.bytes(dice.between(1, 300)) }
  }
}

/** Case `index` of a run; `limit` is the proxy's maxPacketSize. */
export function makeCase (index: number, dice: Dice, limit: number): FuzzCase {
  const kind = pickKind(dice)
  const tag = String(index)
  const v: Version = kind === 'dup-props' ? 5 : dice.pick([4, 5] as const)
  const m = mutate(kind, v, dice, tag, limit)
  let framing = judgeHeader(m.bytes, v, m.phase, limit)
  let bytes = m.bytes
  if (m.phase === 'relay' && kind !== 'after-disconnect' && dice.chance(0.15)) {
    // valid traffic first: the bad packet arrives in the middle of a stream
    const before = Array.from({ length: dice.between(1, 2) }, () => encode(validPacket(dice.pick(['publish', 'pingreq'] as const), v, dice, tag), v))
    bytes = Buffer.concat([...before, bytes])
    if (framing !== undefined) framing = [...new Set([...framing, ...laterFraming(m.bytes, limit)])]
  }
  const splits = dice.chance(0.3) && bytes.length > 1
    ? [...new Set(Array.from({ length: dice.between(1, 3) }, () => dice.between(1, bytes.length - 1)))].sort((a, b) => a - b)
    : []
  return {
    index,
    name: `v${v} ${m.phase} ${kind} ${m.from}${m.note === undefined ? '' : ` (${m.note})`}`,
    kind,
    from: m.from,
    note: m.note,
    version: v,
    // A client ID no bit flip of a fuzzed CONNECT's ID can reach: no takeover closes this one.
    connect: m.phase === 'relay' ? encode(validPacket('connect', v, dice, `relay-${tag}`), v) : undefined,
    bytes,
    at: bytes.length - m.bytes.length,
    splits,
    framing,
    decoded: m.decoded,
    mustClose: m.mustClose ?? false,
    connack: m.connack
  }
}
