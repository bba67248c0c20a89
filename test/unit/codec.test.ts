// Codec: every fixture row is decoded, encoded and round-tripped; malformed rows must throw
// GUARD_ERR_MALFORMED (or GUARD_ERR_PROTOCOL) and leave the same Codec able to decode the next valid frame.

import t from 'tap'
import mqtt from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import { Codec, FRAME_TYPE, frameType } from '../../src/wire/codec.js'
import type { ProtocolVersion } from '../../src/wire/codec.js'
import { GuardError } from '../../src/errors.js'
import { Framer } from '../../src/wire/framer.js'
import { MALFORMED, SPEC_LAYOUTS, V4, V5 } from './codec-fixtures.js'
import type { Row } from './codec-fixtures.js'

const hex = (s: string): Buffer => Buffer.from(s, 'hex')
const ROWS: Row[] = [...V4, ...V5]

/** The fields the fixture names, taken from a decoded packet (which also carries length etc.). */
function relevant (decoded: Packet, expected: Packet): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(expected)) out[key] = (decoded as unknown as Record<string, unknown>)[key]
  return out
}

function row (name: string, version: ProtocolVersion): Row {
  const found = ROWS.find((r) => r.name === name && r.version === version)
  if (found === undefined) throw new Error(`no fixture ${name}`)
  return found
}

t.test('fixtures: decode, encode, round trip', async (t) => {
  for (const r of ROWS) {
    t.test(`v${r.version} ${r.name}`, async (t) => {
      const frame = hex(r.hex)
      const canonical = r.encoded ?? r.hex

      const decoded = new Codec(r.version).decode(frame)
      t.same(relevant(decoded, r.packet), r.packet, 'decode')
      t.equal(decoded.cmd, r.packet.cmd, 'cmd')

      t.equal(new Codec(r.version).encode(r.packet).toString('hex'), canonical, 'encode')

      const codec = new Codec(r.version)
      t.equal(codec.encode(codec.decode(frame)).toString('hex'), canonical, 'hex → packet → hex')
      const again = codec.decode(codec.encode(r.packet))
      t.same(relevant(again, r.packet), r.packet, 'packet → hex → packet')

      t.equal(frameType(frame), FRAME_TYPE[r.packet.cmd], 'frameType')
    })
  }
})

t.test('one Codec per version decodes all its rows in sequence', async (t) => {
  for (const [version, rows] of [[4, V4], [5, V5]] as const) {
    const codec = new Codec(version)
    for (const r of rows) {
      t.same(relevant(codec.decode(hex(r.hex)), r.packet), r.packet, `v${version} ${r.name}`)
    }
  }
})

t.test('fixtures match the spec byte layout', async (t) => {
  for (const layout of SPEC_LAYOUTS) {
    const r = row(layout.fixture, layout.version)
    t.equal(layout.parts.map(([bytes]) => bytes).join(''), r.hex, `v${layout.version} ${layout.fixture}`)
    const declared = parseInt(layout.parts[1]?.[0] ?? '', 16)
    t.equal(declared, hex(r.hex).length - 2, `v${layout.version} ${layout.fixture}: remaining length`)
  }
})

t.test('frameType reads only the high nibble of byte 1', async (t) => {
  t.equal(frameType(hex('00')), 0, 'reserved 0')
  t.equal(frameType(hex('3d')), 3, 'PUBLISH with dup, QoS 2, retain')
  t.equal(frameType(hex('62')), FRAME_TYPE.pubrel)
  t.equal(frameType(hex('f0')), FRAME_TYPE.auth)
  t.equal(frameType(hex('30ffffff7f')), FRAME_TYPE.publish, 'no need for the rest of the frame')
  t.same(Object.values(FRAME_TYPE), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], 'codes 1..15 in order')
})

