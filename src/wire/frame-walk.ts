// The checks mqtt-packet does not make, done on the bytes of a frame it has just decoded:
// - every MQTT 5 property list is walked and a property that appears twice is refused
//   [MQTT-2.2.2-2] (mqtt-packet only notices repeats of truthy values: a repeated 0, false
//   or empty string slipped through);
// - CONNECT, CONNACK, the PUBACK family, DISCONNECT, AUTH, PINGREQ and PINGRESP end where
//   their last field ends: bytes after it make the packet malformed;
// - strings that must be UTF-8 (client ID, will topic, user name, topic filters) are
//   [MQTT-1.5.4-1] and hold no U+0000 [MQTT-1.5.4-2], and a 3.1.1 password comes with a
//   user name [MQTT-3.1.2-22].
// One pass over bytes already in cache, with no allocation unless something is wrong.

import { isUtf8 } from 'node:buffer'
import { GuardError } from '../errors.js'

const BYTE = 1
const TWO = 2
const FOUR = 4
const VARINT = 5
const UTF8 = 6
const BINARY = 7
const PAIR = 8

/** Value type of each MQTT 5 property identifier [MQTT-2.2.2.2]; 0 = not a property. */
const PROPERTY_TYPE = new Uint8Array(64)
for (const [id, type] of [
  [0x01, BYTE], [0x02, FOUR], [0x03, UTF8], [0x08, UTF8], [0x09, BINARY], [0x0b, VARINT],
  [0x11, FOUR], [0x12, UTF8], [0x13, TWO], [0x15, UTF8], [0x16, BINARY], [0x17, BYTE],
  [0x18, FOUR], [0x19, BYTE], [0x1a, UTF8], [0x1c, UTF8], [0x1f, UTF8], [0x21, TWO],
  [0x22, TWO], [0x23, TWO], [0x24, BYTE], [0x25, BYTE], [0x26, PAIR], [0x27, FOUR],
  [0x28, BYTE], [0x29, BYTE], [0x2a, BYTE]
] as const) PROPERTY_TYPE[id] = type

const USER_PROPERTY = 0x26
const SUBSCRIPTION_IDENTIFIER = 0x0b

function malformed (message: string): GuardError {
  return new GuardError('GUARD_ERR_MALFORMED', message)
}

/** Walks frames; `at` is the read position, so no tuple is allocated per field. */
class Walk {
  at = 0

  /** Walking a CONNECT's will properties. */
  inWill = false

  constructor (readonly frame: Buffer, private readonly cmd: string) {}

  /** What the messages call the packet; made only when one is thrown. */
  get where (): string {
    return `${this.cmd.toUpperCase()}${this.inWill ? ' will' : ''}`
  }

  need (n: number): void {
    if (this.at + n > this.frame.length) throw malformed(`${this.where} truncated`)
  }

  byte (): number {
    this.need(1)
    return this.frame[this.at++] as number
  }

  skip (n: number): void {
    this.need(n)
    this.at += n
  }

  varint (): number {
    let value = 0
    for (let shift = 0; shift < 28; shift += 7) {
      const b = this.byte()
      value += (b & 0x7f) * 2 ** shift
      if ((b & 0x80) === 0) return value
    }
    throw malformed(`${this.where}: variable byte integer longer than four bytes`)
  }

  /** A length-prefixed field; returns its start, leaves `at` after it. */
  field (): number {
    this.need(2)
    const length = this.frame.readUInt16BE(this.at)
    this.at += 2
    const start = this.at
    this.skip(length)
    return start
  }

  /** A UTF-8 string: valid [MQTT-1.5.4-1] and without U+0000 [MQTT-1.5.4-2]. */
  utf8 (what: string): void {
    const bytes = this.frame.subarray(this.field(), this.at)
    if (!isUtf8(bytes)) throw malformed(`${this.where} ${what} is not valid UTF-8`)
    if (bytes.includes(0)) throw malformed(`${this.where} ${what} contains U+0000`)
  }

