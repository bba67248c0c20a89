// client-id through two proxy processes sharing one Redis, in front of a real Mosquitto: each
// policy with MQTT 3.1.1 and 5 clients, simultaneous CONNECTs with one ID, kill -9 of an
// instance, flapping bans with their evidence, and Redis unreachable and back. Then the
// in-memory registry (no Redis) in one process. The Redis is one server or a Cluster
// (MQTT_GUARD_TEST_REDIS; client-id.cluster.test.ts runs this file on a Cluster).

import t, { type Test } from 'tap'
import net from 'node:net'
import mqtt, { MqttClient, type IClientOptions, type IDisconnectPacket } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startRedisUnderTest } from '../helpers/redis-under-test.js'
import { startGuard, type GuardProcess } from '../helpers/guard-process.js'
import { startProxy } from '../helpers/proxy.js'
import { BASE, clientV, closed, nextMessage, refusedCode, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { pollUntil } from '../helpers/processes.js'
import { handMadeConnect, RawMqttClient } from '../helpers/raw-client.js'
import { flapKeys, leaseKey } from '../../plugins/client-id/redis-store.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
// The second instance of a fleet fronts another broker, so an old connection that closes on a
// takeover was closed by the proxies, never by a broker taking over its own session.
const mosquitto2 = await startMosquitto()
t.teardown(() => mosquitto2.stop())
const redis = await startRedisUnderTest()
t.teardown(() => redis.stop())
const db = redis.db
let prefixNo = 0

type Version = 4 | 5
const code = (version: Version, v4: number, v5: number): number => version === 5 ? v5 : v4

/** Proxy processes sharing one key prefix, each with the client-id plugin and these options. */
async function fleet (t: Test, count: number, options: Record<string, unknown>, each: Array<Record<string, unknown>> = []): Promise<{ nodes: GuardProcess[], prefix: string }> {
  const keyPrefix = `cid${++prefixNo}:`
  const nodes = await Promise.all(Array.from({ length: count }, async (_, i) => await startGuard(t, {
    upstream: (i % 2 === 0 ? mosquitto : mosquitto2).url,
    redis: redis.config(keyPrefix),
    plugins: [{ name: 'client-id', ...options, ...each[i] }]
  })))
  return { nodes, prefix: `${keyPrefix}client-id:` }
}

/** A client whose socket leaves from `localAddress` (another loopback address). */
async function clientFrom (t: Test, port: number, localAddress: string, options: IClientOptions): Promise<MqttClient> {
  const c = new MqttClient(() => net.connect({ port, host: '127.0.0.1', localAddress }), { ...BASE, ...options })
  t.teardown(() => { c.end(true) })
  return await new Promise((resolve, reject) => {
    c.once('connect', () => { resolve(c) })
    c.once('error', reject)
  })
}

/** Connects or is refused; resolves with the client or the CONNACK code. */
async function attempt (url: string, options: IClientOptions): Promise<{ client: MqttClient } | { code: number | undefined }> {
  const c = mqtt.connect(url, { ...BASE, ...options })
  return await new Promise((resolve) => {
    c.once('connect', () => { resolve({ client: c }) })
    c.once('error', (err: Error & { code?: number }) => { c.end(true); resolve({ code: err.code }) })
  })
}

/**
 * Still alive and relaying: a QoS 1 message to itself. Bounded, and it says which step did not
 * answer and whether the connection was closed meanwhile (MQTT.js holds a SUBSCRIBE or PUBLISH
 * of a closed client for a reconnect that never comes, so without this a closed client hangs).
 */
async function works (t: Test, c: MqttClient, limitMs = 10_000): Promise<void> {
  let closedAt: number | undefined
  const onClose = (): void => { closedAt ??= Date.now() }
  c.on('close', onClose)
  const start = Date.now()
  const step = async <T>(name: string, p: Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        const state = closedAt === undefined ? `still connected: ${String(c.connected)}` : `its connection closed ${closedAt - start} ms into the check`
        reject(new Error(`works(): ${name} not answered within ${limitMs} ms (${state})`))
      }, limitMs)
    })
    try { return await Promise.race([p, late]) } finally { clearTimeout(timer) }
  }
  try {
    const topic = uniqueTopic('cid')
    await step('SUBSCRIBE', c.subscribeAsync(topic, { qos: 1 }))
    const got = nextMessage(c, topic, limitMs)
    await step('PUBLISH', c.publishAsync(topic, 'alive', { qos: 1 }))
    t.equal((await got).payload, 'alive')
  } finally {
    c.removeListener('close', onClose)
  }
}

