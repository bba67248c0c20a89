// Framer: a table of byte streams, each checked as given, one byte at a time and in seeded
// random splits. Frames are compared as hex (long ones by length and digest).

import { createHash } from 'node:crypto'
import t from 'tap'
import { Framer, MAX_REMAINING_LENGTH } from '../../src/wire/framer.js'
import { GuardError } from '../../src/errors.js'
import { mulberry32 } from '../helpers/prng.js'
import type { ErrorCode } from '../../src/errors.js'

interface Row {
  name: string
  chunks: string[]
  max: number
  frames: string[]
  error?: ErrorCode
}

const hex = (s: string): Buffer => Buffer.from(s, 'hex')
const zeros = (n: number): string => '00'.repeat(n)
const show = (b: Buffer): string =>
  b.length <= 64 ? b.toString('hex') : `${b.length}:${createHash('sha256').update(b).digest('hex')}`

/** Remaining Length encoding from MQTT 3.1.1 §2.2.3 (written out, not taken from the framer). */
function varint (n: number): string {
  const out: number[] = []
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    out.push(byte)
  } while (n > 0)
  return Buffer.from(out).toString('hex')
}

const PING = 'c000'
const PUB = '30070003612f626869' // PUBLISH a/b "hi", 9 bytes
const PUBACK = '4002000a'

// Remaining Length boundaries [MQTT-2.2.3]: [value, expected encoding].
const BOUNDARIES: Array<[number, string]> = [
  [0, '00'], [127, '7f'], [128, '8001'], [16383, 'ff7f'],
  [16384, '808001'], [2097151, 'ffff7f'], [2097152, '80808001'], [MAX_REMAINING_LENGTH, 'ffffff7f']
]

const rows: Row[] = [
  { name: 'one packet per chunk', chunks: [PING, PUB, PUBACK], max: 100, frames: [PING, PUB, PUBACK] },
  { name: 'several packets in one chunk', chunks: [PING + PUB + PUBACK + PING], max: 100, frames: [PING, PUB, PUBACK, PING] },
  { name: 'packet split inside body', chunks: ['3007000361', '2f626869'], max: 100, frames: [PUB] },
  { name: 'packet split after type byte', chunks: ['30', '07000361', '2f626869' + PING], max: 100, frames: [PUB, PING] },
  { name: 'tail of one packet, head of the next', chunks: [PUB.slice(0, 6), PUB.slice(6) + PUBACK.slice(0, 4), PUBACK.slice(4)], max: 100, frames: [PUB, PUBACK] },
  { name: 'empty chunks are harmless', chunks: ['', PING, '', '30', '', '07000361', '', '2f626869', ''], max: 100, frames: [PING, PUB] },
  // Two-byte header stays held across a multi-byte length.
  { name: 'length bytes split across chunks', chunks: ['30', '80', '01', zeros(128)], max: 1000, frames: ['308001' + zeros(128)] },
  // Fifth length byte [MQTT-1.5.5-1 / MQTT-2.2.3]: refused when the 4th byte still continues.
  { name: 'fifth length byte', chunks: ['30ffffffff01'], max: 1000, frames: [], error: 'GUARD_ERR_MALFORMED' },
  { name: 'fifth length byte after frames', chunks: [PING + '3080808080'], max: 1000, frames: [PING], error: 'GUARD_ERR_MALFORMED' },
  { name: 'fifth length byte, max huge', chunks: ['30ff', 'ffff', 'ff'], max: Number.MAX_SAFE_INTEGER, frames: [], error: 'GUARD_ERR_MALFORMED' },
  // Limit counts the whole packet: fixed header plus body.
  { name: 'exactly at the limit', chunks: [PUB], max: 9, frames: [PUB] },
  { name: 'one over the limit', chunks: [PUB], max: 8, frames: [], error: 'GUARD_ERR_PACKET_TOO_LARGE' },
  { name: 'zero-length packet at limit 2', chunks: [PING], max: 2, frames: [PING] },
  { name: 'zero-length packet over limit 1', chunks: [PING], max: 1, frames: [], error: 'GUARD_ERR_PACKET_TOO_LARGE' },
  { name: 'too large after good frames in same chunk', chunks: [PING + PUBACK + PUB], max: 8, frames: [PING, PUBACK], error: 'GUARD_ERR_PACKET_TOO_LARGE' },
  // After an error everything else is ignored, including otherwise valid packets.
  { name: 'input after error ignored', chunks: [PING, '30ffffffff', PING, PUB], max: 100, frames: [PING], error: 'GUARD_ERR_MALFORMED' },
  { name: 'input after too-large ignored', chunks: ['300a', PING + PING], max: 4, frames: [], error: 'GUARD_ERR_PACKET_TOO_LARGE' }
]

