// The quota plugin through the proxy in front of a private Mosquitto, with raw MQTT clients (so
// a test sees each PUBACK, the DISCONNECT's reason code and the close): under the limit nothing
// happens; over messages/s MQTT 5 gets DISCONNECT 0x96 and 3.1.1 is closed; over bytes/s 0x97;
// a burst passes; delay mode slows a client without closing it, and closes it past maxDelayMs;
// connections per user name get CONNACK 0x97 / 3; two proxies on one private Redis count a
// user name's messages and connections together; with Redis unreachable the local limits go on.
// The Redis is one server or a Cluster (MQTT_GUARD_TEST_REDIS; quota.cluster.test.ts runs this
// file on a Cluster).

import t, { type Test } from 'tap'
import type { Packet } from 'mqtt-packet'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startRedisUnderTest } from '../helpers/redis-under-test.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { RawMqttClient, type RawVersion } from '../helpers/raw-client.js'
import { quotaStats, type QuotaStats } from '../../plugins/quota/index.js'
import { useKey } from '../../plugins/quota/redis-store.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const redis = await startRedisUnderTest()
t.teardown(() => redis.stop())
const db = redis.db
let prefixes = 0

async function proxyWith (t: Test, quota: Record<string, unknown>, keyPrefix?: string): Promise<TestProxy> {
  const proxy = await startProxy({ config: { upstream: mosquitto.url, ...(keyPrefix === undefined ? {} : { redis: redis.config(keyPrefix) }), plugins: [{ name: 'quota', ...quota }] } })
  t.teardown(() => proxy.stop())
  return proxy
}

const stats = (p: TestProxy): QuotaStats => quotaStats(p.server.host.plugins.find((x) => x.name === 'quota') as object) as QuotaStats

interface Conn { client: RawMqttClient, code: number | undefined }

/** Opens, sends CONNECT (with a user name when given) and waits for the CONNACK. */
async function connect (t: Test, port: number, version: RawVersion, clientId: string, username?: string): Promise<Conn> {
  const client = await RawMqttClient.open(port, version)
  t.teardown(() => client.destroy())
  const connack = client.next('connack')
  client.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clientId, clean: true, keepalive: 60, ...(username === undefined ? {} : { username }) })
  const p = await connack
  return { client, code: version === 5 ? p.reasonCode : p.returnCode }
}

async function connected (t: Test, port: number, version: RawVersion, clientId: string, username?: string): Promise<RawMqttClient> {
  const c = await connect(t, port, version, clientId, username)
  t.equal(c.code, 0, `${clientId} connected`)
  return c.client
}

let ids = 1
const publish = (c: RawMqttClient, bytes = 10, qos: 0 | 1 = 1): void => {
  c.sendPacket({ cmd: 'publish', topic: 'quota/t', payload: Buffer.alloc(bytes, 0x61), qos, retain: false, dup: false, ...(qos === 1 ? { messageId: ids++ % 65535 + 1 } : {}) })
}

/** Sends `n` QoS 1 PUBLISHes one after another, each after the last one's PUBACK; stops at a close. Returns how many were acknowledged. */
async function oneByOne (c: RawMqttClient, n: number, bytes = 10): Promise<number> {
  let acked = 0
  for (let i = 0; i < n && !c.isClosed; i++) {
    const ack = c.take('puback').then(() => true, () => false)
    publish(c, bytes)
    if (!await Promise.race([ack, c.closed.then(() => false)])) break
    acked++
  }
  return acked
}

/** The DISCONNECT the proxy sent before closing (MQTT 5), and the close. */
async function disconnectedWith (c: RawMqttClient): Promise<number | undefined> {
  await c.waitClose()
  const d = c.packets.find((p: Packet) => p.cmd === 'disconnect')
  return d?.cmd === 'disconnect' ? d.reasonCode : undefined
}

t.test('under the limits nothing happens', async (t) => {
  const proxy = await proxyWith(t, { perClient: { messagesPerSecond: 100, bytesPerSecond: 100_000 }, perUser: { messagesPerSecond: 100, connections: 5 } })
  for (const version of [4, 5] as const) {
    const c = await connected(t, proxy.port, version, `under-${version}`, 'amy')
    t.equal(await oneByOne(c, 20), 20, `MQTT ${version}: every PUBLISH acknowledged`)
    t.notOk(c.isClosed)
  }
  t.equal(proxy.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('quota exceeded')), undefined, 'no quota line')
  t.same(stats(proxy).exceeded, { messages: 0, bytes: 0, connections: 0 })
})