/** Resolves with the DISCONNECT packet (MQTT 5) or undefined (3.1.1) once the client is closed. */
async function kicked (c: MqttClient): Promise<IDisconnectPacket | undefined> {
  let disconnect: IDisconnectPacket | undefined
  c.once('disconnect', (p: IDisconnectPacket) => { disconnect = p })
  await closed(c)
  return disconnect
}

for (const version of [4, 5] as const) {
  const v = version === 5 ? '5' : '3.1.1'

  t.test(`MQTT ${v}: reject-new refuses a second connection with the same ID on any instance`, async (t) => {
    const { nodes: [p1, p2] } = await fleet(t, 2, { policy: 'reject-new' })
    const id = `rn-${version}`
    const a = await clientV(t, p1!.url, version, { clientId: id, username: 'bob' })
    t.equal(await refusedCode(t, p2!.url, version, { clientId: id, username: 'bob' }), code(version, 2, 0x85), 'other instance: identifier rejected')
    t.equal(await refusedCode(t, p1!.url, version, { clientId: id, username: 'bob' }), code(version, 2, 0x85), 'same instance too')
    await works(t, a)
    await a.endAsync()
    const b = await pollUntil('the expected state', 5000, async () => { const r = await attempt(p2!.url, { protocolVersion: version, clientId: id }); return 'client' in r ? r.client : undefined })
    t.teardown(() => { b.end(true) })
    await works(t, b)
    const refused = p2!.logged('client-id: refused, ID in use')[0]
    t.equal((refused?.holder as { address?: string } | undefined)?.address, '127.0.0.1', 'the log names the holder')
  })

  t.test(`MQTT ${v}: takeover closes the old connection on the other instance`, async (t) => {
    const { nodes: [p1, p2] } = await fleet(t, 2, { policy: 'takeover' })
    const id = `to-${version}`
    const a = await clientV(t, p1!.url, version, { clientId: id, username: 'bob' })
    const gone = kicked(a)
    const b = await clientV(t, p2!.url, version, { clientId: id, username: 'eve' })
    const disconnect = await gone
    if (version === 5) t.equal(disconnect?.reasonCode, 0x8e, 'MQTT 5: DISCONNECT 0x8E session taken over')
    await works(t, b)
    await p2!.proc.waitFor((l) => l.msg === 'client-id: took over the ID')
    await p1!.proc.waitFor((l) => l.msg === 'connection closed' && l.reason === 'GUARD_ERR_SESSION_TAKEN_OVER')
  })

  t.test(`MQTT ${v}: takeover-same-identity lets the same user take its ID back, nobody else`, async (t) => {
    const { nodes: [p1, p2] } = await fleet(t, 2, {})
    const id = `tsi-${version}`
    const a = await clientV(t, p1!.url, version, { clientId: id, username: 'bob' })
    t.equal(await refusedCode(t, p2!.url, version, { clientId: id, username: 'eve' }), code(version, 2, 0x85), 'another user is refused')
    t.equal(await refusedCode(t, p2!.url, version, { clientId: id }), code(version, 2, 0x85), 'an anonymous client is refused')
    await works(t, a)
    const gone = kicked(a)
    const b = await clientV(t, p2!.url, version, { clientId: id, username: 'bob' })
    const disconnect = await gone
    if (version === 5) t.equal(disconnect?.reasonCode, 0x8e)
    await works(t, b)

    // Anonymous: the same address is the same identity.
    const anon = `tsi-anon-${version}`
    const x = await clientV(t, p1!.url, version, { clientId: anon })
    const elsewhere = await attempt(`mqtt://127.0.0.1:${p2!.port}`, { protocolVersion: version, clientId: anon, username: 'mallory' })
    t.same(elsewhere, { code: code(version, 2, 0x85) })
    await t.rejects(clientFrom(t, p2!.port, '127.0.0.2', { protocolVersion: version, clientId: anon }), { code: code(version, 2, 0x85) }, 'anonymous from another address is refused')
    const xGone = kicked(x)
    const z = await clientFrom(t, p2!.port, '127.0.0.1', { protocolVersion: version, clientId: anon })
    await xGone
    await works(t, z)
  })
}

