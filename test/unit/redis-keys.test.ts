// Redis Cluster slots of every key family, without a server: the client-id store, the dedupe
// records, the brute-force counters, the Redis users and the quota counters and leases run against a recording stand-in for
// ioredis, and every script call, command and pipeline they make must touch keys of one slot
// (as computed by cluster-key-slot, the function ioredis routes with). Client IDs, user names
// and addresses include braces, `%` and non-ASCII, which must not move a key to another slot.
// Also: the hash tag escapes, and the key prefix check.

import { createRequire } from 'node:module'
import t, { type Test } from 'tap'
import pino from 'pino'
import type { Redis } from 'ioredis'
import { RedisStore, flapKeys, leaseKey } from '../../plugins/client-id/redis-store.js'
import { validateOptions as clientIdOptions } from '../../plugins/client-id/options.js'
import { RedisRecords, SHARDS, recordKey, shardOf } from '../../plugins/dedupe/records.js'
import { SharedBruteForce } from '../../plugins/auth/brute-force-redis.js'
import { BRUTE_FORCE_DEFAULTS } from '../../plugins/auth/brute-force.js'
import { RedisUsers } from '../../plugins/auth/redis-users.js'
import { RedisQuotaStore, connsKey, useKey } from '../../plugins/quota/redis-store.js'
import { hashTag } from '../../src/redis/hash-tag.js'
import { buildConfig } from '../../src/config/config.js'
import type { Claim, Holder } from '../../plugins/client-id/store.js'

const slotOf = createRequire(import.meta.url)('cluster-key-slot') as (key: string) => number

/** One script call, command or pipeline: what it was and the keys it touched. */
interface Call { what: string, keys: string[] }

const SCRIPT_REPLIES: Record<string, unknown> = {
  clientIdAdmit: ['admitted'], clientIdFlap: ['counted'], clientIdHistory: 1, clientIdRelease: 1, clientIdRenew: 1,
  quotaUse: [1, 10, 0, 0], quotaAdmit: [1, 1], quotaRenew: 1, quotaRelease: 1
}

/** Records what a store asks of ioredis and answers like an empty Redis. */
class Recorder {
  readonly calls: Call[] = []
  status = 'ready'
  constructor (readonly isCluster = true) {}

  /** Scripts come with their key count fixed (`clientIdAdmit4`): the keys are the first arguments. */
  defineCommand (command: string, definition: { numberOfKeys?: number }): void {
    const name = command.replace(/\d+$/, '')
    const numKeys = definition.numberOfKeys
    if (numKeys === undefined) throw new Error(`${command}: defined without a fixed key count`)
    Object.assign(this, {
      [command]: async (...args: unknown[]) => {
        this.calls.push({ what: name, keys: args.slice(0, numKeys).map(String) })
        return SCRIPT_REPLIES[name]
      }
    })
  }

  private command (what: string, keys: string[], reply: unknown): Promise<unknown> {
    this.calls.push({ what, keys })
    return Promise.resolve(reply)
  }

  get (key: string): Promise<unknown> { return this.command('get', [key], null) }
  del (key: string): Promise<unknown> { return this.command('del', [key], 1) }
  hgetall (key: string): Promise<unknown> { return this.command('hgetall', [key], {}) }
  hset (key: string): Promise<unknown> { return this.command('hset', [key], 1) }
  pexpireat (key: string): Promise<unknown> { return this.command('pexpireat', [key], 1) }
  eval (_lua: string, numKeys: number, ...args: unknown[]): Promise<unknown> { return this.command('eval', args.slice(0, numKeys).map(String), 0) }

  pipeline (): unknown {
    const keys: string[] = []
    const p = {
      hset: (key: string) => { keys.push(key); return p },
      hget: (key: string) => { keys.push(key); return p },
      pexpireat: (key: string) => { keys.push(key); return p },
      exec: async () => await this.command('pipeline', keys, keys.map(() => [null, null]))
    }
    return p
  }

