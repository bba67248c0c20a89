// The plugins' Redis stores on a real Redis Cluster (3 primaries + 3 replicas, started once for
// this file), through `new Cluster(seeds)` as a plugin would get it: the client-id store
// (admit, release, renew, the three policies and takeover notices, flapping bans by client ID,
// user name and address), the dedupe records (both directions and window mode, written by one
// instance and read by another, across a bucket boundary) and the brute-force counters, with
// client IDs, users and addresses chosen so that their keys live on different nodes. At the
// end no node counted a CROSSSLOT error and no store reported a failure; a deliberate
// cross-slot script then shows that the count would have seen one.

import { once } from 'node:events'
import t from 'tap'
import pino from 'pino'
import { Cluster } from 'ioredis'
import { cleanupAll, pollUntil } from '../helpers/processes.js'
import { startRedisCluster } from '../helpers/redis-topologies.js'
import { RedisStore, flapKeys, leaseKey, type TakeoverNotice } from '../../plugins/client-id/redis-store.js'
import { validateOptions as clientIdOptions } from '../../plugins/client-id/options.js'
import type { Admission, Claim, Holder } from '../../plugins/client-id/store.js'
import { RedisRecords, recordKey, shardOf, TOMBSTONE } from '../../plugins/dedupe/records.js'
import { validateOptions as dedupeOptions } from '../../plugins/dedupe/options.js'
import { SharedBruteForce } from '../../plugins/auth/brute-force-redis.js'
import { validateOptions as authOptions } from '../../plugins/auth/options.js'
import { subscribeChannel } from '../../src/redis/call.js'

t.teardown(cleanupAll)

const topo = await startRedisCluster({ primaries: 3, replicasPerPrimary: 1, nodeTimeoutMs: 1000 })
t.teardown(() => topo.stop())
// disableClientInfo: Redis 7.0 answers ioredis's CLIENT SETINFO with ERR, which would hide a
// script's ERR in the error counts checked at the end (ioredis#2037).
const redis = new Cluster(topo.startupNodes, { redisOptions: { disableClientInfo: true } })
t.teardown(() => { redis.disconnect() })
await once(redis, 'ready')

/**
 * The first `count` names made by `name(i)` whose keys (made by `key`) each live on another
 * primary, none of them on a primary in `taken` (which gets theirs).
 */
async function onDifferentNodes (name: (i: number) => string, key: (name: string) => string, count = 3, taken = new Set<number>()): Promise<string[]> {
  const found: string[] = []
  for (let i = 0; found.length < count; i++) {
    const port = (await topo.primaryOf(key(name(i)))).port
    if (taken.has(port)) continue
    taken.add(port)
    found.push(name(i))
  }
  return found
}

/** Errors by type (CROSSSLOT, MOVED …) that the cluster's nodes counted. */
async function errorStats (): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  for (const node of redis.nodes('all')) {
    for (const m of (await node.info('errorstats')).matchAll(/^errorstat_(\w+):count=(\d+)/gm)) out.set(m[1] as string, (out.get(m[1] as string) ?? 0) + Number(m[2]))
  }
  return out
}

// The takeover channel of the first test's store, subscribed as the plugin does, before the
// error counts start: ioredis's Cluster subscriber connection does not take redisOptions, so
// on Redis 7.0 its CLIENT SETINFO gets two ERR replies.
const CHANNEL = 'ck1:client-id:takeover'
const notices: TakeoverNotice[] = []
let heard = false
const subscriber = subscribeChannel(redis, CHANNEL, (m) => {
  if (m === 'probe') heard = true
  const n = RedisStore.notice(m)
  if (n !== undefined) notices.push(n)
})
t.teardown(() => { subscriber.disconnect() })
await pollUntil('the takeover channel subscribed', 10_000, async () => { await redis.publish(CHANNEL, 'probe'); return heard ? true : undefined })

const failures: string[] = []
const before = await errorStats()

const holder = (owner: string, username: string | undefined, address = '10.0.0.1'): Holder => ({ owner, username, address, since: Date.now() })

