// Redis Cluster (3 primaries, 3 replicas) and Redis Sentinel (1 primary, 1 replica, 3 sentinels),
// real servers on loopback, each started once for this file: ioredis writes and reads through
// both (plain keys, a hash-tagged two-key Lua script, a pipeline), keeps working after a primary
// is killed with SIGKILL (the failover and the client's own recovery are timed and printed), and
// stop() leaves no process and no temp dir behind.

import { existsSync } from 'node:fs'
import { Cluster, Redis } from 'ioredis'
import t from 'tap'
import type { Test } from 'tap'
import { cleanupAll, pidAlive, pollUntil } from '../helpers/processes.js'
import { startRedisCluster, startRedisSentinel } from '../helpers/redis-topologies.js'

t.teardown(cleanupAll)

// A client's lease and its counter: two keys, one slot thanks to the {clientId} hash tag.
const CLAIM = {
  numberOfKeys: 2,
  lua: "redis.call('SET', KEYS[1], ARGV[1], 'PX', 60000); return redis.call('INCR', KEYS[2])"
}
type Claiming = { claim(lease: string, count: string, owner: string): Promise<number> }
type Client = (Redis | Cluster) & Claiming

/** Messages of the errors a client returned, digits folded, with counts: what surfaces to callers. */
class Errors extends Map<string, number> {
  add(err: unknown): void {
    const m = (err as Error).message.replace(/\d+/g, 'N').slice(0, 90)
    this.set(m, (this.get(m) ?? 0) + 1)
  }

  override toString(): string {
    return [...this].map(([m, n]) => `${n}x "${m}"`).join('; ') || 'none'
  }
}

/** Counts of a client's events, and the errors they carried: the comment that documents a failover. */
class Events {
  readonly counts = new Map<string, number>()
  readonly errors = new Errors()

  constructor(client: Redis | Cluster, names: string[]) {
    for (const name of names) {
      client.on(name, (arg: unknown) => {
        this.counts.set(name, (this.counts.get(name) ?? 0) + 1)
        if (arg instanceof Error) this.errors.add(arg)
      })
    }
  }

  clear(): void {
    this.counts.clear()
    this.errors.clear()
  }

  toString(): string {
    return `${[...this.counts].map(([e, n]) => `${e} x${n}`).join(', ')}; their errors: ${this.errors.toString()}`
  }
}

async function writesAndReads(t: Test, client: Client, tag: string): Promise<void> {
  const keys = Array.from({ length: 30 }, (_, i) => `rt:${tag}:${i}`)
  for (const k of keys) await client.set(k, `v-${k}`)
  const got = await Promise.all(keys.map(k => client.get(k)))
  t.same(got, keys.map(k => `v-${k}`), `${keys.length} keys written and read`)
  t.equal(await client.claim(`lease:{c-${tag}}`, `count:{c-${tag}}`, 'me'), 1, 'Lua script on two hash-tagged keys')
  t.equal(await client.claim(`lease:{c-${tag}}`, `count:{c-${tag}}`, 'me'), 2, 'the script again (EVALSHA)')
  const piped = await client.pipeline().set(`p:{${tag}}:a`, '1').incr(`p:{${tag}}:b`).get(`p:{${tag}}:a`).exec()
  t.same(piped?.map(([err, v]) => err ?? v), ['OK', 1, '1'], 'pipeline on one hash tag')
}

/** Write and read `key` until both succeed; ms since `since` and the errors met meanwhile. */
async function recovery(client: Client, key: string, since: number, deadlineMs: number): Promise<{ ms: number; errors: Errors }> {
  const errors = new Errors()
  let i = 0
  await pollUntil(`the client to write and read ${key} again`, deadlineMs, async () => {
    const v = `after-${i++}`
    try {
      await client.set(key, v)
      return (await client.get(key)) === v ? true : undefined
    } catch (err) {
      errors.add(err)
      return undefined
    }
  })
  return { ms: Date.now() - since, errors }
}

async function stopsCleanly(t: Test, topo: { pids(): number[]; dirs(): string[]; stop(): Promise<void> }): Promise<void> {
  const pids = topo.pids()
  await topo.stop()
  t.same(pids.filter(pidAlive), [], `none of the ${pids.length} PIDs is left`)
  t.same(topo.dirs().filter(d => existsSync(d)), [], 'every temp dir removed')
}

