// Redis failover, measured (issue 20): for Sentinel (the primary killed, its replica promoted)
// and Cluster (the primary that holds a client's lease killed, its replica promoted), two proxy
// processes in front of one Mosquitto with auth (file and Redis users), client-id and dedupe,
// under steady traffic: 20 QoS 1 publishers through A, 2 subscribers through B, a CONNECT
// prober on both proxies every 100 ms (a Redis user: the auth and client-id path; a file user:
// the client-id path alone), a holder keeping one client ID, and a raw client resending
// acknowledged messages with DUP every 100 ms (what dedupe must remove). On a Cluster every
// probed key (lease, Redis user, dedupe shard) is on the killed primary. Printed: how long each
// plugin was degraded and what its policy did; asserted: afterwards the held ID is refused to
// another identity through the other proxy, DUP resends are removed again, no acked message is
// lost, every publisher and subscriber still works, both proxies answer /readyz 200 unrestarted.

import { createRequire } from 'node:module'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import os from 'node:os'
import t, { type Test } from 'tap'
import mqtt from 'mqtt'
import { cleanupAll, pollUntil } from '../helpers/processes.js'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startGuard } from '../helpers/guard-process.js'
import { tempDir } from '../helpers/auth-clients.js'
import { startRedisCluster, startRedisSentinel } from '../helpers/redis-topologies.js'
import { pairs, redisCall } from '../helpers/redis-admin.js'
import { rand } from '../helpers/redis-fleet.js'
import { connectOnce, probe, resender, sampler, sampleMetrics, span, startTraffic, tally, TICK_MS, type ProbeResult, type Sample } from '../helpers/failover-traffic.js'
import { formatHash, hashPbkdf2 } from '../../plugins/auth/password-file.js'
import { leaseKey } from '../../plugins/client-id/redis-store.js'
import { shardOf } from '../../plugins/dedupe/records.js'

const slotOf = createRequire(import.meta.url)('cluster-key-slot') as (key: string) => number

t.teardown(cleanupAll)
const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

const PW = { file: 'pw-File-f41l', redis: 'pw-Redis-0v3r' }
const dir = await tempDir(t, 'mqtt-guard-failover-')
const passwordFile = path.join(dir, 'passwd')
const fileHash = formatHash(await hashPbkdf2(PW.file))
await writeFile(passwordFile, ['traffic', 'holder', 'intruder', 'fileprobe'].map((u) => `${u}:${fileHash}\n`).join(''))
const redisHash = formatHash(await hashPbkdf2(PW.redis))
const LEASE_MS = 3000
// On a Cluster, lease renewals that span several primaries fail (ioredis auto-pipelining groups
// the defined scripts by the slot of their first argument, the key count): see docs/reliability.md.

/** What the test needs of a topology: its config form, where a key lives, a write, the kill. */
interface Topology {
  name: 'sentinel' | 'cluster'
  form: (keyPrefix: string) => Record<string, unknown>
  /** After aim(): does this key live on the primary that will be killed? */
  onTarget: (key: string) => boolean
  aim: (key: string) => Promise<void>
  hset: (key: string, ...fv: string[]) => Promise<void>
  waitForSync: () => Promise<void>
  kill: () => Promise<{ port: number, at: number }>
  waitForFailover: () => Promise<{ port: number, ms: number }>
  stop: () => Promise<void>
}

async function sentinel (): Promise<Topology> {
  const set = await startRedisSentinel()
  return {
    name: 'sentinel',
    form: (keyPrefix) => ({ sentinels: set.sentinels.map((s) => `${s.host}:${s.port}`), name: set.name, keyPrefix }),
    onTarget: () => true,
    aim: async () => {},
    hset: async (key, ...fv) => { if (await redisCall(set.primary.port, 'HSET', key, ...fv) === undefined) throw new Error(`HSET ${key} failed`) },
    waitForSync: () => set.waitForSync(),
    kill: () => set.killPrimary(),
    waitForFailover: () => set.waitForFailover(20_000),
    stop: () => set.stop()
  }
}

