// The session record of `failover: rehome` (issue 21), driven with frames made by the proxy's own
// Codec for MQTT 3.1.1 and 5, as the connection feeds it (toBrokerFrame: what goes to the
// broker; toClientFrame: what goes to the client), and judged on the frames it gives back,
// decoded again:
// - subscriptions: only the filters a SUBACK granted are subscribed again on the new broker,
//   with their options (MQTT 5 nl/rap/rh) and, MQTT 5, their subscription identifiers (one
//   SUBSCRIBE per distinct set of properties); an UNSUBACKed filter is not; the proxy's own
//   SUBACKs are kept from the client, and the move goes on only when all are in;
// - the client's QoS 1 PUBLISH without PUBACK is resent with DUP, an acknowledged one is not;
//   QoS 2 at each stage (PUBLISH sent, PUBREC received, PUBREL sent) is resent, and the second
//   PUBREC of a message the client already had one for is kept from it;
// - broker → client: the client's PUBACK for the old broker's delivery is not forwarded; a
//   QoS 2 delivery's PUBREC after the move gets its PUBREL from the proxy, and its PUBCOMP is
//   not forwarded; the new broker's delivery with an identifier still in use gets another one
//   for the client, and the client's acks go back to the broker with the broker's own;
// - more QoS 1/2 in flight than the limit: the record is no longer `usable` (reconnect instead).

import t, { type Test } from 'tap'
import type { IPublishPacket, ISubscribePacket, ISubscription, Packet } from 'mqtt-packet'
import { Codec } from '../../src/wire/codec.js'
import { SessionRecord } from '../../src/proxy/session-record.js'

type Version = 4 | 5
const NAME = { 4: 'MQTT 3.1.1', 5: 'MQTT 5' } as const

/** A record for one connection, and the two directions as the connection drives them. */
function session (version: Version, limit = 100): {
  codec: Codec
  record: SessionRecord
  /** Client → broker: the frame sent on (decoded; null: not forwarded), and the proxy's answer to the client. */
  up: (p: Packet) => { sent: Packet | null, answer: Packet | undefined }
  /** Broker → client: the frame the client gets (decoded), or null. */
  down: (p: Packet) => Packet | null
  /** The move: what goes to the new broker, decoded, and whether the SUBACKs are all in. */
  move: () => { subscribe: ISubscribePacket[], resend: Packet[], subscribed: () => boolean }
} {
  const codec = Codec.shared(version)
  const record = new SessionRecord(codec, limit)
  return {
    codec,
    record,
    up: (p) => {
      const { frame, answer } = record.toBrokerFrame(codec.encode(p))
      // An answer is encoded as the connection does, and decoded: what the client reads.
      return { sent: frame === null ? null : codec.decode(frame), answer: answer === undefined ? undefined : codec.decode(codec.encode(answer)) }
    },
    down: (p) => {
      const frame = record.toClientFrame(codec.encode(p))
      return frame === null ? null : codec.decode(frame)
    },
    move: () => {
      let done = false
      const { subscribe, resend } = record.moved(() => { done = true })
      return {
        subscribe: subscribe.map((f) => codec.decode(f) as ISubscribePacket),
        resend: resend.map((f) => codec.decode(f)),
        subscribed: () => done
      }
    }
  }
}

function publish (messageId: number, qos: 1 | 2, topic = `t/${messageId}`, payload = `m${messageId}`): IPublishPacket {
  return { cmd: 'publish', messageId, qos, dup: false, retain: false, topic, payload: Buffer.from(payload) }
}

const ack = (cmd: 'puback' | 'pubrec' | 'pubrel' | 'pubcomp', messageId: number): Packet => ({ cmd, messageId }) as Packet

/** A SUBACK with the given codes (3.1.1: 0, 1, 2, 0x80; MQTT 5: reason codes). */
const suback = (messageId: number, granted: number[]): Packet => ({ cmd: 'suback', messageId, granted }) as Packet

/** What the tests compare of a subscription: the filter, the QoS and, MQTT 5, the options. */
function options (s: ISubscription, version: Version): Record<string, unknown> {
  return version === 5 ? { topic: s.topic, qos: s.qos, nl: s.nl ?? false, rap: s.rap ?? false, rh: s.rh ?? 0 } : { topic: s.topic, qos: s.qos }
}

function pub (p: Packet | null | undefined): IPublishPacket {
  if (p?.cmd !== 'publish') throw new Error(`expected a PUBLISH, got ${p?.cmd ?? String(p)}`)
  return p
}

