// The quota plugin's parts without a proxy: the token bucket and its burst, the decision for a
// PUBLISH against a client's and a user's buckets (disconnect and delay), the shared counters
// and the sync that takes the others' use off this process's buckets, connections per user
// name, and the option errors (each names its key and what it accepts).

import t from 'tap'
import { Bucket, charge, decide, newPair } from '../../plugins/quota/bucket.js'
import { MemoryConnections } from '../../plugins/quota/connections.js'
import { MemoryUsage, UsageSync, WINDOW_MS } from '../../plugins/quota/usage.js'
import { validateOptions } from '../../plugins/quota/options.js'
import type { RateLimits } from '../../plugins/quota/options.js'

const limits = (messagesPerSecond?: number, bytesPerSecond?: number, burstSeconds = 1): RateLimits => ({ messagesPerSecond, bytesPerSecond, burstSeconds })

t.test('bucket: starts full, refills at the rate, never past the burst', async (t) => {
  const b = new Bucket(20, 0)
  t.equal(b.refill(0, 10, 20), 20, 'full: rate × burstSeconds')
  b.tokens -= 20
  t.equal(b.refill(500, 10, 20), 5, 'half a second at 10/s')
  t.equal(b.refill(60_000, 10, 20), 20, 'capped at the burst')
  t.ok(b.full(60_000, 10, 20))
  b.spend(100, 20)
  t.equal(b.tokens, -20, 'what others used: at most one burst of debt')
})

t.test('decide: under the limit nothing happens; over it, which limit and which scope', async (t) => {
  const client = { pair: newPair(limits(2), 0), limits: limits(2) }
  const none = { pair: undefined, limits: undefined }
  t.same(decide(client, none, 10, 0, false), { kind: 'ok' })
  t.same(decide(client, none, 10, 0, false), { kind: 'ok' }, 'the burst: two at once')
  t.match(decide(client, none, 10, 0, false), { kind: 'over', over: 'messages', scope: 'client', never: false })
  t.same(decide(client, none, 10, 500, false), { kind: 'ok' }, 'a token back after half a second')
  const user = { pair: newPair(limits(undefined, 100), 0), limits: limits(undefined, 100) }
  t.same(decide(none, user, 60, 0, false), { kind: 'ok' })
  t.match(decide(none, user, 60, 0, false), { kind: 'over', over: 'bytes', scope: 'user' })
  t.equal(user.pair.bytes?.tokens, 40, 'a refused message costs nothing')
  t.match(decide(none, user, 101, 0, true), { kind: 'over', over: 'bytes', never: true }, 'larger than the burst: never, even with delay')
})

t.test('decide with delay: charged at once, waits until the deepest bucket is back at zero', async (t) => {
  const client = { pair: newPair(limits(10), 0), limits: limits(10) }
  const user = { pair: newPair(limits(undefined, 1000), 0), limits: limits(undefined, 1000) }
  for (let i = 0; i < 10; i++) t.same(decide(client, user, 50, 0, true), { kind: 'ok' })
  const d = decide(client, user, 700, 0, true)
  t.same(d, { kind: 'wait', waitMs: 200, over: 'bytes', scope: 'user' }, 'bytes (200 ms) wait longer than messages (100 ms)')
  charge(client, user, 700, 0)
  t.equal(user.pair.bytes?.tokens, -200)
  t.equal(client.pair.messages?.tokens, -1)
  t.match(decide(client, user, 10, 0, true), { kind: 'wait', waitMs: 210, over: 'bytes' }, 'the next waits behind it')
  t.same(decide(client, user, 10, 250, true), { kind: 'ok' }, 'both back above the cost after 250 ms')
})

t.test('a limit added by a reload gets its bucket at the next packet', async (t) => {
  const pair = newPair(limits(5), 0)
  t.equal(pair.bytes, undefined)
  t.same(decide({ pair, limits: limits(5, 100) }, { pair: undefined, limits: undefined }, 30, 0, false), { kind: 'ok' })
  t.equal(pair.bytes?.tokens, 70)
})

t.test('shared counters: per key and window, read back over the span', async (t) => {
  const usage = new MemoryUsage()
  t.same(usage.add([{ key: 'bob', window: 10, m: 3, b: 30, span: 1 }], 10_000), [[[3, 30], [0, 0]]])
  t.same(usage.add([{ key: 'bob', window: 10, m: 1, b: 5, span: 1 }, { key: 'amy', window: 10, m: 1, b: 1, span: 0 }], 10_000), [[[4, 35], [0, 0]], [[1, 1]]])
  t.same(usage.add([{ key: 'bob', window: 12, m: 1, b: 1, span: 2 }], 12_000), [[[1, 1], [0, 0], [4, 35]]], 'newest first')
  usage.add([{ key: 'amy', window: 100, m: 1, b: 1, span: 1 }], 100_000)
  t.equal(usage.size, 1, 'stale keys swept')
})

