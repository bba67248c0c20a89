// client-id without sockets: option errors that name their key, the policies and the identity
// rule, flapping counts, bans, their expiry and the history behind them (MemoryStore on a
// fake clock), and the lines that explain how a connection ended.

import t from 'tap'
import { validateOptions } from '../../plugins/client-id/options.js'
import { decide, MemoryStore, sameIdentity, type Claim, type Holder } from '../../plugins/client-id/store.js'
import { explainEnd, type EndContext } from '../../plugins/client-id/explain.js'
import { evidence } from '../../plugins/client-id/index.js'
import { isGuardError, type CloseReason } from '../../src/errors.js'

function optionError (raw: Record<string, unknown>): string {
  try {
    validateOptions(raw)
  } catch (e) {
    if (isGuardError(e) && e.code === 'GUARD_ERR_CONFIG') return e.message
    throw e
  }
  return 'no error'
}

t.test('options: defaults, and errors that name the key', async (t) => {
  const o = validateOptions({})
  t.equal(o.policy, 'takeover-same-identity')
  t.equal(o.leaseMs, 15_000)
  t.equal(o.failOpen, true)
  t.same(o.flapping, { maxConnects: 20, windowMs: 60_000, banMs: 120_000, by: ['clientId'] })
  t.equal(o.maxIdLength, undefined)
  t.equal(validateOptions({ flapping: false }).flapping, undefined)
  t.same(validateOptions({ flapping: { maxConnects: 3, by: ['address', 'username'] } }).flapping, { maxConnects: 3, windowMs: 60_000, banMs: 120_000, by: ['address', 'username'] })
  t.ok(validateOptions({ idPattern: 'dev-[0-9]+' }).idPattern?.test('dev-12'))
  t.notOk(validateOptions({ idPattern: 'dev-[0-9]+' }).idPattern?.test('xdev-12'), 'the pattern is anchored')
  t.match(optionError({ policy: 'first-wins' }), /^policy: expected one of reject-new, takeover, takeover-same-identity/)
  t.match(optionError({ leaseMs: 10 }), /^leaseMs: expected an integer >= 300/)
  t.match(optionError({ idPattern: '(' }), /^idPattern: not a valid regular expression/)
  t.match(optionError({ maxIdLength: 70_000 }), /^maxIdLength: expected an integer >= 1 and <= 65535, got 70000/)
  t.match(optionError({ flapping: { maxConnects: 0 } }), /^flapping\.maxConnects: expected an integer >= 1/)
  t.match(optionError({ flapping: { by: ['ip'] } }), /^flapping\.by\[0\]: expected one of clientId, username, address, got "ip"/)
  t.match(optionError({ flapping: { bans: 1 } }), /^flapping\.bans: unknown key \(expected one of maxConnects, windowMs, banMs, by\)/)
  t.match(optionError({ failopen: true }), /^failopen: unknown key \(expected one of policy, leaseMs,/)
})

const holder = (owner: string, username: string | undefined, address = '10.0.0.1'): Holder => ({ owner, username, address, since: 1 })
const claim = (id: string | undefined, h: Holder, policy: Claim['policy'] = 'takeover-same-identity', flapKeys: string[] = []): Claim => ({ clientId: id, holder: h, policy, flapKeys })

t.test('identity and policies', async (t) => {
  t.ok(sameIdentity(holder('a', 'bob'), holder('b', 'bob', '10.9.9.9')), 'same user name, any address')
  t.notOk(sameIdentity(holder('a', 'bob'), holder('b', 'eve')))
  t.notOk(sameIdentity(holder('a', 'bob'), holder('b', undefined)), 'a user name against none')
  t.ok(sameIdentity(holder('a', undefined, '10.0.0.5'), holder('b', undefined, '10.0.0.5')), 'anonymous: the same address')
  t.notOk(sameIdentity(holder('a', undefined, '10.0.0.5'), holder('b', undefined, '10.0.0.6')))
  const bob = holder('i1:1', 'bob')
  t.equal(decide(undefined, claim('x', bob, 'reject-new')), 'admit')
  t.equal(decide(bob, claim('x', holder('i1:1', 'bob'), 'reject-new')), 'admit', 'the owner itself')
  t.equal(decide(bob, claim('x', holder('i2:7', 'bob'), 'reject-new')), 'held')
  t.equal(decide(bob, claim('x', holder('i2:7', 'eve'), 'takeover')), 'take')
  t.equal(decide(bob, claim('x', holder('i2:7', 'bob'), 'takeover-same-identity')), 'take')
  t.equal(decide(bob, claim('x', holder('i2:7', 'eve'), 'takeover-same-identity')), 'held')
})

t.test('MemoryStore: one holder per ID; release only by the owner', async (t) => {
  const store = new MemoryStore(undefined, 100)
  t.same(store.admit(claim('dev', holder('i:1', 'bob'), 'reject-new')), { kind: 'admitted' })
  t.same(store.admit(claim('dev', holder('i:2', 'bob'), 'reject-new')), { kind: 'held', holder: holder('i:1', 'bob') })
  store.release('dev', 'i:2', [], { t: 2, k: 'e', a: '10.0.0.1' })
  t.equal(store.leases.get('dev')?.owner, 'i:1', 'a non-owner cannot release')
  t.same(store.admit(claim('dev', holder('i:3', 'bob'))), { kind: 'admitted', tookOver: holder('i:1', 'bob') }, 'same identity takes it back')
  t.same(store.renew([{ clientId: 'dev', holder: holder('i:1', 'bob') }, { clientId: 'dev', holder: holder('i:3', 'bob') }]), [{ result: 'lost', holder: holder('i:3', 'bob') }, { result: 'renewed' }], 'lost, with who holds it now')
  store.release('dev', 'i:3', [], { t: 3, k: 'e', a: '10.0.0.1' })
  t.equal(store.leases.size, 0)
  t.same(store.admit(claim(undefined, holder('i:4', undefined))), { kind: 'admitted' }, 'an empty ID registers nothing')
  t.equal(store.leases.size, 0)
})

t.test('MemoryStore: flapping bans after maxConnects, shows the history, and expires', async (t) => {
  let now = 1_000_000
  const store = new MemoryStore({ maxConnects: 3, windowMs: 10_000, banMs: 5_000 }, 100, () => now)
  const keys = ['id:dev']
  for (let i = 0; i < 3; i++) {
    const owner = `i:${i}`
    t.same(store.admit(claim('dev', holder(owner, 'bob', `10.0.0.${i}`), 'takeover', keys)).kind, 'admitted')
    now += 100
    store.release('dev', owner, keys, { t: now, k: 'e', a: `10.0.0.${i}`, why: 'taken over' })
  }
  const fourth = store.admit(claim('dev', holder('i:9', 'bob', '10.0.0.9'), 'takeover', keys))
  t.equal(fourth.kind, 'flapping')
  if (fourth.kind !== 'flapping') return
  t.equal(fourth.connects, 4)
  t.equal(fourth.until, now + 5_000)
  t.same(evidence(fourth.history), { connects: 4, addresses: ['10.0.0.9', '10.0.0.2', '10.0.0.1', '10.0.0.0'], ends: [{ why: 'taken over', count: 3 }] })
  now += 1000
  t.same(store.admit(claim('dev', holder('i:10', 'bob'), 'takeover', keys)), { kind: 'banned', key: 'id:dev', until: fourth.until })
  now = fourth.until
  t.equal(store.admit(claim('dev', holder('i:11', 'bob'), 'takeover', keys)).kind, 'admitted', 'the ban ends')
  t.equal(store.admit(claim('other', holder('i:12', 'bob'), 'takeover', ['id:other'])).kind, 'admitted', 'other keys are not affected')
})

t.test('MemoryStore: connects spread over windows never ban; the store stays bounded', async (t) => {
  let now = 0
  const store = new MemoryStore({ maxConnects: 2, windowMs: 1000, banMs: 1000 }, 10, () => now)
  for (let i = 0; i < 10; i++) {
    t.equal(store.admit(claim(`c${i}`, holder(`i:${i}`, undefined), 'reject-new', ['id:same'])).kind, 'admitted')
    now += 600
  }
  for (let i = 0; i < 50; i++) store.admit(claim(`k${i}`, holder(`j:${i}`, undefined), 'reject-new', [`id:k${i}`]))
  t.ok(store.size <= 10, `at most maxKeys flapping keys (${store.size})`)
})

t.test('explainEnd: how a connection ended, in words', async (t) => {
  const ctx: EndContext = { keepaliveS: 15, durationMs: 42_000, brokerReason: undefined, takenOverBy: undefined }
  const info = (reason: CloseReason, detail?: string, clientIdleMs = 100): Parameters<typeof explainEnd>[0] => ({ reason, detail, clientIdleMs })
  t.equal(explainEnd(info('client-disconnect'), ctx), 'clean DISCONNECT from the client after 42 s')
  t.match(explainEnd(info('client-closed', undefined, 23_000), ctx), /^keepalive timeout: nothing from the client for 23 s with keepalive 15 s/)
  t.match(explainEnd(info('broker-closed', undefined, 23_000), ctx), /^keepalive timeout/)
  t.equal(explainEnd(info('client-closed'), ctx), 'closed by the client without DISCONNECT after 42 s')
  t.match(explainEnd(info('broker-closed'), { ...ctx, brokerReason: 0x8e }), /taken over at the broker.*two devices share it/)
  t.match(explainEnd(info('broker-closed'), { ...ctx, brokerReason: 0x8d }), /^keepalive timeout/)
  t.match(explainEnd(info('GUARD_ERR_SESSION_TAKEN_OVER', 'x'), { ...ctx, takenOverBy: { address: '10.0.0.7', sameIdentity: false } }),
    'taken over by a connection from 10.0.0.7: two devices share this client ID?')
  t.match(explainEnd(info('GUARD_ERR_SESSION_TAKEN_OVER', 'x'), { ...ctx, takenOverBy: { address: '10.0.0.7', sameIdentity: true } }), /same identity/)
  t.equal(explainEnd(info('broker-refused', 'CONNACK code 5'), ctx), 'refused by the broker (CONNACK code 5)')
  t.equal(explainEnd(info('GUARD_ERR_BAD_CREDENTIALS', 'wrong-password'), ctx), 'closed (GUARD_ERR_BAD_CREDENTIALS): bad user name or password')
  t.equal(explainEnd(info('client-error', 'ECONNRESET'), ctx), 'network error on the client side (ECONNRESET) after 42 s')
})