t.test('50 rounds of two simultaneous CONNECTs with one ID through two instances: exactly one admitted', async (t) => {
  for (const [policy, users] of [['reject-new', ['bob', 'bob']], ['takeover-same-identity', ['bob', 'eve']]] as const) {
    const { nodes: [p1, p2] } = await fleet(t, 2, { policy })
    let admitted = 0
    for (let round = 0; round < 50; round++) {
      const version: Version = round % 2 === 0 ? 4 : 5
      const id = `race-${policy}-${round}`
      const results = await Promise.all([
        attempt(p1!.url, { protocolVersion: version, clientId: id, username: users[0] }),
        attempt(p2!.url, { protocolVersion: version, clientId: id, username: users[1] })
      ])
      const winners = results.filter((r) => 'client' in r)
      const refused = results.filter((r) => 'code' in r).map((r) => (r as { code: number }).code)
      if (winners.length !== 1 || refused[0] !== code(version, 2, 0x85)) t.fail(`${policy} round ${round}: ${winners.length} admitted, refused with ${JSON.stringify(refused)}`)
      else admitted++
      for (const r of results) if ('client' in r) await r.client.endAsync(true)
    }
    t.equal(admitted, 50, `${policy}: exactly one of two admitted in each of 50 rounds`)
  }
})

t.test('kill -9 of an instance: its clients get in elsewhere once the lease expires', async (t) => {
  const leaseMs = 1500
  const { nodes: [p1, p2], prefix } = await fleet(t, 2, { policy: 'reject-new', leaseMs })
  const id = 'killed-holder'
  await clientV(t, p1!.url, 4, { clientId: id })
  t.equal(await db.hget(leaseKey(prefix, id), 'addr'), '127.0.0.1', 'the lease is in Redis')
  p1!.proc.signal('SIGKILL')
  await p1!.proc.exited
  const killedAt = Date.now()
  t.equal(await refusedCode(t, p2!.url, 5, { clientId: id }), 0x85, 'refused while the dead instance\'s lease lives')
  const c = await pollUntil('the expected state', leaseMs + 5000, async () => { const r = await attempt(p2!.url, { protocolVersion: 5, clientId: id }); return 'client' in r ? r.client : undefined })
  t.teardown(() => { c.end(true) })
  const waited = Date.now() - killedAt
  t.ok(waited <= leaseMs + 1000, `admitted ${waited} ms after the kill (lease ${leaseMs} ms)`)
  await works(t, c)
})

t.test('flapping: a shared ban with its evidence logged once, and its end', async (t) => {
  const banMs = 1500
  const { nodes: [p1, p2] } = await fleet(t, 2, { policy: 'takeover', flapping: { maxConnects: 3, windowMs: 20_000, banMs } })
  const id = 'flappy'
  // Two devices with one ID, on two instances, each taking the ID from the other.
  const a = await clientV(t, p1!.url, 4, { clientId: id, username: 'dev-a' })
  let gone = kicked(a)
  const b = await clientV(t, p2!.url, 5, { clientId: id, username: 'dev-b' })
  await gone
  gone = kicked(b)
  await clientV(t, p1!.url, 4, { clientId: id, username: 'dev-a' })
  await gone
  // Wait for the ends to be recorded before the next connect reads the history.
  await pollUntil('the expected state', 3000, async () => (await db.llen(flapKeys(`cid${prefixNo}:client-id:`, `id:${id}`)[2])) >= 5 ? true : undefined)
  t.equal(await refusedCode(t, p2!.url, 5, { clientId: id, username: 'dev-b' }), 0x8a, 'the 4th connect in the window is banned (0x8A)')
  t.equal(await refusedCode(t, p1!.url, 4, { clientId: id, username: 'dev-a' }), 5, 'on every instance (3.1.1: code 5)')
  const bans = [...p1!.logged('client-id: flapping'), ...p2!.logged('client-id: flapping')]
  t.equal(bans.length, 1, 'logged once')
  const ban = bans[0] as { key: string, connects: number, windowMs: number, addresses: string[], ends: Array<{ why: string, count: number }>, msg: string }
  t.equal(ban.key, `id:${id}`)
  t.equal(ban.connects, 4)
  t.same(ban.addresses, ['127.0.0.1'])
  t.match(ban.ends[0], { why: 'taken over by a connection from 127.0.0.1: two devices share this client ID?', count: 2 }, 'both ends: taken over by the other device')
  t.equal(ban.windowMs, 20_000)
  t.equal(ban.msg, 'client-id: flapping, banned', 'the evidence is in fields, not in msg')
  await new Promise((resolve) => setTimeout(resolve, banMs))
  const after = await pollUntil('the expected state', 3000, async () => { const r = await attempt(p2!.url, { protocolVersion: 5, clientId: id, username: 'dev-b' }); return 'client' in r ? r.client : undefined })
  t.teardown(() => { after.end(true) })
  t.pass('admitted again once the ban ended')
})