t.test('Redis Cluster: 3 primaries + 3 replicas', { timeout: 45_000 }, async t => {
  const t0 = Date.now()
  const cluster = await startRedisCluster({ primaries: 3, replicasPerPrimary: 1, nodeTimeoutMs: 1000 })
  t.teardown(() => cluster.stop())
  t.comment(`cluster formed and ready in ${Date.now() - t0} ms`)
  t.equal(cluster.nodes.filter(n => n.role === 'primary').length, 3, '3 primaries')
  t.ok(cluster.nodes.every(n => n.port + 10_000 < 65_536), 'bus ports in range')
  const client = new Cluster(cluster.startupNodes, { scripts: { claim: CLAIM } }) as Client & Cluster
  const events = new Events(client, ['+node', '-node', 'node error', 'error', 'refresh', 'reconnecting', 'ready', 'end'])
  t.teardown(() => { client.disconnect() })

  await t.test('writes and reads', { timeout: 10_000 }, async t => {
    await writesAndReads(t, client, 'cluster')
    await t.rejects(client.eval("return redis.call('MSET', KEYS[1], 1, KEYS[2], 2)", 2, 'a{x}', 'b{y}'),
      /CROSSSLOT|Lua script attempted to access keys of different hash slots/, 'two slots in one script are refused')
  })

  await t.test('survives a primary kill', { timeout: 25_000 }, async t => {
    const key = 'failover:{cluster}'
    await client.set('kept:{cluster}', 'before') // same slot, so on the primary that is killed
    await cluster.waitForSync()
    const owner = await cluster.primaryOf(key)
    events.clear()
    const killed = await cluster.killPrimaryOf(key)
    t.equal(killed.port, owner.port, `killed the primary of slot ${killed.slot} (port ${killed.port})`)
    const [failover, rec] = await Promise.all([cluster.waitForFailover(15_000), recovery(client, key, killed.at, 15_000)])
    t.not(failover.port, killed.port, `replica on port ${failover.port} promoted`)
    t.comment(`cluster failover (SIGKILL to cluster_state:ok everywhere): ${failover.ms} ms`)
    t.comment(`client wrote and read again after ${rec.ms} ms; errors meanwhile: ${rec.errors.toString()}`)
    t.comment(`client events meanwhile: ${events.toString()}`)
    t.equal(await client.get('kept:{cluster}'), 'before', 'a key written before the kill reads back (replicated)')
    await writesAndReads(t, client, 'cluster-after')
    t.equal(client.status, 'ready', 'client status is ready')
  })

  await t.test('stops cleanly', { timeout: 15_000 }, async t => {
    client.disconnect()
    await stopsCleanly(t, cluster)
  })
})

t.test('Redis Sentinel: 1 primary + 1 replica + 3 sentinels', { timeout: 45_000 }, async t => {
  const t0 = Date.now()
  const set = await startRedisSentinel({ replicas: 1, sentinels: 3, downAfterMs: 1000, failoverTimeoutMs: 2000 })
  t.teardown(() => set.stop())
  t.comment(`sentinel set started and agreed in ${Date.now() - t0} ms`)
  const client = new Redis({ sentinels: set.sentinels, name: set.name, scripts: { claim: CLAIM } }) as Client & Redis
  const events = new Events(client, ['close', 'reconnecting', 'connect', 'ready', 'error', 'end'])
  t.teardown(() => { client.disconnect() })

  await t.test('writes and reads', { timeout: 10_000 }, async t => {
    await writesAndReads(t, client, 'sentinel')
  })

  await t.test('survives a primary kill', { timeout: 25_000 }, async t => {
    const key = 'failover:{sentinel}'
    await client.set('kept:{sentinel}', 'before')
    await set.waitForSync()
    events.clear()
    const killed = await set.killPrimary()
    const [failover, rec] = await Promise.all([set.waitForFailover(15_000), recovery(client, key, killed.at, 15_000)])
    t.not(failover.port, killed.port, `replica on port ${failover.port} promoted`)
    t.equal(set.primary.port, failover.port, 'the helper follows the new primary')
    t.comment(`sentinel failover (SIGKILL to every sentinel naming the new master): ${failover.ms} ms`)
    t.comment(`client wrote and read again after ${rec.ms} ms; errors meanwhile: ${rec.errors.toString()}`)
    t.comment(`client events meanwhile: ${events.toString()}`)
    t.equal(await client.get('kept:{sentinel}'), 'before', 'a key written before the kill reads back (replicated)')
    await writesAndReads(t, client, 'sentinel-after')
    t.equal(client.status, 'ready', 'client status is ready')
  })

  await t.test('stops cleanly', { timeout: 15_000 }, async t => {
    client.disconnect()
    await stopsCleanly(t, set)
  })
})