// Each boundary: accepted exactly at the limit and refused one byte under it. The large ones
// carry only their header: the error fires before any body arrives, so nothing was buffered.
for (const [len, enc] of BOUNDARIES) {
  t.equal(varint(len), enc, `spec encoding of ${len}`)
  const header = '30' + enc
  const total = header.length / 2 + len
  if (len <= 2097152) {
    const packet = header + zeros(len)
    rows.push({ name: `length ${len} at limit`, chunks: [packet, PING], max: total, frames: [packet, PING] })
  }
  if (total - 1 >= 2) {
    rows.push({ name: `length ${len} one over limit, header only`, chunks: [header], max: total - 1, frames: [], error: 'GUARD_ERR_PACKET_TOO_LARGE' })
  }
}
rows.push({ name: 'max remaining length with limit just below, header only', chunks: ['30ffffff7f'], max: MAX_REMAINING_LENGTH + 4, frames: [], error: 'GUARD_ERR_PACKET_TOO_LARGE' })

function randomSplit (all: Buffer, seed: number): Buffer[] {
  const rand = mulberry32(seed)
  const out: Buffer[] = []
  let at = 0
  while (at < all.length) {
    // Mostly short pieces, sometimes a long one, sometimes empty.
    const r = rand()
    const size = r < 0.1 ? 0 : r < 0.8 ? 1 + Math.floor(rand() * 8) : Math.floor(rand() * (all.length - at + 1))
    out.push(all.subarray(at, at + size))
    at += size
  }
  return out
}

function byteAtATime (all: Buffer): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < all.length; i++) out.push(all.subarray(i, i + 1))
  return out
}

interface Outcome { frames: string[], error: ErrorCode | undefined, holdingOk: boolean, errors: number }

function feed (chunks: Buffer[], max: number): Outcome {
  const frames: string[] = []
  let emitted = 0
  let pushed = 0
  let error: ErrorCode | undefined
  let errors = 0
  let holdingOk = true
  const framer = new Framer(max, (f) => { frames.push(show(f)); emitted += f.length })
  for (const chunk of chunks) {
    try {
      framer.push(chunk)
    } catch (err) {
      errors++
      if (!(err instanceof GuardError)) throw err
      error = err.code
    }
    pushed += chunk.length
    // Until an error, the framer holds bytes exactly when the stream stops mid-packet.
    if (error === undefined && framer.holding !== (pushed !== emitted)) holdingOk = false
  }
  // Anything after an error is ignored: no frame, no second throw.
  if (error !== undefined) {
    const before = frames.length
    framer.push(hex(PING + PUB))
    if (frames.length !== before) holdingOk = false
  }
  return { frames, error, holdingOk, errors }
}

for (const row of rows) {
  t.test(row.name, async (t) => {
    const chunks = row.chunks.map(hex)
    const all = Buffer.concat(chunks)
    const expected = row.frames.map((f) => show(hex(f)))
    const modes: Array<[string, Buffer[]]> = [['as given', chunks]]
    // A byte at a time over multi-megabyte rows costs seconds and adds nothing.
    if (all.length <= 20_000) modes.push(['byte at a time', byteAtATime(all)])
    for (let seed = 1; seed <= 8; seed++) modes.push([`random split seed ${seed}`, randomSplit(all, seed)])
    for (const [mode, input] of modes) {
      const out = feed(input, row.max)
      t.same(out.frames, expected, `${mode}: frames`)
      t.equal(out.error, row.error, `${mode}: error code`)
      t.ok(out.errors <= 1, `${mode}: at most one throw`)
      t.ok(out.holdingOk, `${mode}: holding tracks mid-packet state; nothing after an error`)
    }
  })
}

