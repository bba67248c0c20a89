import t from 'tap'
import { checkClientFrame, isPlainClientByte } from '../../src/wire/header-check.js'

// The plain path forwards a client packet on its first byte alone: it must be exactly the
// bytes that pass the check (in both versions) among the types that need nothing else.
const PLAIN_TYPES = new Set([3, 4, 5, 6, 7, 12]) // PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, PINGREQ

function passes (first: number, v5: boolean): boolean {
  try {
    checkClientFrame(Buffer.from([first, 2, 0, 1]), v5)
    return true
  } catch {
    return false
  }
}

t.test('a first byte is plain exactly when it passes the check in 3.1.1 and 5 and its type needs nothing else', async (t) => {
  const wrong: number[] = []
  for (let first = 0; first < 256; first++) {
    const expected = PLAIN_TYPES.has(first >> 4) && passes(first, false) && passes(first, true)
    if (isPlainClientByte(first) !== expected) wrong.push(first)
  }
  t.same(wrong, [])
  t.ok(isPlainClientByte(0x30) && isPlainClientByte(0x32) && isPlainClientByte(0x62) && isPlainClientByte(0xc0), 'PUBLISH QoS 0 and 1, PUBREL, PINGREQ')
  t.notOk(isPlainClientByte(0x36) || isPlainClientByte(0x38) || isPlainClientByte(0x60), 'QoS 3, DUP on QoS 0, PUBREL without its flags')
  t.notOk(isPlainClientByte(0x10) || isPlainClientByte(0x82) || isPlainClientByte(0xe0), 'CONNECT, SUBSCRIBE and DISCONNECT take the lane')
})