  get client (): Redis { return this as unknown as Redis }
}

/** Every recorded call touches one slot; returns the calls for further checks. */
function oneSlotEach (t: Test, rec: Recorder, what: string): Call[] {
  t.ok(rec.calls.length > 0, `${what}: calls were made`)
  for (const call of rec.calls) {
    const slots = new Set(call.keys.map(slotOf))
    if (slots.size > 1) t.fail(`${what}: ${call.what} touches ${slots.size} slots: ${call.keys.join(' ')}`)
  }
  t.pass(`${what}: ${rec.calls.length} calls, each on one slot`)
  return rec.calls
}

const IDS = ['dev-1', 'a{b}c', '{', '}', '}{', '{}', '%7B', '%', 'ünï/😀 x', 'x'.repeat(300), 'id:dev-1', '\n']
const USERS = ['bob', 'b{o}b', '}', 'ä']
const ADDRESSES = ['127.0.0.1', '::ffff:10.0.0.7', 'fe80::1%eth0']
const PREFIXES = ['mqtt-guard:client-id:', 'test-7:client-id:', '']

t.test('hash tags: escaped, so no value ends a tag early and two values never share one', async (t) => {
  t.equal(hashTag('id', 'dev-1'), '{id:dev-1}')
  t.equal(hashTag('id', 'a{b}c'), '{id:a%7Bb%7Dc}')
  t.equal(hashTag('id', '%7B'), '{id:%257B}')
  const tags = IDS.map((id) => hashTag('id', id))
  t.equal(new Set(tags).size, IDS.length, 'one tag per ID')
  for (const tag of tags) t.match(tag, /^\{[^{}]*\}$/, `${tag.slice(0, 30)}: one pair of braces`)
})

t.test('key prefix: braces refused on a Cluster, with the reason; the keys show why', async (t) => {
  const onCluster = (keyPrefix: string): () => unknown => () => buildConfig({ redis: { cluster: ['127.0.0.1:7000'], keyPrefix } }, {})
  for (const ok of ['mqtt-guard:', 'fleet-1:', 'a:b:c:']) t.doesNotThrow(onCluster(ok), JSON.stringify(ok))
  for (const bad of ['a{b}:', 'a{:', 'a}:', '{}:']) t.throws(onCluster(bad), /^redis\.keyPrefix: .* has a \{ or \}/, JSON.stringify(bad))
  // The first `{` wins: with `a{` in the prefix the tag runs from it to the end of our own tag,
  // so a client's lease and its counter fall apart.
  const bad = 'a{:client-id:'
  t.not(slotOf(leaseKey(bad, 'dev-1')), slotOf(flapKeys(bad, 'id:dev-1')[0]), 'lease and counter split')
  t.equal(slotOf(leaseKey('a:client-id:', 'dev-1')), slotOf(flapKeys('a:client-id:', 'id:dev-1')[0]), 'without the brace they share a slot')
})

t.test('client-id: a client\'s lease and its own flapping keys share a slot, whatever the prefix and ID', async (t) => {
  for (const prefix of PREFIXES) {
    for (const id of IDS) {
      const slots = new Set([leaseKey(prefix, id), ...flapKeys(prefix, `id:${id}`)].map(slotOf))
      if (slots.size !== 1) t.fail(`${prefix}${id}: ${slots.size} slots`)
    }
    for (const key of [...USERS.map((u) => `user:${u}`), ...ADDRESSES.map((a) => `addr:${a}`)]) {
      if (new Set(flapKeys(prefix, key).map(slotOf)).size !== 1) t.fail(`${prefix}${key}: several slots`)
    }
  }
  t.equal(slotOf(leaseKey('p1:client-id:', 'dev-1')), slotOf(leaseKey('p2:client-id:', 'dev-1')), 'the slot is the tag\'s, not the prefix\'s')
  t.equal(flapKeys('P:', 'user:a:b')[0], 'P:flap:n:{user:a:b}', 'a colon in the value stays in the value')
})

