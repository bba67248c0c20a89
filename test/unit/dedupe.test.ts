// dedupe without sockets: option errors, the bounded expiring LocalRecords, the digest, and the
// decisions of the plugin on a fake connection with in-memory records: a DUP of an acknowledged
// message is answered, new data under a reused packet ID never matches an older record, a
// refused message is not recorded, QoS 0 and 2 are left alone, and window mode.

import t from 'tap'
import pino from 'pino'
import { Registry } from 'prom-client'
import type { IPublishPacket, IPubackPacket } from 'mqtt-packet'
import { validateOptions, type DedupeOptions } from '../../plugins/dedupe/options.js'
import { LocalRecords } from '../../plugins/dedupe/records.js'
import { digest } from '../../plugins/dedupe/digest.js'
import { Dedupe } from '../../plugins/dedupe/index.js'
import type { ConnectionInfo } from '../../src/plugin/api.js'
import { isGuardError } from '../../src/errors.js'

function optionError (raw: Record<string, unknown>): string {
  try {
    validateOptions(raw)
  } catch (e) {
    if (isGuardError(e)) return e.message
    throw e
  }
  return 'no error'
}

t.test('options', async (t) => {
  t.same(validateOptions({}), { ttlMs: 300_000, windowMs: undefined, maxEntries: 200_000, flushMs: 5, redisTimeoutMs: 500 })
  t.equal(validateOptions({ window: 'off' }).windowMs, undefined)
  t.equal(validateOptions({ window: 2000 }).windowMs, 2000)
  t.match(optionError({ window: 'on' }), /^window: expected off or a number of milliseconds/)
  t.match(optionError({ ttlMs: 5000, window: 6000 }), /^window: must not be longer than ttlMs/)
  t.match(optionError({ ttlMs: 10 }), /^ttlMs: expected an integer >= 1000/)
  t.match(optionError({ ttl: 10 }), /^ttl: unknown key \(expected one of ttlMs, window,/)
})

t.test('LocalRecords: bounded, expiring, newest value wins', async (t) => {
  let now = 0
  const r = new LocalRecords(1000, 3, () => now)
  r.set('a', '1'); r.set('b', '2'); r.set('c', '3')
  r.set('a', '4')
  t.equal(r.get('a'), '4')
  r.set('d', '5')
  t.equal(r.size, 3, 'at most maxEntries')
  t.equal(r.get('b'), undefined, 'the oldest went first')
  now = 1000
  t.equal(r.get('a'), undefined, 'expired after ttlMs')
})

t.test('digest: topic and payload both count', async (t) => {
  t.equal(digest('a/b', Buffer.from('x')), digest('a/b', Buffer.from('x')))
  t.not(digest('a/b', Buffer.from('x')), digest('a/c', Buffer.from('x')))
  t.not(digest('a/b', Buffer.from('x')), digest('a/b', Buffer.from('y')))
})

function makeDedupe (options: Partial<DedupeOptions> = {}): Dedupe {
  const o = { ...validateOptions({}), ...options }
  return new Dedupe({ name: 'dedupe', options: o, log: pino({ level: 'silent' }), redis: undefined, keyPrefix: 'x:', instanceId: 'i', configDir: '.', metrics: new Registry(), retap: () => {} })
}

function fakeConn (clientId: string, protocolVersion: 4 | 5 = 4): ConnectionInfo {
  return { id: '1', address: '127.0.0.1', port: 1, listener: 'x', openedAt: 0, clientId, username: undefined, protocolVersion, log: pino({ level: 'silent' }), close: () => {} }
}

const pub = (messageId: number, payload: string, dup = false, qos: 0 | 1 | 2 = 1): IPublishPacket =>
  ({ cmd: 'publish', qos, dup, retain: false, topic: 't', payload: Buffer.from(payload), messageId })
const ack = (messageId: number, reasonCode?: number): IPubackPacket => reasonCode === undefined ? { cmd: 'puback', messageId } : { cmd: 'puback', messageId, reasonCode }

t.test('client → broker: only a DUP of what the broker acknowledged is removed', async (t) => {
  const d = makeDedupe()
  const c = fakeConn('dev')
  t.equal(d.publish('in', c, pub(1, 'a')), undefined, 'a new message passes')
  t.equal(d.publish('in', c, pub(1, 'a', true)), undefined, 'a DUP before the ack passes (the broker may not have it)')
  d.acked('in', c, ack(1))
  t.match(d.publish('in', c, pub(1, 'a', true)), { action: 'answer', packets: [{ cmd: 'puback', messageId: 1 }] }, 'the DUP after the ack is answered')
  t.equal(d.publish('in', c, pub(1, 'b', true)), undefined, 'a DUP with other data passes')
  t.equal(d.publish('in', fakeConn('other'), pub(1, 'a', true)), undefined, 'another client\'s packet ID is its own')
  // The ID is reused for the same content, not yet acknowledged: the old record must not match.
  t.equal(d.publish('in', c, pub(1, 'a')), undefined)
  t.equal(d.publish('in', c, pub(1, 'a', true)), undefined, 'a reused ID is not matched by its older record')
  d.acked('in', c, ack(1))
  t.ok(d.publish('in', c, pub(1, 'a', true)), 'once acknowledged again, its DUP is removed')
  t.same(d.stats.removed, { in: 2, out: 0 })
})

t.test('refusals are not recorded; QoS 0 and 2 and clients without an ID are left alone', async (t) => {
  const d = makeDedupe()
  const c = fakeConn('dev', 5)
  d.publish('in', c, pub(2, 'a'))
  d.acked('in', c, ack(2, 0x87))
  t.equal(d.publish('in', c, pub(2, 'a', true)), undefined, 'a PUBACK 0x87 (not authorized) means the broker did not take it')
  d.publish('in', c, pub(3, 'a'))
  d.acked('in', c, ack(3, 0x10))
  t.match(d.publish('in', c, pub(3, 'a', true)), { action: 'answer', packets: [{ cmd: 'puback', messageId: 3, reasonCode: 0 }] }, '0x10 (no subscribers) was taken')
  t.equal(d.publish('in', c, pub(4, 'a', true, 2)), undefined, 'QoS 2')
  t.equal(d.publish('in', c, pub(0, 'a', false, 0)), undefined, 'QoS 0')
  const anonymous = fakeConn('')
  d.publish('in', anonymous, pub(5, 'a'))
  d.acked('in', anonymous, ack(5))
  t.equal(d.publish('in', anonymous, pub(5, 'a', true)), undefined, 'no client ID, no records')
})

t.test('broker → client: a redelivery the client acknowledged is answered to the broker', async (t) => {
  const d = makeDedupe()
  const c = fakeConn('dev')
  t.equal(d.publish('out', c, pub(7, 'm')), undefined)
  d.acked('out', c, ack(7))
  t.match(d.publish('out', c, pub(7, 'm', true)), { action: 'answer', packets: [{ cmd: 'puback', messageId: 7 }] })
  t.equal(d.publish('in', c, pub(7, 'm', true)), undefined, 'directions have their own packet IDs')
  t.same(d.stats.removed, { in: 0, out: 1 })
  t.same(d.stats.byClient.get('dev'), { in: 0, out: 1 })
})

t.test('window mode: the same content acknowledged within the window is a duplicate', async (t) => {
  const d = makeDedupe({ windowMs: 60_000 })
  const c = fakeConn('dev')
  t.equal(d.publish('in', c, pub(1, 'reading')), undefined)
  d.acked('in', c, ack(1))
  t.match(d.publish('in', c, pub(2, 'reading')), { action: 'answer' }, 'a new packet ID, same content: removed')
  t.equal(d.publish('in', c, pub(3, 'other')), undefined)
  const off = makeDedupe()
  off.publish('in', c, pub(1, 'reading'))
  off.acked('in', c, ack(1))
  t.equal(off.publish('in', c, pub(2, 'reading')), undefined, 'off by default')
})