async function cluster (): Promise<Topology> {
  const c = await startRedisCluster()
  let target: { key: string, slots: number[] } | undefined
  const slotsOf = async (port: number): Promise<number[]> => {
    const live = c.nodes.find((n) => n.running)?.port ?? port
    const reply = await redisCall(live, 'CLUSTER', 'SHARDS')
    for (const s of Array.isArray(reply) ? reply.map(pairs) : []) {
      const nodes = s.get('nodes')
      if (Array.isArray(nodes) && nodes.map(pairs).some((n) => Number(n.get('port')) === port && n.get('role') === 'master')) return (s.get('slots') as number[] | undefined) ?? []
    }
    throw new Error(`no slots for ${port}`)
  }
  const inRanges = (ranges: number[], slot: number): boolean => ranges.some((start, i) => i % 2 === 0 && slot >= start && slot <= (ranges[i + 1] ?? -1))
  return {
    name: 'cluster',
    form: (keyPrefix) => ({ cluster: c.seeds, keyPrefix }),
    onTarget: (key) => target !== undefined && inRanges(target.slots, slotOf(key)),
    aim: async (key) => { target = { key, slots: await slotsOf((await c.primaryOf(key)).port) } },
    hset: async (key, ...fv) => { if (await redisCall((await c.primaryOf(key)).port, 'HSET', key, ...fv) === undefined) throw new Error(`HSET ${key} failed`) },
    waitForSync: () => c.waitForSync(),
    kill: () => c.killPrimaryOf(target?.key ?? ''),
    waitForFailover: () => c.waitForFailover(20_000),
    stop: () => c.stop()
  }
}

/** The first `name(n)` whose key `key(n)` is on the primary to be killed (bounded). */
function pick (topo: Topology, name: (n: number) => string, key: (s: string) => string, from = 0): string {
  for (let n = from; n < from + 10_000; n++) if (topo.onTarget(key(name(n)))) return name(n)
  throw new Error('no name whose key is on the target primary')
}

const describe = (s: { first: number, last: number, n: number } | undefined): string => s === undefined ? 'none' : `${s.n} from ${s.first} to ${s.last} ms`