t.test('client-id: every script call of admit, release and renew touches one slot', async (t) => {
  const o = clientIdOptions({ flapping: { maxConnects: 3, by: ['clientId', 'username', 'address'] } })
  const orders = [['clientId', 'username', 'address'], ['username', 'address', 'clientId'], ['address', 'clientId'], ['username'], ['clientId'], []]
  const rec = new Recorder()
  const store = new RedisStore(rec.client, 'mqtt-guard:client-id:', o.leaseMs, o.flapping, o.redisTimeoutMs)
  const leases: Array<{ clientId: string, holder: Holder }> = []
  for (const [i, id] of IDS.entries()) {
    const user = USERS[i % USERS.length] as string
    const address = ADDRESSES[i % ADDRESSES.length] as string
    const holder: Holder = { owner: `i:${i}`, username: i % 3 === 0 ? undefined : user, address, since: Date.now() }
    const keyOf = { clientId: `id:${id}`, username: holder.username === undefined ? undefined : `user:${user}`, address: `addr:${address}` } as const
    for (const order of orders) {
      const flapKeyList = order.map((k) => keyOf[k as keyof typeof keyOf]).filter((k): k is string => k !== undefined)
      for (const clientId of [id, undefined]) {
        const claim: Claim = { clientId, holder, policy: o.policy, flapKeys: clientId === undefined ? flapKeyList.filter((k) => !k.startsWith('id:')) : flapKeyList }
        t.same(await store.admit(claim), { kind: 'admitted' })
        await store.release(clientId, holder.owner, claim.flapKeys, { t: Date.now(), k: 'e', a: address, why: 'test' })
      }
    }
    leases.push({ clientId: id, holder })
  }
  t.same(await store.renew(leases), leases.map(() => ({ result: 'renewed' })))
  const calls = oneSlotEach(t, rec, 'client-id')
  const admits = calls.filter((c) => c.what === 'clientIdAdmit')
  t.ok(admits.some((c) => c.keys.length === 4) && admits.some((c) => c.keys.length === 1), 'ADMIT with and without the client ID\'s flapping keys')
  t.ok(calls.some((c) => c.what === 'clientIdFlap'), 'FLAP for user names and addresses')
  t.equal(calls.filter((c) => c.what === 'clientIdRenew').length, IDS.length, 'one RENEW per lease')
})

t.test('client-id: the default (by: [clientId]) is one call per CONNECT, as before', async (t) => {
  const o = clientIdOptions({})
  const rec = new Recorder()
  const store = new RedisStore(rec.client, 'mqtt-guard:client-id:', o.leaseMs, o.flapping, o.redisTimeoutMs)
  await store.admit({ clientId: 'dev-1', holder: { owner: 'o', username: 'u', address: '10.0.0.1', since: Date.now() }, policy: o.policy, flapKeys: ['id:dev-1'] })
  t.same(rec.calls, [{ what: 'clientIdAdmit', keys: [leaseKey('mqtt-guard:client-id:', 'dev-1'), ...flapKeys('mqtt-guard:client-id:', 'id:dev-1')] }])
})