  /** An MQTT 5 property list: each identifier known and, but for the repeatable ones, once. */
  properties (subscriptionIdsRepeat = false): void {
    const length = this.varint()
    this.need(length)
    const end = this.at + length
    let seenLow = 0 // identifiers 0..31
    let seenHigh = 0 // 32..63
    while (this.at < end) {
      const id = this.frame[this.at++] as number
      const type = id < 64 ? PROPERTY_TYPE[id] as number : 0
      if (type === 0) throw malformed(`${this.where}: unknown property 0x${id.toString(16)}`)
      const bit = 1 << (id & 31)
      const seen = id < 32 ? seenLow : seenHigh
      if ((seen & bit) !== 0 && id !== USER_PROPERTY && !(id === SUBSCRIPTION_IDENTIFIER && subscriptionIdsRepeat)) {
        throw new GuardError('GUARD_ERR_PROTOCOL', `${this.where} property 0x${id.toString(16).padStart(2, '0')} appears more than once`)
      }
      if (id < 32) seenLow |= bit
      else seenHigh |= bit
      switch (type) {
        case BYTE: case TWO: case FOUR: this.skip(type); break
        case VARINT: this.varint(); break
        case UTF8: case BINARY: this.field(); break
        default: this.field(); this.field() // PAIR
      }
      if (this.at > end) throw malformed(`${this.where}: a property runs past the property length`)
    }
  }

  end (): void {
    const extra = this.frame.length - this.at
    if (extra !== 0) throw malformed(`${this.where} has ${extra} byte${extra === 1 ? '' : 's'} after its last field`)
  }
}

/**
 * Checks a frame mqtt-packet decoded as `cmd` (its name, as in mqtt-packet) for a connection
 * of protocol `version`. `start` is the length of the fixed header. Throws GUARD_ERR_MALFORMED
 * or GUARD_ERR_PROTOCOL.
 */
export function walkFrame (frame: Buffer, start: number, cmd: string, version: number): void {
  const v5 = version === 5
  const remaining = frame.length - start
  const walk = new Walk(frame, cmd)
  walk.at = start
  switch (cmd) {
    case 'connect': return walkConnect(walk)
    case 'connack':
      walk.skip(2)
      if (v5) walk.properties()
      return walk.end()
    case 'publish': {
      walk.field()
      if (((frame[0] as number) & 0x06) !== 0) walk.skip(2)
      if (v5) walk.properties(true)
      return
    }
    case 'puback': case 'pubrec': case 'pubrel': case 'pubcomp':
      walk.skip(2)
      if (v5 && remaining > 2) walk.skip(1)
      if (v5 && remaining > 3) walk.properties()
      return walk.end()
    case 'subscribe': case 'unsubscribe':
      walk.skip(2)
      if (v5) walk.properties()
      while (walk.at < frame.length) {
        walk.utf8('topic filter')
        if (cmd === 'subscribe') walk.skip(1)
      }
      return walk.end()
    case 'suback': case 'unsuback':
      walk.skip(2)
      if (v5) walk.properties()
      return
    case 'disconnect': case 'auth':
      if (v5 && remaining > 0) walk.skip(1)
      if (v5 && remaining > 1) walk.properties()
      return walk.end()
    case 'pingreq': case 'pingresp':
      return walk.end()
    default:
      return undefined
  }
}

function walkConnect (walk: Walk): void {
  walk.field() // protocol name, checked by mqtt-packet
  const version = walk.byte() & 0x7f // bit 7: bridge flag (Mosquitto)
  const flags = walk.byte()
  if (((flags >> 3) & 3) === 3) throw malformed('CONNECT will QoS 3') // [MQTT-3.1.2-14]
  walk.skip(2) // keepalive
  const v5 = version === 5
  if (v5) walk.properties()
  walk.utf8('client identifier')
  if ((flags & 0x04) !== 0) {
    if (v5) {
      walk.inWill = true
      walk.properties()
      walk.inWill = false
    }
    walk.utf8('will topic')
    walk.field() // will payload: binary
  }
  if ((flags & 0x80) !== 0) walk.utf8('user name')
  if ((flags & 0x40) !== 0) {
    if (!v5 && (flags & 0x80) === 0) throw new GuardError('GUARD_ERR_PROTOCOL', 'CONNECT has a password without a user name') // [MQTT-3.1.2-22]
    walk.field()
  }
  walk.end()
}