/** Answers every re-SUBSCRIBE of a move with a SUBACK granting everything, as the new broker would. */
function grantAll (t: Test, down: (p: Packet) => Packet | null, subscribe: ISubscribePacket[]): void {
  for (const s of subscribe) {
    t.equal(down(suback(s.messageId ?? 0, s.subscriptions.map((x) => x.qos))), null, `the SUBACK of the proxy's own SUBSCRIBE ${s.messageId ?? 0} is not shown to the client`)
  }
}

for (const version of [4, 5] as const) {
  t.test(`${NAME[version]}: the filters the SUBACK granted are subscribed again, with their options; a refused one is not`, async (t) => {
    const { up, down, move } = session(version)
    const asked: ISubscription[] = version === 5
      ? [
          { topic: 'a/+', qos: 1, nl: true, rap: false, rh: 0 },
          { topic: 'refused/#', qos: 1, nl: false, rap: false, rh: 0 },
          { topic: 'c/#', qos: 0, nl: false, rap: true, rh: 2 },
          { topic: 'd', qos: 2, nl: true, rap: true, rh: 1 }
        ]
      : [{ topic: 'a/+', qos: 1 }, { topic: 'refused/#', qos: 1 }, { topic: 'c/#', qos: 0 }, { topic: 'd', qos: 2 }]
    const sent = up({ cmd: 'subscribe', messageId: 1, subscriptions: asked })
    t.equal(sent.sent?.cmd, 'subscribe', 'the SUBSCRIBE goes on to the broker')
    // The broker refuses one filter (0x80) and grants the last one at QoS 1 only.
    const ack1 = down(suback(1, [1, 0x80, 0, 1]))
    t.match(ack1, { cmd: 'suback', messageId: 1, granted: [1, 0x80, 0, 1] }, 'the SUBACK goes on to the client, unchanged')
    const { subscribe, resend, subscribed } = move()
    t.same(resend, [], 'nothing to resend')
    t.equal(subscribe.length, 1, 'one SUBSCRIBE: the filters came in one SUBSCRIBE, with the same properties')
    const again = subscribe[0] as ISubscribePacket
    const expected = [asked[0], asked[2], { ...asked[3], qos: 1 }] as ISubscription[]
    t.same(again.subscriptions.map((s) => options(s, version)), expected.map((s) => options(s, version)),
      'the granted filters, each with its options, at the QoS granted; the refused one left out')
    t.notOk(subscribed(), 'the move waits for the SUBACK')
    grantAll(t, down, subscribe)
    t.ok(subscribed(), 'the move goes on once the SUBACK is in')
    // After the move, the client's own SUBSCRIBE/SUBACK pass as before.
    up({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'e', qos: 1 }] })
    t.match(down(suback(2, [1])), { cmd: 'suback', messageId: 2 }, 'the client\'s next SUBACK reaches it')
    const second = move()
    t.same(second.subscribe.flatMap((s) => s.subscriptions.map((x) => x.topic)).sort(), ['a/+', 'c/#', 'd', 'e'], 'a second move subscribes the filters granted on the first new broker too')
  })

  t.test(`${NAME[version]}: an UNSUBSCRIBE answered by UNSUBACK removes its filters`, async (t) => {
    const { up, down, move } = session(version)
    up({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a', qos: 1 }, { topic: 'b', qos: 1 }, { topic: 'c', qos: 0 }] })
    down(suback(1, [1, 1, 0]))
    up({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['a', 'c'] })
    const unsuback = down({ cmd: 'unsuback', messageId: 2, ...(version === 5 ? { granted: [0, 0] } : {}) } as Packet)
    t.match(unsuback, { cmd: 'unsuback', messageId: 2 }, 'the UNSUBACK reaches the client')
    const { subscribe } = move()
    t.same(subscribe.flatMap((s) => s.subscriptions.map((x) => x.topic)), ['b'], 'only the filter still subscribed')
  })

  t.test(`${NAME[version]}: no filter granted: the move does not wait for a SUBACK`, async (t) => {
    const { up, down, move } = session(version)
    up({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'x', qos: 1 }] })
    down(suback(1, [0x80]))
    const { subscribe, subscribed } = move()
    t.same(subscribe, [], 'no SUBSCRIBE')
    t.ok(subscribed(), 'told at once')
  })

  t.test(`${NAME[version]}: the client's QoS 1 PUBLISH without PUBACK is resent with DUP; with PUBACK it is not`, async (t) => {
    const { up, down, move, record } = session(version)
    t.match(up(publish(10, 1, 'q1/open', 'not acked')).sent, { cmd: 'publish', messageId: 10 }, 'the PUBLISH goes on unchanged')
    up(publish(11, 1, 'q1/done', 'acked'))
    t.match(down(ack('puback', 11)), { cmd: 'puback', messageId: 11 }, 'its PUBACK reaches the client')
    t.same(record.summary(), { subscriptions: 0, inFlightUp: 1, inFlightDown: 0, stale: 0 })
    const { resend } = move()
    t.equal(resend.length, 1, 'one resend')
    const again = pub(resend[0])
    t.match(again, { messageId: 10, qos: 1, dup: true, topic: 'q1/open' }, 'the unacknowledged one, with DUP set')
    t.equal(again.payload.toString(), 'not acked', 'same payload')
    t.match(down(ack('puback', 10)), { cmd: 'puback', messageId: 10 }, 'the new broker\'s PUBACK reaches the client')
    t.same(move().resend, [], 'acknowledged by the new broker: a second move resends nothing')
  })

  t.test(`${NAME[version]}: the client's QoS 2 PUBLISH at each stage is resent; a second PUBREC is kept from the client`, async (t) => {
    const { up, down, move } = session(version)
    // 20: PUBLISH sent, nothing back. 21: PUBREC received. 22: PUBREL sent. 23: complete.
    up(publish(20, 2))
    up(publish(21, 2))
    t.match(down(ack('pubrec', 21)), { cmd: 'pubrec', messageId: 21 }, 'PUBREC 21 reaches the client')
    up(publish(22, 2))
    down(ack('pubrec', 22))
    t.match(up(ack('pubrel', 22)).sent, { cmd: 'pubrel', messageId: 22 }, 'PUBREL 22 goes to the broker')
    up(publish(23, 2))
    down(ack('pubrec', 23))
    up(ack('pubrel', 23))
    t.match(down(ack('pubcomp', 23)), { cmd: 'pubcomp', messageId: 23 }, 'PUBCOMP 23 reaches the client')

    const { resend } = move()
    t.same(resend.map((p) => p.cmd === 'publish' ? `publish ${p.messageId ?? 0} dup=${String(p.dup)} qos=${p.qos}` : `${p.cmd} ${p.messageId ?? 0}`),
      ['publish 20 dup=true qos=2', 'publish 21 dup=true qos=2', 'publish 22 dup=true qos=2', 'pubrel 22'],
      'the three unfinished ones resent with DUP, then PUBREL for the one the client had released; the complete one not')
    // The new broker answers the resends.
    t.match(down(ack('pubrec', 20)), { cmd: 'pubrec', messageId: 20 }, '20: the client had no PUBREC yet: it gets this one')
    t.equal(down(ack('pubrec', 21)), null, '21: the client had its PUBREC: the second is kept from it')
    t.equal(down(ack('pubrec', 22)), null, '22: likewise')
    t.match(down(ack('pubcomp', 22)), { cmd: 'pubcomp', messageId: 22 }, '22: the PUBCOMP the client waits for reaches it')
    t.match(up(ack('pubrel', 21)).sent, { cmd: 'pubrel', messageId: 21 }, '21: the client\'s PUBREL goes to the new broker')
    t.match(down(ack('pubcomp', 21)), { cmd: 'pubcomp', messageId: 21 }, '21: and its PUBCOMP comes back')
    t.match(up(ack('pubrel', 20)).sent, { cmd: 'pubrel', messageId: 20 })
    t.match(down(ack('pubcomp', 20)), { cmd: 'pubcomp', messageId: 20 }, '20: complete')
    t.same(move().resend, [], 'all complete: a second move resends nothing')
  })

  t.test(`${NAME[version]}: the old broker's QoS 1 delivery not acked at the move: the client's PUBACK is not forwarded`, async (t) => {
    const { up, down, move, record } = session(version)
    t.match(down(publish(1, 1, 'in/1')), { cmd: 'publish', messageId: 1 }, 'the delivery reaches the client with its identifier')
    down(publish(2, 1, 'in/2'))
    t.match(up(ack('puback', 2)).sent, { cmd: 'puback', messageId: 2 }, 'acked before the move: to the broker')
    move()
    t.same(record.summary(), { subscriptions: 0, inFlightUp: 0, inFlightDown: 0, stale: 1 }, 'one delivery of the old broker left')
    const late = up(ack('puback', 1))
    t.equal(late.sent, null, 'the PUBACK for the old broker\'s delivery is not sent to the new broker')
    t.equal(late.answer, undefined, 'nothing to answer for a PUBACK')
    t.equal(record.summary().stale, 0, 'its identifier is free again')
    t.match(down(publish(1, 1, 'new/1')), { cmd: 'publish', messageId: 1 }, 'the new broker\'s delivery with that identifier, now free, passes as it is')
    t.match(up(ack('puback', 1)).sent, { cmd: 'puback', messageId: 1 }, '... and its PUBACK goes to the new broker')
  })

  t.test(`${NAME[version]}: the old broker's QoS 2 delivery, PUBREC after the move: PUBREL from the proxy, PUBCOMP kept`, async (t) => {
    const { up, down, move, record } = session(version)
    down(publish(5, 2, 'in/q2'))
    move()
    const rec = up(ack('pubrec', 5))
    t.equal(rec.sent, null, 'the PUBREC is not sent to the new broker')
    t.match(rec.answer, { cmd: 'pubrel', messageId: 5 }, 'the proxy answers it with PUBREL 5, as the old broker would have')
    const comp = up(ack('pubcomp', 5))
    t.equal(comp.sent, null, 'the client\'s PUBCOMP is not sent to the new broker')
    t.equal(comp.answer, undefined, 'and not answered')
    t.equal(record.summary().stale, 0, 'identifier 5 is free again')
  })

  t.test(`${NAME[version]}: the new broker's delivery with an identifier still in use gets another one; the acks go back with the broker's`, async (t) => {
    const { up, down, move } = session(version)
    down(publish(1, 1, 'old/1'))
    down(publish(2, 2, 'old/2'))
    move()
    // The new broker starts its identifiers at 1 too.
    const first = pub(down(publish(1, 1, 'new/1', 'fresh one')))
    t.not(first.messageId, 1, `QoS 1: the client gets identifier ${first.messageId ?? 0}, not 1 (the old broker's delivery 1 is not acked)`)
    t.not(first.messageId, 2, '... nor 2 (in use too)')
    t.match(first, { topic: 'new/1', qos: 1 }, 'same message')
    t.equal(first.payload.toString(), 'fresh one')
    const second = pub(down(publish(2, 2, 'new/2')))
    t.not(second.messageId, 1, `QoS 2: identifier ${second.messageId ?? 0} for the broker's 2`)
    t.not(second.messageId, 2)
    t.not(second.messageId, first.messageId, 'and not the one just given for the broker\'s 1')
    t.match(down(publish(3, 1, 'new/3')), { messageId: 3 }, 'an identifier nobody uses passes as it is')

    t.match(up(ack('puback', first.messageId ?? 0)).sent, { cmd: 'puback', messageId: 1 }, 'the client\'s PUBACK goes to the new broker as PUBACK 1')
    t.equal(up(ack('puback', 1)).sent, null, 'the client\'s PUBACK 1 (for the old broker) is not forwarded')
    const c2 = second.messageId ?? 0
    t.match(up(ack('pubrec', c2)).sent, { cmd: 'pubrec', messageId: 2 }, 'QoS 2: PUBREC back with the broker\'s 2')
    t.match(down(ack('pubrel', 2)), { cmd: 'pubrel', messageId: c2 }, 'the broker\'s PUBREL 2 reaches the client with the client\'s identifier')
    t.match(up(ack('pubcomp', c2)).sent, { cmd: 'pubcomp', messageId: 2 }, 'PUBCOMP back with the broker\'s 2')
    t.match(up(ack('pubrec', 2)), { sent: null, answer: { cmd: 'pubrel', messageId: 2 } }, 'the old broker\'s QoS 2 delivery 2 completes with the proxy')
    t.equal(up(ack('pubcomp', 2)).sent, null)
    t.match(down(publish(1, 1, 'new/1b')), { messageId: 1 }, 'all identifiers free again: the broker\'s 1 passes as 1')
  })

  t.test(`${NAME[version]}: more QoS 1/2 in flight than the limit: not usable`, async (t) => {
    const { up, down, record } = session(version, 3)
    up(publish(1, 1))
    up(publish(2, 2))
    up(publish(3, 1))
    t.ok(record.usable, 'at the limit (3): usable')
    up({ ...publish(1, 1), dup: true })
    t.ok(record.usable, 'the client resending one of them: still usable')
    down(ack('puback', 3))
    up(publish(4, 1))
    t.ok(record.usable, 'one acked, another sent: still 3 in flight')
    const over = up(publish(5, 1))
    t.match(over.sent, { cmd: 'publish', messageId: 5 }, 'past the limit the PUBLISH still goes to the broker')
    t.notOk(record.usable, 'past the limit: not usable (the connection cannot be moved)')
  })
}