t.test('sync: the others\' use is taken off once, with its age; this process\'s own never', async (t) => {
  let now = 100 * WINDOW_MS
  const shared = new MemoryUsage()
  const spent: Array<[string, number, number, number]> = []
  const make = (): UsageSync => new UsageSync({ add: async (e) => shared.add(e, now) }, (key, m, b, ageMs) => { spent.push([key, m, b, ageMs]) }, () => 2, () => now)
  const a = make()
  const b = make()
  for (let i = 0; i < 5; i++) a.record('bob', 10)
  t.equal(await a.sync(), 1, 'one key sent')
  t.same(spent, [], 'a sees only its own use')
  b.record('bob', 1)
  await b.sync()
  t.same(spent, [['bob', 5, 50, 0]], 'b takes off what a used, this window: age 0')
  b.record('bob', 1)
  await b.sync()
  t.equal(spent.length, 1, 'and not again')
  now += WINDOW_MS + 200
  a.record('bob', 10)
  await a.sync()
  t.same(spent[1], ['bob', 2, 2, 700], 'a, in the next window, sees b\'s use of the window before, aged from its middle')
  now += 2 * WINDOW_MS
  b.record('bob', 1)
  await b.sync()
  t.same(spent[2], ['bob', 1, 10, 1700], 'b sees a\'s second use two windows later, still within the span')
  t.equal(await a.sync(), 0, 'nothing pending: no call')
  now += 10 * WINDOW_MS
  await a.sync()
  t.equal(a.size, 0, 'idle keys forgotten')
})

t.test('sync failing: pending counts dropped, the error thrown for the plugin to log', async (t) => {
  const sync = new UsageSync({ add: async () => { throw new Error('down') } }, () => { t.fail('nothing applied') }, () => 1)
  sync.record('bob', 1)
  await t.rejects(sync.sync(), /down/)
  t.equal(await sync.sync(), 0, 'dropped')
})

t.test('connections per user name: bounded, released, a retry not counted twice, a dead worker forgotten', async (t) => {
  const c = new MemoryConnections()
  t.same(c.admit('bob', 'w1:1', 2), { ok: true, count: 1 })
  t.same(c.admit('bob', 'w1:1', 2), { ok: true, count: 1 }, 'same owner again')
  t.same(c.admit('bob', 'w2:1', 2), { ok: true, count: 2 })
  t.same(c.admit('bob', 'w2:2', 2), { ok: false, count: 2 })
  c.release('bob', 'w1:1')
  t.same(c.admit('bob', 'w2:2', 2), { ok: true, count: 2 })
  c.forget('w2')
  t.equal(c.users.size, 0)
})

t.test('options: defaults, and errors that name the key and the accepted forms', async (t) => {
  t.match(validateOptions({ perClient: { messagesPerSecond: 5 } }), { perClient: { messagesPerSecond: 5, burstSeconds: 2 }, onExceeded: 'disconnect', maxDelayMs: 5000, syncMs: 250, leaseMs: 15000 })
  t.match(validateOptions({ perUser: { connections: 3 } }), { perUser: { connections: 3, burstSeconds: 2 } })
  const rows: Array<[unknown, RegExp]> = [
    [{}, /^give perClient, perUser or both/],
    [{ perClient: {} }, /^perClient: give at least one of messagesPerSecond, bytesPerSecond/],
    [{ perClient: { messagesPerSecond: 0 } }, /^perClient\.messagesPerSecond: expected a number > 0, got 0/],
    [{ perClient: { messagesPerSecond: 'x' } }, /^perClient\.messagesPerSecond: expected a number > 0, got "x"/],
    [{ perClient: { bytesPerSecond: 1.5 } }, /^perClient\.bytesPerSecond: expected an integer >= 1/],
    [{ perClient: { messagesPerSecond: 0.2, burstSeconds: 1 } }, /^perClient\.burstSeconds: messagesPerSecond × burstSeconds must be >= 1/],
    [{ perUser: { connections: 0 } }, /^perUser\.connections: expected an integer >= 1, got 0/],
    [{ perUser: { messagesPerSecond: 1, conections: 2 } }, /^perUser\.conections: unknown key \(expected one of messagesPerSecond, bytesPerSecond, burstSeconds, connections\)/],
    [{ perClient: { messagesPerSecond: 1 }, onExceeded: 'slow' }, /^onExceeded: expected one of disconnect, delay, got "slow"/],
    [{ perClient: { messagesPerSecond: 1 }, syncMs: 10 }, /^syncMs: expected an integer >= 50/]
  ]
  for (const [raw, want] of rows) t.throws(() => validateOptions(raw), want, JSON.stringify(raw))
})