t.test('client-id: policies, takeover notices, release and renew, on three nodes', async (t) => {
  const o = clientIdOptions({})
  const prefix = 'ck1:client-id:'
  const store = new RedisStore(redis, prefix, o.leaseMs, o.flapping, o.redisTimeoutMs)
  t.equal(store.channel, CHANNEL)
  const ids = await onDifferentNodes((i) => `dev-${i}`, (id) => leaseKey(prefix, id))
  t.comment(`client IDs on three primaries: ${ids.join(', ')}`)
  for (const id of ids) {
    const claim = (h: Holder, policy: Claim['policy']): Claim => ({ clientId: id, holder: h, policy, flapKeys: [`id:${id}`] })
    const a = holder(`a:${id}`, 'alice')
    t.same(await store.admit(claim(a, 'takeover-same-identity')), { kind: 'admitted' }, `${id}: admitted`)
    t.match(await store.admit(claim(holder('b', 'alice'), 'reject-new')), { kind: 'held', holder: { owner: a.owner, username: 'alice' } }, 'reject-new: held')
    t.match(await store.admit(claim(holder('m', 'mallory'), 'takeover-same-identity')), { kind: 'held' }, 'takeover-same-identity, another user: held')
    const b = holder(`b:${id}`, 'alice', '10.0.0.2')
    t.match(await store.admit(claim(b, 'takeover-same-identity')), { kind: 'admitted', tookOver: { owner: a.owner } }, 'the same user takes it back')
    const c = holder(`c:${id}`, undefined, '10.0.0.3')
    t.match(await store.admit(claim(c, 'takeover')), { kind: 'admitted', tookOver: { owner: b.owner } }, 'takeover: anyone takes it')
    t.equal(await redis.hget(leaseKey(prefix, id), 'owner'), c.owner, 'the lease names the last owner')
    await pollUntil('two takeover notices', 5000, () => notices.filter((n) => n.id === id).length === 2 ? true : undefined)
    t.same(notices.filter((n) => n.id === id).map((n) => [n.owner, n.same]), [[a.owner, true], [b.owner, false]], 'each old owner told, with sameIdentity')

    t.same(await store.renew([{ clientId: id, holder: c }, { clientId: id, holder: a }]), [{ result: 'renewed' }, { result: 'lost', holder: { address: c.address, username: undefined } }], 'renew: the owner keeps it, a former owner has lost it and learns to whom')
    await redis.del(leaseKey(prefix, id))
    t.same(await store.renew([{ clientId: id, holder: c }]), [{ result: 'restored' }], 'renew writes a missing lease again')
    await store.release(id, a.owner, [`id:${id}`], { t: Date.now(), k: 'e', a: a.address, why: 'test' })
    t.equal(await redis.hget(leaseKey(prefix, id), 'owner'), c.owner, 'a release by a non-owner leaves the lease')
    await store.release(id, c.owner, [`id:${id}`], { t: Date.now(), k: 'e', a: c.address, why: 'test' })
    t.equal(await redis.exists(leaseKey(prefix, id)), 0, 'its owner\'s release frees it')
    t.same(await store.admit(claim(holder('d', 'dora'), 'reject-new')), { kind: 'admitted' }, 'free for anyone again')
    t.equal(await redis.llen(flapKeys(prefix, `id:${id}`)[2]), 8, 'history: 6 connects, 2 ends')
  }
  t.same(await store.renew(ids.map((id) => ({ clientId: id, holder: holder('d', 'dora') }))).then((r) => r.length), 3, 'one renew round over three nodes')
})

t.test('client-id: flapping bans by client ID, user name and address, keys on different nodes', async (t) => {
  const o = clientIdOptions({ policy: 'takeover', flapping: { maxConnects: 3, windowMs: 60_000, banMs: 60_000, by: ['clientId', 'username', 'address'] } })
  const prefix = 'ck2:client-id:'
  const store = new RedisStore(redis, prefix, o.leaseMs, o.flapping, o.redisTimeoutMs)
  let n = 0
  const connect = async (id: string, user: string, address: string): Promise<Admission> =>
    await store.admit({ clientId: id, holder: holder(`o${n++}`, user, address), policy: o.policy, flapKeys: [`id:${id}`, `user:${user}`, `addr:${address}`] })
  // The client ID's, the user name's and the address's keys, each on another primary.
  const taken = new Set<number>()
  const [id] = await onDifferentNodes((i) => `flappy-${i}`, (v) => leaseKey(prefix, v), 1, taken)
  const [user] = await onDifferentNodes((i) => `user-${i}`, (v) => flapKeys(prefix, `user:${v}`)[0], 1, taken)
  const [address] = await onDifferentNodes((i) => `10.1.0.${i}`, (v) => flapKeys(prefix, `addr:${v}`)[0], 1, taken)
  t.equal(taken.size, 3, `${id}, ${user} and ${address} on three primaries`)

  for (let i = 0; i < 3; i++) t.match(await connect(id as string, `u${i}`, `10.2.0.${i}`), { kind: 'admitted' }, `client ID connect ${i + 1}`)
  t.match(await connect(id as string, 'u9', '10.2.0.9'), { kind: 'flapping', key: `id:${id}`, connects: 4, history: [{ k: 'c' }, { k: 'c' }, { k: 'c' }, { k: 'c' }] }, 'the 4th starts a ban on the client ID')
  t.match(await connect(id as string, 'u8', '10.2.0.8'), { kind: 'banned', key: `id:${id}` }, 'then banned')

  for (let i = 0; i < 3; i++) t.same(await connect(`by-user-${i}`, user as string, `10.3.0.${i}`), { kind: 'admitted' })
  t.match(await connect('by-user-3', user as string, '10.3.0.3'), { kind: 'flapping', key: `user:${user}`, connects: 4 }, 'a user name flaps over four client IDs')
  t.match(await connect('by-user-4', user as string, '10.3.0.4'), { kind: 'banned', key: `user:${user}` }, 'the user name is banned')
  t.equal(await redis.exists(leaseKey(prefix, 'by-user-3')), 0, 'no lease for the connect that started the ban')

  for (let i = 0; i < 3; i++) t.same(await connect(`by-addr-${i}`, `v${i}`, address as string), { kind: 'admitted' })
  t.match(await connect('by-addr-3', 'v3', address as string), { kind: 'flapping', key: `addr:${address}` }, 'an address flaps')
  t.match(await connect('by-addr-4', 'v4', address as string), { kind: 'banned', key: `addr:${address}` }, 'the address is banned')

  await store.release('by-addr-0', 'o-none', [`id:by-addr-0`, `user:v0`, `addr:${address}`], { t: Date.now(), k: 'e', a: address as string, why: 'test' })
  t.equal((await redis.lrange(flapKeys(prefix, `addr:${address}`)[2], 0, 0))[0]?.includes('"why":"test"'), true, 'a release records the end in every key\'s history')
})

