// A first-byte check for packets from clients, for every packet including those forwarded
// undecoded: a 256-entry table lookup per packet. The broker must never be the first to see
// a packet that would make it drop the connection without telling anyone why, and a plugin's
// view of a packet must never differ from the broker's.

import { GuardError } from '../errors.js'
import { FRAME_TYPE, fixedHeaderLength } from './codec.js'

const OK = 0
const MALFORMED = 1 // reserved flags wrong, QoS 3, DUP on QoS 0 [MQTT-2.1.3-1], [MQTT-3.3.1-4], [MQTT-3.3.1-2]
const WRONG_DIRECTION = 2 // a packet only a server sends, or AUTH in 3.1.1

function buildTable (v5: boolean): Uint8Array {
  const table = new Uint8Array(256).fill(WRONG_DIRECTION)
  const clientTypes: Array<[number, number]> = [
    [FRAME_TYPE.connect, 0], [FRAME_TYPE.puback, 0], [FRAME_TYPE.pubrec, 0], [FRAME_TYPE.pubrel, 2],
    [FRAME_TYPE.pubcomp, 0], [FRAME_TYPE.subscribe, 2], [FRAME_TYPE.unsubscribe, 2],
    [FRAME_TYPE.pingreq, 0], [FRAME_TYPE.disconnect, 0]
  ]
  if (v5) clientTypes.push([FRAME_TYPE.auth, 0])
  for (const [type, flags] of clientTypes) {
    for (let f = 0; f < 16; f++) table[(type << 4) | f] = f === flags ? OK : MALFORMED
  }
  for (let f = 0; f < 16; f++) {
    const qos = (f >> 1) & 3
    const dup = (f & 8) !== 0
    table[(FRAME_TYPE.publish << 4) | f] = qos === 3 || (qos === 0 && dup) ? MALFORMED : OK
  }
  return table
}

const TABLES = { v4: buildTable(false), v5: buildTable(true) }

/**
 * First bytes of the client packets that need no more than forwarding once they pass the check
 * above: PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP and PINGREQ with valid flags (the same in
 * 3.1.1 and 5). CONNECT, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT and AUTH are not among them.
 */
const PLAIN = (() => {
  const plain = new Uint8Array(256)
  const types: number[] = [FRAME_TYPE.publish, FRAME_TYPE.puback, FRAME_TYPE.pubrec, FRAME_TYPE.pubrel, FRAME_TYPE.pubcomp, FRAME_TYPE.pingreq]
  for (let first = 0; first < 256; first++) {
    if (types.includes(first >> 4) && TABLES.v4[first] === OK && TABLES.v5[first] === OK) plain[first] = 1
  }
  return plain
})()

/** True when a client packet starting with `first` passes checkClientFrame and needs nothing else. */
export function isPlainClientByte (first: number): boolean {
  return PLAIN[first] === 1
}

/** Smallest Remaining Length of a SUBSCRIBE/UNSUBSCRIBE with at least one filter [MQTT-3.8.3-3]. */
function minimumLength (type: number, v5: boolean): number {
  // packet ID (2) + [property length (1)] + filter length (2) + one character (1) + [options (1)]
  const base = 2 + (v5 ? 1 : 0) + 3
  return type === FRAME_TYPE.subscribe ? base + 1 : base
}

/** Throws GUARD_ERR_MALFORMED or GUARD_ERR_PROTOCOL for a client packet that is wrong on its face. */
export function checkClientFrame (frame: Buffer, v5: boolean): void {
  const first = frame[0] as number
  const verdict = (v5 ? TABLES.v5 : TABLES.v4)[first]
  if (verdict === OK) {
    const type = first >> 4
    if ((type === FRAME_TYPE.subscribe || type === FRAME_TYPE.unsubscribe) &&
        frame.length - fixedHeaderLength(frame) < minimumLength(type, v5)) {
      throw new GuardError('GUARD_ERR_PROTOCOL', `${type === FRAME_TYPE.subscribe ? 'SUBSCRIBE' : 'UNSUBSCRIBE'} without a topic filter`)
    }
    return
  }
  if (verdict === MALFORMED) throw new GuardError('GUARD_ERR_MALFORMED', `invalid flags 0x${(first & 15).toString(16)} for packet type ${first >> 4}`)
  throw new GuardError('GUARD_ERR_PROTOCOL', `packet type ${first >> 4} may not be sent by a client`)
}