t.test('Redis unreachable and back: fail open (local check), fail closed (3 / 0x88), leases restored', async (t) => {
  const leaseMs = 1500
  const { nodes: [p1, p2, closedNode], prefix } = await fleet(t, 3, { policy: 'reject-new', leaseMs, redisTimeoutMs: 300 }, [{}, {}, { failOpen: false }])
  const before = await clientV(t, p1!.url, 4, { clientId: 'r-before' })
  // One server: SIGKILL, back empty. A Cluster: every node paused (SIGSTOP), back with its keys.
  t.teardown(redis.restore)
  await redis.cut()
  const during = await clientV(t, p1!.url, 5, { clientId: 'r-during' })
  t.equal(await refusedCode(t, p1!.url, 4, { clientId: 'r-during' }), 2, 'fail open still refuses a duplicate on the same instance')
  t.equal(await refusedCode(t, closedNode!.url, 4, { clientId: 'r-closed' }), 3, 'fail closed: 3.1.1 code 3')
  t.equal(await refusedCode(t, closedNode!.url, 5, { clientId: 'r-closed' }), 0x88, 'fail closed: MQTT 5 0x88')
  await p1!.proc.waitFor((l) => l.msg === 'client-id: redis unavailable, checking this instance\'s connections only')
  await redis.restore()
  // The owner writes its leases again (one server came back empty; on a Cluster 'r-during' was
  // never written and 'r-before' may have expired meanwhile).
  for (const id of ['r-before', 'r-during']) {
    await pollUntil('the expected state', 10_000, async () => (await db.hget(leaseKey(prefix, id), 'owner').catch(() => null)) ?? undefined)
  }
  t.equal(await refusedCode(t, p2!.url, 4, { clientId: 'r-before' }), 2, 'the fleet sees the restored leases')
  t.equal(await refusedCode(t, p2!.url, 5, { clientId: 'r-during' }), 0x85)
  await works(t, before)
  await works(t, during)
  const c = await pollUntil('the expected state', 5000, async () => { const r = await attempt(closedNode!.url, { protocolVersion: 4, clientId: 'r-closed' }); return 'client' in r ? r.client : undefined })
  t.teardown(() => { c.end(true) })
  t.pass('fail closed admits again once Redis is back')
})

t.test('without Redis: the in-memory registry, empty and assigned IDs, length and pattern', async (t) => {
  const proxy = await startProxy({ config: { upstream: mosquitto.url, plugins: [{ name: 'client-id', policy: 'reject-new', maxIdLength: 12, idPattern: '[a-z0-9-]+' }] } })
  t.teardown(() => proxy.stop())
  const a = await clientV(t, proxy.url, 4, { clientId: 'mem-a' })
  t.equal(await refusedCode(t, proxy.url, 5, { clientId: 'mem-a' }), 0x85)
  await works(t, a)
  t.equal(await refusedCode(t, proxy.url, 4, { clientId: 'much-too-long-id' }), 2, 'longer than maxIdLength')
  t.equal(await refusedCode(t, proxy.url, 5, { clientId: 'Upper' }), 0x85, 'does not match idPattern')
  // Neither MQTT.js nor mqtt-packet will make this CONNECT: flags 0x00 (clean session off), empty ID.
  const raw = await RawMqttClient.open(proxy.port, 4)
  t.teardown(() => raw.destroy())
  raw.send([0x10, 12, 0, 4, ...Buffer.from('MQTT'), 4, 0x00, 0, 60, 0, 0])
  t.equal((await raw.next('connack')).returnCode, 2, '3.1.1: an empty ID needs a clean session')
  const old = await RawMqttClient.open(proxy.port, 3)
  t.teardown(() => old.destroy())
  old.send(handMadeConnect(3, '', 'MQIsdp'))
  t.equal((await old.next('connack')).returnCode, 2, 'MQTT 3.1: an empty ID is refused')
  await proxy.logs.waitFor((l) => l.msg === 'client-id: refused' && l.reason === 'empty client ID with clean session off [MQTT-3.1.3-8]')
  await works(t, await clientV(t, proxy.url, 4, { clientId: '', clean: true }))
  // MQTT 5: the broker assigns an ID; it is registered once the CONNACK carries it.
  const assigned = await new Promise<string>((resolve, reject) => {
    const c = mqtt.connect(proxy.url, { ...BASE, protocolVersion: 5, clientId: '' })
    t.teardown(() => { c.end(true) })
    c.once('connect', (connack) => { resolve(String(connack.properties?.assignedClientIdentifier)) })
    c.once('error', reject)
  })
  t.ok(assigned.length > 0, `assigned ${assigned}`)
  t.equal(await refusedCode(t, proxy.url, 5, { clientId: assigned }), 0x85, 'the assigned ID is held')
})