async function measure (t: Test, topo: Topology): Promise<void> {
  const tag = `${topo.name}-${rand()}`
  const kp = `fo-${rand()}:`
  const holderId = `${tag}-holder`
  await topo.aim(leaseKey('', holderId))
  const authKey = (u: string): string => `${kp}auth:user:${u}`
  const proberUser = pick(topo, (n) => `rprobe${n}`, authKey)
  await topo.hset(authKey(proberUser), 'password', redisHash)
  const resenderId = pick(topo, (n) => `${tag}-dup${n}`, (id) => `{s:${shardOf(id)}}`)
  let idNo = 0
  const nextId = (): string => { const id = pick(topo, (n) => `${tag}-c${n}`, (s) => leaseKey('', s), idNo); idNo = Number(id.slice(id.lastIndexOf('c') + 1)) + 1; return id }

  const config = {
    upstream: mosquitto.url,
    redis: topo.form(kp),
    plugins: [
      { name: 'auth', passwordFile, redisUsers: { cacheMs: 0 } },
      // The default policy; a lease of 3 s (renewed every 1 s) so that the held-ID check after the
      // failover comes after several lease lifetimes: it shows renewal, not the first write.
      { name: 'client-id', leaseMs: LEASE_MS },
      { name: 'dedupe' }
    ]
  }
  const [a, b] = await Promise.all([startGuard(t, config), startGuard(t, config)])
  const admins = { A: `http://127.0.0.1:${await a.proc.adminPort()}`, B: `http://127.0.0.1:${await b.proc.adminPort()}` }
  const pids = { A: a.proc.child.pid, B: b.proc.child.pid }
  await pollUntil('both proxies see Redis up', 15_000, async () => (await Promise.all(Object.entries(admins).map(async ([p, u]) => (await sampleMetrics(p, u)).up === 1))).every(Boolean) ? true : undefined)

  const fileUser = { username: 'traffic', password: PW.file }
  const holder = await mqtt.connectAsync(a.url, { protocolVersion: 4, clientId: holderId, username: 'holder', password: PW.file, reconnectPeriod: 0 })
  const holderSince = Date.now()
  t.teardown(async () => { await holder.endAsync(true) })
  let holderClosedAt: number | undefined
  holder.on('close', () => { holderClosedAt ??= Date.now() })
  const topic = `failover/${tag}`
  const traffic = await startTraffic(t, { pubUrl: a.url, subUrl: b.url, topic, pubs: 20, subs: 2, periodMs: 200, user: fileUser, tag })
  const DUPS = 150
  const dup = await resender(a.port, resenderId, fileUser, `${topic}/dup`, DUPS)
  t.teardown(dup.close)
  // The control: a DUP resend before the kill is removed (the record is in Redis, not only in the batch).
  await dup.resend(1)
  await pollUntil('the control resend removed', 5_000, async () => ((await sampleMetrics('A', admins.A)).removed ?? 0) >= 1 ? true : undefined)
  await topo.waitForSync()

  const probes: ProbeResult[] = []
  const samples: Sample[] = []
  const resends: Array<{ id: number, at: number, ms: number }> = []
  let running = true
  const streams = [
    ...(['A', 'B'] as const).map((p) => ({ proxy: p, kind: 'redis-user', url: p === 'A' ? a.url : b.url, username: proberUser, password: PW.redis })),
    ...(['A', 'B'] as const).map((p) => ({ proxy: p, kind: 'file-user', url: p === 'A' ? a.url : b.url, username: 'fileprobe', password: PW.file }))
  ]
  const probing = probe(streams, nextId, () => running, probes)
  const sampling = sampler(admins, () => running, samples)
  const resending = (async () => {
    for (let id = 2; running && id <= DUPS; id++) {
      const at = Date.now()
      resends.push({ id, at, ms: await dup.resend(id) })
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, TICK_MS - (Date.now() - at))))
    }
  })()
  await new Promise((resolve) => setTimeout(resolve, 2000)) // a baseline of steady traffic before the kill
  const killed = await topo.kill()
  const t0 = killed.at
  const failover = await topo.waitForFailover()
  const seenBy = await pollUntil('both proxies count the failover', 20_000, () => {
    const at = (p: string): number | undefined => samples.find((s) => s.proxy === p && (s.failovers ?? 0) >= 1)?.at
    const [x, y] = [at('A'), at('B')]
    return x !== undefined && y !== undefined ? { A: x - t0, B: y - t0 } : undefined
  })
  await new Promise((resolve) => setTimeout(resolve, 5000)) // steady traffic after the failover
  running = false
  await Promise.all([probing, sampling, resending, traffic.stop()])

  // Everything acked reaches both subscribers (bounded), then the counts.
  await pollUntil('acked messages delivered', 15_000, () => tally(traffic).lost === 0 ? true : undefined).catch(() => undefined)
  const counts = tally(traffic)
  const copies = (id: number): number => Math.max(...traffic.seen.map((m) => m.get(`dup-${id}`) ?? 0))
  const forwarded = resends.filter((r) => copies(r.id) > 1)
  await pollUntil('the resend originals delivered', 10_000, () => resends.every((r) => copies(r.id) >= 1) ? true : undefined).catch(() => undefined)

  const rel = (p: ProbeResult): boolean => p.at >= t0 - 500
  const authRefused = span(probes, (p) => p.kind === 'redis-user' && p.code !== 0 && rel(p), t0)
  const idRefused = span(probes, (p) => p.kind === 'file-user' && p.code !== 0 && rel(p), t0)
  const slow = span(probes, (p) => p.ms > 500, t0)
  const codes = (kind: string): string => [...new Set(probes.filter((p) => p.kind === kind && p.code !== 0).map((p) => String(p.code)))].join(',') || 'none'
  const failOpen = (['A', 'B'] as const).map((p) => {
    const s = samples.filter((x) => x.proxy === p && x.failOpen !== undefined)
    return { p, n: (s.at(-1)?.failOpen ?? 0) - (s[0]?.failOpen ?? 0), when: span(s.slice(1), (x) => (x.failOpen ?? 0) > (s[s.indexOf(x) - 1]?.failOpen ?? 0), t0) }
  })
  const down = (['A', 'B'] as const).map((p) => ({ p, span: span(samples, (x) => x.proxy === p && x.up === 0, t0) }))
  const last = (p: string): Sample | undefined => samples.filter((x) => x.proxy === p && x.ok).at(-1)

  t.comment(`${topo.name}: primary on ${killed.port} killed at t0 (${new Date(t0).toISOString()}, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}); ${failover.port} serves as primary after ${failover.ms} ms; failovers_total counted by A at ${seenBy.A} ms, B at ${seenBy.B} ms`)
  t.comment(`redis_up 0: ${down.map((d) => `${d.p} ${describe(d.span)}`).join('; ')} (samples every 250 ms)`)
  t.comment(`auth (Redis user, cacheMs 0): refusals ${describe(authRefused)}, codes ${codes('redis-user')}; ${probes.filter((p) => p.kind === 'redis-user').length} probes`)
  t.comment(`client-id (file user, failOpen default): refusals ${describe(idRefused)}, codes ${codes('file-user')}; fail-open admissions ${failOpen.map((f) => `${f.p} ${f.n} (${describe(f.when)})`).join(', ')}; failClosed A ${last('A')?.failClosed ?? '-'} B ${last('B')?.failClosed ?? '-'}`)
  t.comment(`CONNECTs slower than 500 ms: ${describe(slow)}, slowest ${Math.max(...probes.map((p) => p.ms))} ms`)
  t.comment(`dedupe: ${resends.length} DUP resends, ${forwarded.length} forwarded (${describe(span(forwarded, () => true, t0))}), slowest PUBACK ${Math.max(...resends.map((r) => r.ms))} ms; redis failures A ${JSON.stringify({ dropped: last('A')?.dropped, lookup: last('A')?.lookup })} B ${JSON.stringify({ dropped: last('B')?.dropped, lookup: last('B')?.lookup })}`)
  t.comment(`traffic: ${JSON.stringify(counts)} (sent = acked publishes; delivered/lost/duplicates over 2 subscribers)`)

  for (const [p, g] of [['A', a], ['B', b]] as const) {
    const first = (prefix: string): string => {
      const l = g.logged(prefix).filter((x) => prefix !== 'auth refused' || x.reason === 'user-store-unavailable')[0]
      return l === undefined ? 'none' : `at ${new Date(l.time as string | number).getTime() - t0} ms ${JSON.stringify(l.err ?? l.detail ?? l.reason)}`
    }
    t.comment(`${p} logged: client-id ${first('client-id: redis unavailable')}; dedupe ${first('dedupe: redis')}; auth ${g.logged('auth refused').filter((x) => x.reason === 'user-store-unavailable').length} user-store-unavailable, first ${first('auth refused')}`)
  }
  // After-checks.
  const healed = t0 + failover.ms + 2000
  t.same(forwarded.filter((r) => r.at > healed).map((r) => r.id), [], 'DUP resends sent 2 s after the failover are all removed (the records survived it)')
  t.equal(counts.lost, 0, 'no acknowledged message lost')
  t.equal(counts.duplicates, 0, 'no duplicate among the plain publishes')
  t.equal(holderClosedAt, undefined, 'the holder is still connected')
  t.ok(Date.now() - holderSince > 2 * LEASE_MS, 'the holder has held its ID for more than two lease lifetimes')
  const intruder = await connectOnce(b.url, holderId, 'intruder', PW.file)
  t.comment(`intruder with the holder's client ID through B: CONNACK ${intruder.code}`)
  t.equal(intruder.code, 2, 'the held client ID is refused to another identity through the other proxy (CONNACK 2)')
  const after = `${topic}/after`
  await Promise.all(traffic.publishers.map(async (c, i) => await c.publishAsync(after, `after-${i}`, { qos: 1 })))
  await pollUntil('every publisher\'s after-message at every subscriber', 10_000, () => traffic.seen.every((m) => traffic.publishers.every((_, i) => m.has(`after-${i}`))) ? true : undefined)
  t.pass('all 20 publishers still publish and both subscribers receive')
  for (const [p, u] of Object.entries(admins)) {
    const res = await fetch(`${u}/readyz`)
    t.equal(res.status, 200, `${p} /readyz 200`)
  }
  t.same({ A: a.proc.child.pid, B: b.proc.child.pid }, pids, 'the same processes (no restart)')
  t.ok(a.proc.running && b.proc.running, 'both still running')
  t.ok(seenBy.A >= 0 && seenBy.B >= 0, 'both counted the failover')
}

for (const make of [sentinel, cluster]) {
  t.test(`${make.name}: a primary killed under traffic`, { timeout: 60_000 }, async (t) => {
    const topo = await make()
    t.teardown(topo.stop)
    await measure(t, topo)
  })
}
