// The proxy on Redis Sentinel (1 primary, 1 replica, 3 sentinels, down-after 1 s), real servers
// on loopback: two proxies with the embedded broker share retained messages and persistent
// sessions through the Sentinel form; /metrics, /healthz and /readyz show it; the primary
// killed with SIGKILL is seen as a failover, redis_up comes back to 1 and MQTT works again,
// with no restart.

import t from 'tap'
import { cleanupAll } from '../helpers/processes.js'
import { startRedisSentinel, type RedisSentinelSet } from '../helpers/redis-topologies.js'
import { crossInstance, fleetProxy, metricsUntil, rand, redisGauges } from '../helpers/redis-fleet.js'
import { valueOf } from '../helpers/metrics-scrape.js'

t.teardown(cleanupAll)
const LIMIT = { timeout: 60_000 }

let set: RedisSentinelSet
t.before(async () => { set = await startRedisSentinel() })
t.teardown(async () => { await set?.stop() })

const form = (prefix: string): Record<string, unknown> => ({ sentinels: set.sentinels.map((s) => `${s.host}:${s.port}`), name: set.name, keyPrefix: `${prefix}-${rand()}:` })

t.test('two proxies through Sentinel: one embedded broker state; the form in /metrics, /healthz, /readyz', LIMIT, async (t) => {
  const redis = form('sn')
  const [a, b] = [await fleetProxy(t, redis), await fleetProxy(t, redis)]
  await crossInstance(t, a.url, b.url, 'sentinel')
  const m = await metricsUntil('Redis up', a, (m) => valueOf(m, 'mqtt_guard_redis_up') === 1)
  t.same(redisGauges(m, 'sentinel'), { up: 1, info: 1, readOnly: 0, failovers: 0 }, 'up, topology sentinel, role master, writable, no failover yet')
  t.equal(m.has('mqtt_guard_redis_cluster_ok'), false, 'no Cluster gauges on Sentinel')
  t.match(await a.healthz(), { status: 'ok', redis: { topology: 'sentinel', up: true, role: 'master', readOnly: false, failovers: 0, primary: `127.0.0.1:${set.primary.port}` } }, '/healthz shows the primary in use')
  t.match(await a.readyz(), { status: 200, body: { ready: true, checks: { redis: true }, redis: { topology: 'sentinel' } } })
})

t.test('the primary killed: the failover is seen, Redis is up again and MQTT works, no restart', LIMIT, async (t) => {
  const redis = form('snf')
  const [a, b] = [await fleetProxy(t, redis), await fleetProxy(t, redis)]
  await metricsUntil('Redis up before the kill', a, (m) => valueOf(m, 'mqtt_guard_redis_up') === 1)
  await set.waitForSync()
  const killed = await set.killPrimary()
  const took = await set.waitForFailover(15_000)
  t.comment(`primary on ${killed.port} killed; ${took.port} promoted after ${took.ms} ms`)
  const m = await metricsUntil('failover counted and redis_up 1', a, (m) => (valueOf(m, 'mqtt_guard_redis_failovers_total') ?? 0) >= 1 && valueOf(m, 'mqtt_guard_redis_up') === 1)
  t.same(redisGauges(m, 'sentinel'), { up: 1, info: 1, readOnly: 0, failovers: 1 }, 'one failover, up again on the new primary, writable')
  t.match(await a.healthz(), { redis: { up: true, primary: `127.0.0.1:${took.port}`, failovers: 1 } }, '/healthz names the new primary')
  t.same((await a.proxy.server.diagnose()).findings.filter((f) => f.id === 'redis-unhealthy'), [], 'doctor: healthy again')
  await crossInstance(t, a.url, b.url, 'sentinel-after')
})