t.test('dedupe: records from one instance found by another, both directions and window, on three nodes', async (t) => {
  const o = dedupeOptions({ window: 10_000 })
  const prefix = 'ck3:dedupe:'
  let now = Date.now()
  const onError = (what: string, err: unknown): void => { failures.push(`dedupe ${what}: ${String(err)}`) }
  const writer = new RedisRecords(redis, prefix, o.ttlMs, o.flushMs, o.redisTimeoutMs, onError, () => now)
  const reader = new RedisRecords(redis, prefix, o.ttlMs, o.flushMs, o.redisTimeoutMs, onError, () => now)
  const clients = await onDifferentNodes((i) => `pub-${i}`, (id) => writer.key(shardOf(id), 0))
  t.comment(`client IDs whose records live on three primaries: ${clients.join(', ')}`)
  now = (Math.floor(now / (o.ttlMs / 4)) + 1) * (o.ttlMs / 4) - 1 // the last ms of a bucket
  for (const id of clients) {
    writer.write(recordKey(id, 'i', 7), TOMBSTONE)
    writer.write(recordKey(id, 'i', 7), 'digest-in')
    writer.write(recordKey(id, 'w', 'digest-in'), String(now))
  }
  now += 2 // the next bucket, in the same flush
  for (const id of clients) writer.write(recordKey(id, 'o', 7), 'digest-out')
  writer.flush()
  await pollUntil('the batch written', 5000, () => writer.stats.written === clients.length * 3 ? true : undefined)
  for (const id of clients) {
    t.equal(await reader.read(recordKey(id, 'i', 7)), 'digest-in', `${id}: client → broker record found by another instance`)
    t.equal(await reader.read(recordKey(id, 'o', 7)), 'digest-out', `${id}: broker → client record, written in the next bucket`)
    t.equal(await reader.read(recordKey(id, 'w', 'digest-in')), String(now - 2), `${id}: window record`)
    t.equal(await reader.read(recordKey(id, 'o', 8)), undefined, `${id}: nothing for another packet ID`)
  }
  t.same({ ...writer.stats, queued: 0 }, { flushes: 1, written: clients.length * 3, dropped: 0, lookups: 0, lookupFailures: 0, queued: 0 }, 'one flush (the ID\'s tombstone replaced in the batch), nothing dropped')
  t.equal(reader.stats.lookupFailures, 0, 'no lookup failed')
})

t.test('auth: brute-force counters and blocks shared through the Cluster', async (t) => {
  const o = authOptions({ allowAnonymous: true, bruteForce: { maxFailures: 3 } }, { configDir: process.cwd(), redis: true })
  const shared = new SharedBruteForce(redis, 'ck4:auth:', o.bruteForce!, pino({ level: 'silent' }), o.redisTimeoutMs)
  const users = await onDifferentNodes((i) => `user:bob-${i}`, (k) => `ck4:auth:bf:{${encodeURIComponent(k)}}:n`, 2)
  const keys = [...users, 'address:10.9.0.1']
  for (let i = 0; i < 2; i++) t.same(await shared.failed(keys), { blocked: [] })
  const third = await shared.failed(keys)
  t.same(third.blocked.map((b) => [b.key, b.failures]), keys.map((k) => [k, 3]), 'the 3rd failure blocks every key')
  t.match(await shared.blocked(keys), { key: users[0] }, 'blocked, for every instance')
  await shared.succeeded(users[0] as string)
  t.match(await shared.blocked([users[1] as string]), { key: users[1] })
})

t.test('no node counted a CROSSSLOT error, no store reported a failure; a cross-slot script is counted', async (t) => {
  const after = await errorStats()
  const grew = [...after].filter(([type, count]) => count > (before.get(type) ?? 0))
  t.same(grew.filter(([type]) => type !== 'MOVED' && type !== 'ASK'), [], `error replies since the start: ${JSON.stringify(grew)}`)
  t.same(failures, [], 'no store failure')
  await t.rejects(redis.eval("return redis.call('GET', KEYS[2])", 2, leaseKey('x:', 'a'), leaseKey('x:', 'b')), /CROSSSLOT/)
  t.equal((await errorStats()).get('CROSSSLOT'), (after.get('CROSSSLOT') ?? 0) + 1, 'the count sees a cross-slot call')
})