t.test('over messages per second: MQTT 5 DISCONNECT 0x96, 3.1.1 closed; the log and the metric say why', async (t) => {
  const proxy = await proxyWith(t, { perClient: { messagesPerSecond: 2, burstSeconds: 2 } })
  const v5 = await connected(t, proxy.port, 5, 'fast-5')
  for (let i = 0; i < 10; i++) publish(v5, 10, 0)
  t.equal(await disconnectedWith(v5), 0x96, 'DISCONNECT 0x96 message rate too high')
  const v4 = await connected(t, proxy.port, 4, 'fast-4')
  for (let i = 0; i < 10; i++) publish(v4, 10, 0)
  t.equal(await disconnectedWith(v4), undefined, '3.1.1: closed, no DISCONNECT')
  const line = await proxy.logs.waitFor((l) => l.msg === 'quota exceeded: disconnecting' && l.clientId === 'fast-4')
  t.match(line, { plugin: 'quota', kind: 'messages', scope: 'client', limit: 2, burstSeconds: 2 })
  await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.clientId === 'fast-5' && l.reason === 'GUARD_ERR_MESSAGE_RATE')
  t.equal(stats(proxy).exceeded.messages, 2)
  const metrics = await proxy.server.metrics.registry.metrics()
  t.match(metrics, /mqtt_guard_quota_exceeded_total\{kind="messages"\} 2/)
  const findings = proxy.server.host.plugins.find((p) => p.name === 'quota')?.diagnose?.() ?? []
  t.match(findings, [{ id: 'quota-exceeded', evidence: [/fast-\d: 1 × messages per client/, /fast-\d: 1 × messages per client/] }], 'doctor names the clients')
})

t.test('over bytes per second: DISCONNECT 0x97 (quota exceeded)', async (t) => {
  const proxy = await proxyWith(t, { perClient: { bytesPerSecond: 1000, burstSeconds: 1 } })
  const c = await connected(t, proxy.port, 5, 'big-5')
  t.equal(await oneByOne(c, 3, 600), 1, 'the second 600-byte message is over 1000 bytes/s')
  t.equal(await disconnectedWith(c), 0x97)
  await proxy.logs.waitFor((l) => l.msg === 'quota exceeded: disconnecting' && l.kind === 'bytes')
})

t.test('a burst passes; the same burst without burstSeconds does not', async (t) => {
  const roomy = await proxyWith(t, { perClient: { messagesPerSecond: 2, burstSeconds: 6 } })
  const a = await connected(t, roomy.port, 5, 'bursty-a')
  t.equal(await oneByOne(a, 10), 10, '10 at once within 2/s × 6 s')
  t.notOk(a.isClosed)
  const tight = await proxyWith(t, { perClient: { messagesPerSecond: 2, burstSeconds: 1 } })
  const b = await connected(t, tight.port, 5, 'bursty-b')
  t.ok(await oneByOne(b, 10) < 10, 'with a burst of 1 s the same 10 are too many')
  t.equal(await disconnectedWith(b), 0x96)
})

t.test('delay: a fast publisher is slowed, not closed', async (t) => {
  const proxy = await proxyWith(t, { perClient: { messagesPerSecond: 20, burstSeconds: 0.5 }, onExceeded: 'delay' })
  const c = await connected(t, proxy.port, 5, 'slowed')
  let acks = 0
  const all = new Promise<void>((resolve) => { c.on('packet', (p) => { if (p.cmd === 'puback' && ++acks === 40) resolve() }) })
  const start = performance.now()
  for (let i = 0; i < 40; i++) publish(c)
  await all
  const seconds = (performance.now() - start) / 1000
  // 10 at once (the burst), 30 more at 20/s: 1.5 s. Generous on both sides for a busy machine.
  t.ok(seconds >= 1.2, `40 messages took ${seconds.toFixed(2)} s (>= 1.2)`)
  t.ok(seconds < 6, 'and were not held much longer')
  t.notOk(c.isClosed, 'still connected')
  t.ok(stats(proxy).delayed.messages >= 25, `delayed: ${stats(proxy).delayed.messages}`)
  await proxy.logs.waitFor((l) => l.msg === 'quota: publishing delayed' && l.clientId === 'slowed')
  t.match(await proxy.server.metrics.registry.metrics(), /mqtt_guard_quota_delayed_total\{kind="messages"\} \d+/)
})