t.test('dedupe: a lookup is one slot; a flush is single-key commands on a Cluster (auto-pipelined per node), one pipeline on a server', async (t) => {
  let now = 1_700_000_000_000
  const ttlMs = 300_000
  const make = (rec: Recorder): RedisRecords => new RedisRecords(rec.client, 'mqtt-guard:dedupe:', ttlMs, 5, 500, (what, err) => { t.fail(`${what}: ${String(err)}`) }, () => now)
  const cluster = new Recorder(true)
  const single = new Recorder(false)
  for (const rec of [cluster, single]) {
    const records = make(rec)
    for (const id of IDS) {
      records.write(recordKey(id, 'i', 1), 'd1')
      records.write(recordKey(id, 'o', 65535), 'd2')
      records.write(recordKey(id, 'w', 'abc.def'), String(now))
    }
    now += ttlMs / 4 // the next bucket: one flush spans two
    for (const id of IDS) records.write(recordKey(id, 'i', 2), 'd3')
    records.flush()
    for (const id of IDS) t.equal(await records.read(recordKey(id, 'o', 65535)), undefined, 'the recorder holds nothing')
    t.equal(records.stats.written, IDS.length * 4)
    records.close()
  }
  const calls = oneSlotEach(t, cluster, 'dedupe (Cluster)')
  const shards = new Set(IDS.map(shardOf))
  t.equal(calls.filter((c) => c.what === 'pipeline').length, IDS.length, 'no flush pipeline; one lookup pipeline per read')
  t.equal(calls.filter((c) => c.what === 'hset').length, shards.size * 2, 'one HSET per shard and bucket')
  t.equal(calls.filter((c) => c.what === 'pexpireat').length, shards.size * 2, 'and one PEXPIREAT per new bucket')
  t.equal(single.calls.length, 1 + IDS.length, 'one server: the flush is one pipeline')
  for (const id of IDS) t.ok(shardOf(id) >= 0 && shardOf(id) < SHARDS)
  const spread = new Set(Array.from({ length: 1000 }, (_, i) => shardOf(`device-${i}`)))
  t.equal(spread.size, SHARDS, 'client IDs spread over every shard')
  const slots = new Set(Array.from({ length: SHARDS }, (_, s) => slotOf(make(cluster).key(s, 1))))
  t.equal(slots.size, SHARDS, 'each shard its own slot')
})

t.test('auth: the brute-force script and commands, and a Redis user, touch one slot each', async (t) => {
  const rec = new Recorder()
  const shared = new SharedBruteForce(rec.client, 'mqtt-guard:auth:', BRUTE_FORCE_DEFAULTS, pino({ level: 'silent' }), 1000)
  const keys = [...USERS.map((u) => `user:${u}`), ...ADDRESSES.map((a) => `address:${a}`)]
  await shared.failed(keys)
  await shared.blocked(keys)
  for (const key of keys) await shared.succeeded(key)
  const users = new RedisUsers(rec.client, 'mqtt-guard:auth:', { cacheMs: 0 }, 1000)
  for (const u of USERS) await users.lookup(u)
  const calls = oneSlotEach(t, rec, 'auth')
  t.equal(calls.filter((c) => c.what === 'eval' && c.keys.length === 2).length, keys.length, 'the failure script: count and block together')
})

t.test('quota: a user name\'s counters and its leases share a slot; each call touches one', async (t) => {
  for (const prefix of PREFIXES) {
    for (const user of [...USERS, ...IDS]) {
      const slots = new Set([useKey(prefix, user), connsKey(prefix, user)].map(slotOf))
      if (slots.size !== 1) t.fail(`${prefix}${user}: ${slots.size} slots`)
    }
  }
  const rec = new Recorder()
  const store = new RedisQuotaStore(rec.client, 'mqtt-guard:quota:', () => 15_000, () => 1000)
  const users = [...new Set([...USERS, ...IDS])]
  t.same(await store.add(users.map((key, i) => ({ key, window: 1_700_000_000 + i, m: 1, b: 10, span: 1 }))), users.map(() => [[1, 10], [0, 0]]))
  for (const [i, user] of users.entries()) {
    t.same(await store.admit(user, `i:${i}`, 3), { ok: true, count: 1 })
    await store.release(user, `i:${i}`)
  }
  await store.renew(new Map(users.map((u, i) => [u, [`i:${i}`, `j:${i}`]])))
  const calls = oneSlotEach(t, rec, 'quota')
  t.equal(calls.filter((c) => c.what === 'quotaUse' && c.keys.length === 1).length, users.length, 'one USE per user name')
  t.equal(calls.filter((c) => c.what === 'quotaRenew').length, users.length, 'one RENEW per user name, all its leases of this instance')
})