t.test('malformed frames', async (t) => {
  for (const bad of MALFORMED) {
    t.test(`v${bad.version} ${bad.name}`, async (t) => {
      const frame = hex(bad.hex)
      // The fault must be inside the packet, not in its framing.
      const frames: Buffer[] = []
      new Framer(1024, (f) => frames.push(f)).push(frame)
      t.same(frames.map((f) => f.toString('hex')), [bad.hex], 'well framed')

      const codec = new Codec(bad.version)
      let caught: unknown
      try {
        codec.decode(frame)
      } catch (err) {
        caught = err
      }

      // A repeated property is a Protocol Error in MQTT 5 [MQTT-2.2.2-2]; the rest are malformed.
      const code = bad.code ?? 'GUARD_ERR_MALFORMED'
      t.ok(caught instanceof GuardError, 'rejected with a GuardError')
      t.equal((caught as GuardError | undefined)?.code, code, `code ${code}`)
      t.equal((caught as GuardError | undefined)?.reasonCode, code === 'GUARD_ERR_MALFORMED' ? 0x81 : 0x82, 'MQTT 5 reason code')

      const next = [row(bad.version === 5 ? 'PUBLISH QoS 1 retain, all properties, repeated user property' : 'PUBLISH QoS 1 retain', bad.version), row('PINGREQ', bad.version)]
      for (const good of next) {
        let decoded: Packet | undefined
        try {
          decoded = codec.decode(hex(good.hex))
        } catch (err) {
          t.fail(`same Codec then decodes ${good.name}: ${(err as Error).message}`)
          continue
        }
        t.same(relevant(decoded, good.packet), good.packet, `same Codec then decodes ${good.name}`)
      }
    })
  }
})

t.test('encode failures are GUARD_ERR_ENCODE', async (t) => {
  const codec = new Codec(4)
  const noId = { cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 1, retain: false, dup: false } as Packet
  t.throws(() => codec.encode(noId), { code: 'GUARD_ERR_ENCODE', name: 'GuardError' }, 'QoS 1 without messageId')
  const unknown = { cmd: 'nope' } as unknown as Packet
  t.throws(() => codec.encode(unknown), { code: 'GUARD_ERR_ENCODE' }, 'unknown command')
})

t.test('PUBLISH without properties is decoded without copying its payload', async (t) => {
  for (const version of [4, 5] as const) {
    const frame = Buffer.from(version === 5 ? '320a0003612f620007006869' : '32090003612f6200076869', 'hex')
    const packet = new Codec(version).decode(frame)
    t.equal(packet.cmd, 'publish')
    if (packet.cmd !== 'publish') continue
    t.equal(packet.topic, 'a/b')
    t.equal(packet.messageId, 7)
    t.equal((packet.payload as Buffer).toString(), 'hi')
    t.equal((packet.payload as Buffer).buffer, frame.buffer, `MQTT ${version}: payload is a view of the frame`)
  }
})

t.test('PUBACK: the short forms are decoded without mqtt-packet, and agree with it', async (t) => {
  const cases: Array<[4 | 5, string, number, number | undefined]> = [
    [4, '40020007', 7, undefined],
    [5, '40020007', 7, 0],
    [5, '4003000710', 7, 0x10],
    [5, '400400071000', 7, 0x10]
  ]
  for (const [version, hex, messageId, reasonCode] of cases) {
    const frame = Buffer.from(hex, 'hex')
    const fast = new Codec(version).decode(frame)
    t.match(fast, { cmd: 'puback', messageId }, `v${version} ${hex}`)
    t.equal((fast as { reasonCode?: number }).reasonCode, reasonCode, `v${version} ${hex} reason code`)
    const slow = await new Promise<Packet>((resolve) => {
      const parser = mqtt.parser({ protocolVersion: version })
      parser.on('packet', resolve)
      parser.parse(frame)
    })
    t.equal((slow as { messageId?: number }).messageId, messageId, 'mqtt-packet agrees on the packet identifier')
    t.equal((slow as { reasonCode?: number }).reasonCode, reasonCode, 'and on the reason code')
  }
  // Found by the fuzz test: a v5 PUBACK too short for its packet identifier.
  for (const short of ['4000', '400100']) t.throws(() => new Codec(5).decode(Buffer.from(short, 'hex')), { code: 'GUARD_ERR_MALFORMED' }, `v5 PUBACK ${short}`)
  // With properties, or a 3.1.1 PUBACK of the wrong length: mqtt-packet and the strict checks.
  t.match(new Codec(5).decode(Buffer.from('4008000710041f000161', 'hex')), { cmd: 'puback', messageId: 7, reasonCode: 0x10, properties: { reasonString: 'a' } })
  t.throws(() => new Codec(4).decode(Buffer.from('4003000710', 'hex')), { code: 'GUARD_ERR_MALFORMED' })
})