t.test('delay: a wait past maxDelayMs disconnects after all', async (t) => {
  const proxy = await proxyWith(t, { perClient: { messagesPerSecond: 1, burstSeconds: 1 }, onExceeded: 'delay', maxDelayMs: 300 })
  const c = await connected(t, proxy.port, 5, 'too-slow')
  t.equal(await oneByOne(c, 3), 1, 'the second would wait about 1 s')
  t.equal(await disconnectedWith(c), 0x96)
  const line = await proxy.logs.waitFor((l) => l.msg === 'quota exceeded: disconnecting' && l.clientId === 'too-slow')
  t.match(line, { onExceeded: 'delay', waitMs: Number })
})

t.test('connections per user name: CONNACK 0x97 for MQTT 5, 3 for 3.1.1; freed at close', async (t) => {
  const proxy = await proxyWith(t, { perUser: { connections: 2 } })
  await connected(t, proxy.port, 5, 'bob-1', 'bob')
  const second = await connected(t, proxy.port, 4, 'bob-2', 'bob')
  t.equal((await connect(t, proxy.port, 5, 'bob-3', 'bob')).code, 0x97)
  t.equal((await connect(t, proxy.port, 4, 'bob-4', 'bob')).code, 3)
  await connected(t, proxy.port, 5, 'amy-1', 'amy')
  await connected(t, proxy.port, 5, 'anon-1')
  const line = await proxy.logs.waitFor((l) => l.msg === 'quota exceeded: connections per user name')
  t.match(line, { plugin: 'quota', limit: 2, count: 2, clientId: 'bob-3' })
  second.socket.end()
  await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.clientId === 'bob-2')
  await connected(t, proxy.port, 5, 'bob-5', 'bob')
  t.equal(stats(proxy).exceeded.connections, 2)
})

t.test('two proxies on one Redis count a user name\'s connections and messages together', async (t) => {
  const prefix = `quota${++prefixes}:`
  const options = { perUser: { messagesPerSecond: 1, burstSeconds: 10, connections: 2 }, syncMs: 50 }
  const a = await proxyWith(t, options, prefix)
  const b = await proxyWith(t, options, prefix)
  await connected(t, a.port, 5, 'cara-1', 'cara')
  await connected(t, b.port, 4, 'cara-2', 'cara')
  t.equal((await connect(t, a.port, 5, 'cara-3', 'cara')).code, 0x97, 'a third, on either proxy, is refused')
  t.equal((await connect(t, b.port, 4, 'cara-4', 'cara')).code, 3)
  const onA = await connected(t, a.port, 5, 'dan-a', 'dan')
  t.equal(await oneByOne(onA, 8), 8, '8 of the 10-message burst through a')
  const used = async (n: number): Promise<void> => {
    const deadline = Date.now() + 5000
    for (;;) {
      const fields = await db.hgetall(useKey(`${prefix}quota:`, 'dan'))
      const total = Object.entries(fields).filter(([k]) => k.endsWith(':m')).reduce((s, [, v]) => s + Number(v), 0)
      if (total >= n) return
      if (Date.now() > deadline) throw new Error(`Redis holds ${total} of dan's messages, not ${n}`)
      await new Promise((resolve) => { setImmediate(resolve) })
    }
  }
  await used(8)
  const onB = await connected(t, b.port, 5, 'dan-b', 'dan')
  t.equal(await oneByOne(onB, 1), 1, 'b admits one at once (its own bucket)')
  await used(9)
  // b alone would allow 9 more; with a's 8 counted it has about 1 left, plus what refills.
  const more = await oneByOne(onB, 9)
  t.ok(more <= 4, `b closed dan after ${more} more (not 9)`)
  t.equal(await disconnectedWith(onB), 0x96)
})

t.test('Redis unreachable: the local limits go on, the log says so once, and it is counted', async (t) => {
  const prefix = `quota${++prefixes}:`
  const proxy = await proxyWith(t, { perUser: { messagesPerSecond: 2, burstSeconds: 2, connections: 5 }, syncMs: 50, redisTimeoutMs: 300 }, prefix)
  t.teardown(() => redis.restore())
  await redis.cut()
  const c = await connected(t, proxy.port, 5, 'eve-1', 'eve')
  await proxy.logs.waitFor((l) => l.msg === 'quota: shared counts unavailable, connections counted on this instance only')
  t.ok(await oneByOne(c, 10) < 10, 'the 2/s × 2 s burst still holds')
  t.equal(await disconnectedWith(c), 0x96)
  await proxy.logs.waitFor((l) => l.msg === 'quota: shared counts unavailable, limits apply per instance')
  t.ok(stats(proxy).redisFailures.sync >= 1 && stats(proxy).redisFailures.connect >= 1, 'counted')
  t.match(await proxy.server.metrics.registry.metrics(), /mqtt_guard_quota_redis_failures_total\{kind="sync"\} [1-9]/)
})