t.test('MQTT 5: subscription identifiers stay with their filters (one SUBSCRIBE per distinct set of properties)', async (t) => {
  const { up, down, move } = session(5)
  up({ cmd: 'subscribe', messageId: 1, properties: { subscriptionIdentifier: 7 }, subscriptions: [{ topic: 'seven/a', qos: 1, nl: false, rap: false, rh: 0 }, { topic: 'seven/b', qos: 0, nl: true, rap: false, rh: 0 }] })
  down(suback(1, [1, 0]))
  up({ cmd: 'subscribe', messageId: 2, properties: { subscriptionIdentifier: 9, userProperties: { team: 'b' } }, subscriptions: [{ topic: 'nine', qos: 2, nl: false, rap: true, rh: 1 }] })
  down(suback(2, [2]))
  up({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'plain/a', qos: 1, nl: false, rap: false, rh: 2 }] })
  down(suback(3, [1]))
  up({ cmd: 'subscribe', messageId: 4, subscriptions: [{ topic: 'plain/b', qos: 0, nl: false, rap: false, rh: 0 }] })
  down(suback(4, [0]))
  // A filter refused in a SUBSCRIBE with an identifier.
  up({ cmd: 'subscribe', messageId: 5, properties: { subscriptionIdentifier: 11 }, subscriptions: [{ topic: 'eleven', qos: 1, nl: false, rap: false, rh: 0 }] })
  down(suback(5, [0x87]))
  // A client PUBLISH in flight on 65535: the proxy's SUBSCRIBEs must not take that identifier.
  up(publish(65535, 1))

  const { subscribe, resend, subscribed } = move()
  const byFilter = new Map<string, { id: number | undefined, user: unknown, options: Record<string, unknown>, packet: number }>()
  for (const [i, s] of subscribe.entries()) {
    for (const x of s.subscriptions) byFilter.set(x.topic, { id: s.properties?.subscriptionIdentifier as number | undefined, user: s.properties?.userProperties, options: options(x, 5), packet: i })
  }
  t.same([...byFilter.keys()].sort(), ['nine', 'plain/a', 'plain/b', 'seven/a', 'seven/b'], 'every granted filter, not the refused one')
  t.equal(byFilter.get('seven/a')?.id, 7, 'seven/a: identifier 7')
  t.equal(byFilter.get('seven/b')?.id, 7, 'seven/b: identifier 7')
  t.equal(byFilter.get('nine')?.id, 9, 'nine: identifier 9')
  t.same(byFilter.get('nine')?.user, { team: 'b' }, 'nine: with its SUBSCRIBE\'s user property')
  t.equal(byFilter.get('plain/a')?.id, undefined, 'plain/a: no identifier')
  t.equal(byFilter.get('plain/b')?.id, undefined, 'plain/b: no identifier')
  t.equal(byFilter.get('seven/a')?.packet, byFilter.get('seven/b')?.packet, 'the two filters with identifier 7 in one SUBSCRIBE')
  t.equal(byFilter.get('plain/a')?.packet, byFilter.get('plain/b')?.packet, 'the two without properties in one SUBSCRIBE')
  t.equal(subscribe.length, 3, 'three SUBSCRIBEs: identifier 7, identifier 9, none')
  t.same(byFilter.get('nine')?.options, { topic: 'nine', qos: 2, nl: false, rap: true, rh: 1 }, 'nine: its options')
  t.same(byFilter.get('seven/b')?.options, { topic: 'seven/b', qos: 0, nl: true, rap: false, rh: 0 }, 'seven/b: its options')
  t.same(byFilter.get('plain/a')?.options, { topic: 'plain/a', qos: 1, nl: false, rap: false, rh: 2 }, 'plain/a: its options')
  const ids = subscribe.map((s) => s.messageId)
  t.equal(new Set(ids).size, 3, `distinct packet identifiers (${ids.join(', ')})`)
  t.notOk(ids.includes(65535), 'none is the identifier of the client\'s PUBLISH in flight')
  t.match(resend, [{ cmd: 'publish', messageId: 65535, dup: true }], 'the PUBLISH is resent')
  // The SUBACKs come one by one: the move waits for the last.
  const [a, b, c] = subscribe as [ISubscribePacket, ISubscribePacket, ISubscribePacket]
  t.equal(down(suback(b.messageId ?? 0, b.subscriptions.map((x) => x.qos))), null, 'a SUBACK of the proxy\'s is kept from the client')
  t.equal(down(suback(a.messageId ?? 0, a.subscriptions.map((x) => x.qos))), null)
  t.notOk(subscribed(), 'two of three SUBACKs: the move still waits')
  t.equal(down(suback(c.messageId ?? 0, c.subscriptions.map((x) => x.qos))), null)
  t.ok(subscribed(), 'all three: the move goes on')
})