t.test('Subscription Identifier may repeat in PUBLISH only [MQTT-3.8.2.1.2]', async (t) => {
  t.throws(() => new Codec(5).decode(Buffer.from('820b0001040b010b0200016101', 'hex')), { code: 'GUARD_ERR_PROTOCOL' }, 'twice in SUBSCRIBE')
  t.match(new Codec(5).decode(Buffer.from('82090001020b0100016101', 'hex')), { cmd: 'subscribe', properties: { subscriptionIdentifier: 1 } }, 'once is fine')
})

t.test('PUBLISH topics are judged as the spec says', async (t) => {
  const cases: Array<[string, 4 | 5, string, string]> = [
    ['wildcard +', 4, '30060003612f2b', 'GUARD_ERR_TOPIC_INVALID'],
    ['wildcard #', 5, '30070003612f2300', 'GUARD_ERR_TOPIC_INVALID'],
    ['empty topic in 3.1.1', 4, '300400006869', 'GUARD_ERR_PROTOCOL'],
    ['empty topic without alias in 5', 5, '30050000006869', 'GUARD_ERR_PROTOCOL'],
    ['packet identifier 0', 4, '32070003612f620000', 'GUARD_ERR_MALFORMED']
  ]
  for (const [name, version, hex, code] of cases) {
    t.throws(() => new Codec(version).decode(Buffer.from(hex, 'hex')), { code }, name)
  }
})

t.test('CONNECT and CONNACK: the common forms are decoded without mqtt-packet, exactly as it does', async (t) => {
  const mqttPacket = async (version: ProtocolVersion, frame: Buffer): Promise<Packet> => await new Promise<Packet>((resolve, reject) => {
    const parser = mqtt.parser({ protocolVersion: version })
    parser.on('packet', resolve)
    parser.on('error', reject)
    parser.parse(frame)
  })
  const extra: Row[] = [
    { name: 'CONNECT will QoS 2, no retain, user name only', version: 4, hex: '101e00044d51545404940000' + '0002' + '6331' + '0003612f62' + '0003' + '787878' + '0004' + '75736572', packet: { cmd: 'connect' } as Packet },
    { name: 'CONNECT empty client ID', version: 4, hex: '100c00044d5154540402003c0000', packet: { cmd: 'connect' } as Packet },
    { name: 'CONNACK session present, refused 5', version: 4, hex: '20020105', packet: { cmd: 'connack' } as Packet },
    { name: 'CONNACK 0x87', version: 5, hex: '2003008700', packet: { cmd: 'connack' } as Packet }
  ]
  const rows = [...V4, ...V5, ...extra].filter((r) => r.packet.cmd === 'connect' || r.packet.cmd === 'connack')
  t.ok(rows.length >= 10, `${rows.length} CONNECT and CONNACK rows`)
  for (const r of rows) {
    const frame = hex(r.hex)
    t.same(new Codec(r.version).decode(frame), await mqttPacket(r.version, frame), `v${r.version} ${r.name}`)
  }
  // A will payload and a password are copies: a held CONNECT does not pin the socket's read buffer.
  const frame = hex(row('CONNECT will, username, password', 4).hex)
  const packet = new Codec(4).decode(frame) as Extract<Packet, { cmd: 'connect' }>
  frame.fill(0)
  t.equal(packet.password?.toString(), 'pw', 'password copied')
  t.equal(packet.will?.payload.toString(), 'gone', 'will payload copied')
  t.throws(() => new Codec(4).decode(hex('101300044d515454041c003c00026331' + '0001740000')), { code: 'GUARD_ERR_MALFORMED' }, 'will QoS 3 [MQTT-3.1.2-14]')
})