t.test('holding is true mid-packet and false after', async (t) => {
  const framer = new Framer(100, () => {})
  t.equal(framer.holding, false, 'fresh')
  framer.push(hex('30'))
  t.equal(framer.holding, true, 'type byte only')
  framer.push(hex('07'))
  t.equal(framer.holding, true, 'header complete, body missing')
  framer.push(hex('000361'))
  t.equal(framer.holding, true, 'part of body')
  framer.push(hex('2f626869'))
  t.equal(framer.holding, false, 'packet complete')
  framer.push(hex(PING + '30'))
  t.equal(framer.holding, true, 'whole packet then a partial one')
  framer.push(hex('00'))
  t.equal(framer.holding, false, 'a zero-length packet ends with its header')
})

t.test('errors are GuardErrors with the catalogue code', async (t) => {
  const tooLarge = new Framer(10, () => {})
  t.throws(() => tooLarge.push(hex('3fffffff7f')), { code: 'GUARD_ERR_PACKET_TOO_LARGE', name: 'GuardError' })
  const malformed = new Framer(10, () => {})
  t.throws(() => malformed.push(hex('30ffffffff')), { code: 'GUARD_ERR_MALFORMED', name: 'GuardError' })
  t.doesNotThrow(() => malformed.push(hex(PING)), 'refuses further input quietly')
})

t.test('too large is refused from the header alone', async (t) => {
  // 2 MiB limit, a packet claiming 256 MiB: only the 5 header bytes are ever pushed.
  const seen: Buffer[] = []
  const framer = new Framer(2 * 1024 * 1024, (f) => seen.push(f))
  framer.push(hex('30ff'))
  framer.push(hex('ff'))
  t.equal(framer.holding, true, 'incomplete header is held')
  t.throws(() => framer.push(hex('ff7f')), { code: 'GUARD_ERR_PACKET_TOO_LARGE' })
  t.equal(seen.length, 0)
})

t.test('frames from one chunk are views of it, not copies', async (t) => {
  const chunk = hex(PING + PUB + PUBACK)
  const frames: Buffer[] = []
  new Framer(100, (f) => frames.push(f)).push(chunk)
  t.equal(frames.length, 3)
  const offsets = [0, 2, 11]
  frames.forEach((f, i) => {
    t.equal(f.buffer, chunk.buffer, `frame ${i} shares the ArrayBuffer`)
    t.equal(f.byteOffset, chunk.byteOffset + (offsets[i] as number), `frame ${i} offset`)
  })
  chunk[6] = 0x7a // topic "a/b" → "z/b" in the chunk
  t.equal(frames[1]?.[4], 0x7a, 'a write to the chunk shows in the frame')
})

t.test('a packet split across chunks is whole and independent of later chunks', async (t) => {
  const frames: Buffer[] = []
  const framer = new Framer(100, (f) => frames.push(f))
  const a = hex(PUB.slice(0, 8))
  const b = hex(PUB.slice(8) + PING)
  framer.push(a)
  framer.push(b)
  a.fill(0)
  b.fill(0)
  t.same(frames.map((f) => f.toString('hex')), [PUB, '0000'], 'the straddling frame was copied whole; PING is a view of b')
})

t.test('a span handler is offered each whole packet first; what it refuses comes as a Buffer', async (t) => {
  const chunk = hex(PING + PUB + PUBACK)
  const spans: Array<[number, number]> = []
  const frames: string[] = []
  const framer = new Framer(100, (f) => frames.push(f.toString('hex')), (buf, start, end) => {
    t.equal(buf, chunk, 'a range of the chunk itself')
    if ((buf[start] as number) >> 4 === 3) return false
    spans.push([start, end])
    return true
  })
  framer.push(chunk)
  t.same(spans, [[0, 2], [11, 15]], 'PINGREQ and PUBACK taken as ranges')
  t.same(frames, [PUB], 'the PUBLISH refused, handed on as a frame')
})

t.test('a packet joined across chunks is offered as the whole of its own copy', async (t) => {
  const offered: string[] = []
  const framer = new Framer(100, () => { t.fail('taken by the span handler') }, (buf, start, end) => { offered.push(buf.subarray(start, end).toString('hex')); return true })
  framer.push(hex(PUB.slice(0, 8)))
  framer.push(hex(PUB.slice(8)))
  t.same(offered, [PUB])
})
