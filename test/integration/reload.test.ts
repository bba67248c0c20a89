// Hot reload (issue 22), real sockets, MQTT.js 3.1.1 and 5, real Mosquittos and Redis:
// - a config that does not validate (a core key, a plugin option) is refused whole by
//   `mqtt-guard reload` (exit 1) and POST /reload (422), naming the key; open clients and the
//   running settings stay; the fixed file applies; mqtt_guard_reloads_total counts both;
// - acl rules and auth options are taken in place: an open connection's next packet is decided
//   by the new rules, the next CONNECT by the new password file;
// - a plugin added, reordered, removed: new connections get the new chain, open ones keep theirs,
//   the answer says so, and each earlier generation is released when its last connection closes;
// - the upstream moved from one Mosquitto to another, and Redis added then changed under
//   client-id: open clients stay where they were, new ones use the new setting;
// - the log level: an open connection's debug lines follow it;
// - listeners added and removed, and an older generation, bounded by reload.oldWorkerMaxAgeMs
//   (MQTT 5: DISCONNECT 0x8B);
// - TLS certificates: new paths on the same port (another CA), and new content at the same paths;
// - the admin endpoint: a new token at once, a new port.

import t from 'tap'
import mqtt, { type IDisconnectPacket, type MqttClient } from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import { copyFile, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import tls from 'node:tls'
import net from 'node:net'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startRedis } from '../helpers/redis.js'
import { redisCall } from '../helpers/redis-admin.js'
import { BASE, clientV, closed, nextMessage, refusedCode } from '../helpers/e2e-mqtt.js'
import { runCli, runToExit } from '../helpers/cli-process.js'
import { loginCode, mosquittoPasswdFile, tempDir } from '../helpers/auth-clients.js'
import { makePki } from '../helpers/certs.js'
import { freePort } from '../helpers/ports.js'
import { canConnect, pollUntil } from '../helpers/processes.js'
import { drops, publishCode, reloadableProxy, roundTrip, suback, type Raw } from '../helpers/reload.js'
import type { Plugin } from '../../src/plugin/api.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

const RELEASED = 'configuration of an earlier reload released: its last connection closed'

/** The DISCONNECT the server sends `c`; rejects after `ms` (a missing drain fails fast). */
async function told (c: MqttClient, ms = 5000): Promise<IDisconnectPacket> {
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`no DISCONNECT within ${ms} ms`)) }, ms)
    c.once('disconnect', (packet: IDisconnectPacket) => { clearTimeout(timer); resolve(packet) })
  })
}

async function post (url: string, token?: string): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', headers: token === undefined ? {} : { authorization: `Bearer ${token}` } })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

const BROKEN = [
  { key: 'limits.maxConnections', limits: { maxConnections: 'many' }, acl: {} },
  { key: 'plugins[0].onDeniedPublish', limits: {}, acl: { onDeniedPublish: 'shrug' } }
]

for (const broken of BROKEN) {
  t.test(`a bad ${broken.key} is refused whole by mqtt-guard reload and POST /reload; the fixed file applies`, async (t) => {
    const dir = await tempDir(t, 'mqtt-guard-reload-')
    const file = path.join(dir, 'guard.json')
    const write = async (limits: Raw, acl: Raw): Promise<void> => {
      await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', upstream: mosquitto.url, limits: { maxConnections: 100, ...limits }, plugins: [{ name: 'acl', rules: [{ allow: ['publish', 'subscribe', 'receive'], topic: 'cli/#' }], ...acl }] }))
    }
    await write({}, {})
    const proc = runCli(['start', '--config', file])
    t.teardown(async () => { await proc.stop() })
    const url = `mqtt://127.0.0.1:${await proc.listening()}`
    const admin = `http://127.0.0.1:${await proc.adminPort()}`
    const open = [await clientV(t, url, 4, { clientId: 'cli-4' }), await clientV(t, url, 5, { clientId: 'cli-5' })]
    const dropped = drops(open)

    await write(broken.limits, broken.acl)
    const cli = await runToExit(['reload', '--admin', admin])
    t.equal(cli.code, 1, 'mqtt-guard reload: exit 1')
    t.match(cli.stdout, /refused, nothing changed/)
    t.ok(cli.stdout.includes(broken.key), `the output names ${broken.key}`)
    const answer = await post(`${admin}/reload`)
    t.equal(answer.status, 422, 'POST /reload: 422')
    t.match(answer.body, { applied: false, changed: [], refused: [{ setting: 'config', reach: 'refused' }] })
    t.ok(JSON.stringify(answer.body.refused).includes(broken.key), `the answer names ${broken.key}`)
    for (const c of open) await roundTrip(c, `cli/${c.options.clientId ?? ''}`)
    t.equal(await publishCode(open[1] as MqttClient, 'other/x'), 0x87, 'the running acl rules still decide')
    t.same(dropped, [], 'no client saw its connection end')

    await write({ maxConnections: 2 }, {})
    const fixed = await runToExit(['reload', '--admin', admin])
    t.equal(fixed.code, 0, `exit 0 once fixed; ${fixed.stderr}`)
    t.match(fixed.stdout, /limits\.maxConnections: 100 → 2 \[new connections\]/)
    t.equal(await refusedCode(t, url, 4, { clientId: 'cli-third' }), 3, 'the new limit is in force: a third connection is refused')
    const metrics = await (await fetch(`${admin}/metrics`)).text()
    t.match(metrics, /mqtt_guard_reloads_total\{result="refused"\} 2\n/, 'two refused')
    t.match(metrics, /mqtt_guard_reloads_total\{result="applied"\} 1\n/, 'one applied')
    t.same(dropped, [], 'still none')
    const refusedLines = proc.lines.filter((l) => l.msg === 'config file not reloaded: the running settings stay in force')
    t.equal(refusedLines.length, 2, 'each refusal logged')
  })
}

for (const version of [4, 5] as const) {
  const v = `v${version}`
  const fail = version === 5 ? 0x87 : 0x80

  t.test(`MQTT ${v}: new acl rules decide an open connection's next subscribe, publish and delivery`, async (t) => {
    const rules = (topic: string): Raw => ({ listen: '127.0.0.1:0', upstream: mosquitto.url, plugins: [{ name: 'acl', rules: [{ allow: ['publish', 'subscribe', 'receive'], topic }] }] })
    const p = await reloadableProxy(t, rules(`acl${v}/a/#`))
    const c = await clientV(t, p.url, version, { clientId: `acl-${v}` })
    const dropped = drops([c])
    t.same(await suback(c, [`acl${v}/a/1`]), [1])
    const direct = await clientV(t, mosquitto.url, 5)
    await direct.subscribeAsync(`acl${v}/#`, { qos: 1 })
    const atBroker: string[] = []
    direct.on('message', (topic) => { atBroker.push(topic) })

    const report = await p.reload(rules(`acl${v}/b/#`))
    t.match(report, { applied: true, generation: 0, olderConnections: 0, refused: [] })
    t.same(report.changed.map((ch) => [ch.setting, ch.what, ch.reach]), [['plugins[0] (acl)', 'new options', 'now']], 'taken in place')

    t.same(await suback(c, [`acl${v}/a/2`, `acl${v}/b/1`]), [fail, 1], 'the next SUBSCRIBE: old topic denied, new one granted')
    t.equal(await publishCode(c, `acl${v}/a/x`), version === 5 ? 0x87 : 0, 'the next PUBLISH to the old topic is denied (3.1.1: acknowledged and dropped)')
    const delivered = nextMessage(c, `acl${v}/b/1`)
    await direct.publishAsync(`acl${v}/a/1`, 'old', { qos: 1 })
    await direct.publishAsync(`acl${v}/b/1`, 'new', { qos: 1 })
    await delivered
    const late = nextMessage(direct, `acl${v}/b/y`)
    t.equal(await publishCode(c, `acl${v}/b/y`), 0)
    await late
    t.notOk(atBroker.includes(`acl${v}/a/x`), 'the denied publish never reached the broker')
    t.notOk(p.logs.lines.some((l) => l.msg === 'acl denied' && l.action === 'receive' && l.topic !== `acl${v}/a/1`), 'only the old subscription\'s delivery was denied')
    t.ok(p.logs.lines.some((l) => l.msg === 'acl denied' && l.action === 'receive' && l.topic === `acl${v}/a/1`), 'the delivery on the subscription made before the reload is now denied')
    t.same(dropped, [], 'the connection stayed')
  })

  t.test(`MQTT ${v}: new auth options decide the next CONNECT; the open connection stays`, async (t) => {
    const dir = await tempDir(t, 'mqtt-guard-reload-auth-')
    const one = await mosquittoPasswdFile(path.join(dir, 'one'), [{ user: 'alice', password: 'first-pw' }])
    const two = await mosquittoPasswdFile(path.join(dir, 'two'), [{ user: 'alice', password: 'second-pw' }])
    const auth = (options: Raw): Raw => ({ listen: '127.0.0.1:0', upstream: mosquitto.url, plugins: [{ name: 'auth', ...options }] })
    const p = await reloadableProxy(t, auth({ passwordFile: one }))
    const open = await clientV(t, p.url, version, { clientId: `auth-${v}`, username: 'alice', password: 'first-pw' })
    const dropped = drops([open])
    const bad = version === 5 ? 0x86 : 4
    const notAuthorized = version === 5 ? 0x87 : 5

    const report = await p.reload(auth({ passwordFile: two }))
    t.same(report.changed.map((ch) => [ch.setting, ch.reach]), [['plugins[0] (auth)', 'now']])
    t.equal(await loginCode(t, p.url, version, 'alice', 'first-pw'), bad, 'the old password is refused at the next CONNECT')
    t.equal(await loginCode(t, p.url, version, 'alice', 'second-pw'), 0, 'the new one admitted')
    t.equal(await loginCode(t, p.url, version), notAuthorized, 'anonymous refused')
    await p.reload(auth({ passwordFile: two, allowAnonymous: true }))
    t.equal(await loginCode(t, p.url, version), 0, 'allowAnonymous: true applies to the next CONNECT')
    await roundTrip(open, `auth${v}/still`)
    t.same(dropped, [], 'the connection admitted under the old file stays')
  })
}

t.test('a plugin added, reordered, removed: new connections get the new chain, open ones keep theirs, earlier generations released', async (t) => {
  const acl = { name: 'acl', rules: [{ allow: ['publish', 'subscribe', 'receive'], topic: 'chain/allowed/#' }] }
  const trace = { name: 'trace', enabled: false }
  const config = (plugins: Raw[]): Raw => ({ listen: '127.0.0.1:0', upstream: mosquitto.url, plugins })
  const p = await reloadableProxy(t, config([]))
  const c0 = await clientV(t, p.url, 5, { clientId: 'chain-0' })
  const dropped = drops([c0])

  const added = await p.reload(config([acl]))
  t.match(added, { applied: true, generation: 1, olderConnections: 1, refused: [] })
  t.same(added.changed.map((ch) => [ch.setting, ch.what, ch.reach]), [['plugins[0] (acl)', 'added', 'new connections']])
  await roundTrip(c0, 'chain/other/0')
  t.pass('the open connection goes on without the acl')
  const c1 = await clientV(t, p.url, 5, { clientId: 'chain-1' })
  t.same(await suback(c1, ['chain/other/1', 'chain/allowed/1']), [0x87, 1], 'a new connection gets the acl')

  const both = await p.reload(config([acl, trace]))
  t.match(both, { generation: 2, olderConnections: 2 })
  t.same(both.changed.map((ch) => [ch.setting, ch.what]), [['plugins[1] (trace)', 'added']], 'the acl is kept (same options), trace added')
  const reordered = await p.reload(config([trace, acl]))
  t.match(reordered, { generation: 3, olderConnections: 2 })
  t.same(reordered.changed.map((ch) => [ch.setting, ch.what, ch.reach]), [['plugins', 'order acl,trace → trace,acl', 'new connections']])
  t.same(p.server.host.plugins.map((pl) => pl.name), ['limits', 'trace', 'acl'], 'new connections run the new order')
  await p.logs.waitFor((l) => l.msg === RELEASED && l.generation === 2)
  t.pass('generation 2 had no connection: released at once')

  const removed = await p.reload(config([trace]))
  t.match(removed, { generation: 4, olderConnections: 2 })
  t.same(removed.changed.map((ch) => [ch.setting, ch.what, ch.reach]), [['plugins[1] (acl)', 'removed', 'new connections']])
  const c4 = await clientV(t, p.url, 4, { clientId: 'chain-4' })
  await roundTrip(c4, 'chain/other/4')
  t.pass('a new connection has no acl any more')
  t.same(await suback(c1, ['chain/other/1b']), [0x87], 'the connection accepted with the acl keeps it')

  await c0.endAsync()
  const first = await p.logs.waitFor((l) => l.msg === RELEASED && l.generation === 0)
  t.equal(first.closed, 0, 'generation 0 shared everything with later ones')
  t.notOk(p.logs.lines.some((l) => l.msg === RELEASED && l.generation === 1), 'generation 1 still serves chain-1')
  await c1.endAsync()
  const second = await p.logs.waitFor((l) => l.msg === RELEASED && l.generation === 1)
  t.equal(second.closed, 1, 'the acl no live generation uses is closed with the last of its connections')
  t.same(dropped.filter((d) => !d.endsWith(':close')), [], 'chain-0 ended only when it chose to')
})

t.test('what cannot be carried out is refused and the rest applies: an acl_file that does not parse, a busy port', async (t) => {
  const dir = await tempDir(t, 'mqtt-guard-reload-partial-')
  const [good, bad] = [path.join(dir, 'good.acl'), path.join(dir, 'bad.acl')]
  await writeFile(good, 'topic readwrite part/#\n')
  await writeFile(bad, 'topic readwrite part/#\nnonsense here\n')
  const busy = net.createServer()
  await new Promise<void>((resolve) => { busy.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { busy.close() })
  const busyPort = (busy.address() as net.AddressInfo).port
  const config = (aclFile: string, listen: string[], maxConnections: number): Raw => ({ listen, upstream: mosquitto.url, limits: { maxConnections }, plugins: [{ name: 'acl', aclFile }] })
  const p = await reloadableProxy(t, config(good, ['127.0.0.1:0'], 100))
  const c = await clientV(t, p.url, 5, { clientId: 'partial-5' })
  const dropped = drops([c])
  const report = await p.reload(config(bad, ['127.0.0.1:0', `127.0.0.1:${busyPort}`], 1))
  t.equal(report.applied, true)
  t.same(report.refused.map((r) => r.setting).sort(), ['listen', 'plugins[0] (acl)'], 'the acl options and the listener are refused')
  t.same(report.changed.map((ch) => ch.setting), ['limits.maxConnections'], 'the limit applied, and only what applied is listed')
  t.equal(p.server.config.plugins[0]?.options.aclFile, good, 'the acl entry in force is the running one')
  t.same(p.server.config.listen.map((l) => l.url), ['mqtt://127.0.0.1:0'], 'the listeners in force')
  t.same(p.server.listeners.map((l) => l.port), [p.port], 'and bound')
  t.equal(await publishCode(c, 'part/x'), 0, 'the running acl rules still decide')
  t.equal(await publishCode(c, 'other/x'), 0x87)
  t.match(await p.server.metrics.registry.getSingleMetricAsString('mqtt_guard_reloads_total'), /result="partial"\} 1/)
  await p.logs.waitFor((l) => l.msg === 'reloaded, with changes refused')
  t.same(dropped, [])
})

t.test('upstream moved to another Mosquitto: the open client stays on the first, a new one lands on the second', async (t) => {
  const b = await startMosquitto()
  t.teardown(() => b.stop())
  const p = await reloadableProxy(t, { listen: '127.0.0.1:0', upstream: mosquitto.url })
  const old = await clientV(t, p.url, 4, { clientId: 'move-old' })
  const dropped = drops([old])
  const atA = await clientV(t, mosquitto.url, 5)
  const atB = await clientV(t, b.url, 5)
  await atA.subscribeAsync('move/#', { qos: 1 })
  await atB.subscribeAsync('move/#', { qos: 1 })

  const report = await p.reload({ listen: '127.0.0.1:0', upstream: b.url })
  t.match(report, { applied: true, generation: 1, olderConnections: 1, changed: [{ setting: 'upstream', reach: 'new connections' }] })
  const viaA = nextMessage(atA, 'move/old')
  await roundTrip(old, 'move/old')
  await viaA
  t.pass('the open client relays through the first broker')
  const fresh = await clientV(t, p.url, 5, { clientId: 'move-new' })
  const viaB = nextMessage(atB, 'move/new')
  await roundTrip(fresh, 'move/new')
  await viaB
  t.pass('a new client relays through the second')
  t.same(dropped, [])
  await old.endAsync()
  await p.logs.waitFor((l) => l.msg === RELEASED && l.generation === 0)
})

t.test('Redis added, then changed, under client-id: new connections use the new Redis, old generations release', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const config = (r?: Raw): Raw => ({ listen: '127.0.0.1:0', upstream: mosquitto.url, plugins: [{ name: 'client-id' }], ...(r === undefined ? {} : { redis: r }) })
  const keys = async (prefix: string): Promise<string> => JSON.stringify(await redisCall(redis.port, 'KEYS', `${prefix}*`))
  const p = await reloadableProxy(t, config())
  const first = await clientV(t, p.url, 4, { clientId: 'rid-first' })
  const dropped = drops([first])

  const added = await p.reload(config({ url: redis.url, keyPrefix: 'rl1:' }))
  t.match(added, { applied: true, generation: 1, olderConnections: 1, refused: [] })
  t.same(added.changed.map((ch) => [ch.setting, ch.what, ch.reach]), [['redis', 'Redis added', 'new connections'], ['plugins[0] (client-id)', 'made anew on the new Redis', 'new connections']])
  const second = await clientV(t, p.url, 5, { clientId: 'rid-second' })
  t.match(await keys('rl1:'), /rid-second/, 'a new connection is registered in Redis')
  t.notMatch(await keys('rl1:'), /rid-first/, 'the open one stays on the in-memory registry')

  const changed = await p.reload(config({ url: redis.url, keyPrefix: 'rl2:' }))
  t.match(changed, { generation: 2, olderConnections: 2, changed: [{ setting: 'redis', what: 'the Redis settings changed' }] })
  await clientV(t, p.url, 4, { clientId: 'rid-third' })
  t.match(await keys('rl2:'), /rid-third/, 'the next one uses the new settings')
  t.notMatch(await keys('rl2:'), /rid-second/)

  await first.endAsync()
  t.equal((await p.logs.waitFor((l) => l.msg === RELEASED && l.generation === 0)).closed, 1, 'the first client-id instance closed')
  await second.endAsync()
  t.equal((await p.logs.waitFor((l) => l.msg === RELEASED && l.generation === 1)).closed, 2, 'the second client-id instance and its Redis client closed')
  t.same(dropped.filter((d) => !d.endsWith(':close')), [])
})

t.test('log level: an open connection\'s debug lines follow the reload, both ways', async (t) => {
  const noisy: Plugin = { name: 'noisy', in: { publish: (conn, packet) => { conn.log.debug({ topic: packet.topic }, 'noisy publish') } } }
  const config = (level: string): Raw => ({ listen: '127.0.0.1:0', upstream: mosquitto.url, log: { level } })
  const p = await reloadableProxy(t, config('info'), [noisy])
  const c = await clientV(t, p.url, 5, { clientId: 'noisy-1' })
  const lines = (): string[] => p.logs.lines.filter((l) => l.msg === 'noisy publish').map((l) => `${String(l.clientId)} ${String(l.topic)}`)
  await roundTrip(c, 'noisy/before')
  t.same(lines(), [], 'info: no debug line')
  const report = await p.reload(config('debug'))
  t.same(report.changed.map((ch) => [ch.setting, ch.what, ch.reach]), [['log.level', 'info → debug', 'now']])
  await roundTrip(c, 'noisy/during')
  t.same(lines(), ['noisy-1 noisy/during'], 'debug: the open connection writes its debug line')
  await p.reload(config('info'))
  await roundTrip(c, 'noisy/after')
  t.same(lines(), ['noisy-1 noisy/during'], 'back to info: none again')
})

t.test('listeners: one added takes connections, one removed refuses new ones while its clients go on', async (t) => {
  const [a, b, c] = [await freePort(), await freePort(), await freePort()]
  const config = (ports: number[]): Raw => ({ listen: ports.map((port) => `127.0.0.1:${port}`), upstream: mosquitto.url })
  const p = await reloadableProxy(t, config([a, b]))
  const onB = [await clientV(t, `mqtt://127.0.0.1:${b}`, 4, { clientId: 'on-b-4' }), await clientV(t, `mqtt://127.0.0.1:${b}`, 5, { clientId: 'on-b-5' })]
  const dropped = drops(onB)
  const report = await p.reload(config([a, c]))
  t.match(report, { applied: true, generation: 0, refused: [] })
  t.same(report.changed.map((ch) => [ch.setting, ch.what, ch.reach]).sort(), [['listen', `added mqtt://127.0.0.1:${c}`, 'now'], ['listen', `removed mqtt://127.0.0.1:${b}`, 'new connections']].sort())
  await roundTrip(await clientV(t, `mqtt://127.0.0.1:${c}`, 5, { clientId: 'on-c' }), 'listen/c')
  t.notOk(await canConnect(b), 'the removed listener refuses new connections')
  for (const cl of onB) await roundTrip(cl, `listen/${cl.options.clientId ?? ''}`)
  t.same(dropped, [], 'its open clients go on')
  t.same(p.server.config.listen.map((l) => l.port).sort(), [a, c].sort(), 'the listeners in force')
})

// The removed listener's clients and an older generation's, once reload.oldWorkerMaxAgeMs passed.
const RETIRED = [
  { what: 'a removed listener', listen: (ports: number[]) => ports.slice(1), plugins: [] as Raw[] },
  { what: 'an older plugin chain', listen: (ports: number[]) => ports, plugins: [{ name: 'trace', enabled: false }] }
]

for (const retired of RETIRED) {
  t.test(`${retired.what}: its clients are drained after reload.oldWorkerMaxAgeMs (MQTT 5: DISCONNECT 0x8B)`, async (t) => {
    const ports = [await freePort(), await freePort()]
    const config = (listen: number[], plugins: Raw[]): Raw => ({ listen: listen.map((port) => `127.0.0.1:${port}`), upstream: mosquitto.url, reload: { oldWorkerMaxAgeMs: 1000 }, plugins })
    const p = await reloadableProxy(t, config(ports, []))
    const url = `mqtt://127.0.0.1:${ports[0] ?? 0}`
    const v5 = await clientV(t, url, 5, { clientId: 'old-5' })
    const v4 = await clientV(t, url, 4, { clientId: 'old-4' })
    const disconnect = told(v5)
    const ends = [closed(v5, 5000), closed(v4, 5000)]
    const at = Date.now()
    await p.reload(config(retired.listen(ports), retired.plugins))
    await roundTrip(v5, 'retired/5')
    await roundTrip(v4, 'retired/4')
    t.pass('both still relay right after the reload')
    t.equal((await disconnect).reasonCode, 0x8b, 'MQTT 5: DISCONNECT 0x8B server shutting down')
    await Promise.all(ends)
    const after = Date.now() - at
    t.ok(after >= 900 && after < 4000, `closed after about oldWorkerMaxAgeMs (${after} ms)`)
    if (retired.plugins.length > 0) await p.logs.waitFor((l) => l.msg === RELEASED && l.generation === 0)
  })
}

t.test('reload.oldWorkerMaxAgeMs: the answer names it, and it bounds what the reload that sets it replaces', async (t) => {
  const config = (plugins: Raw[], reload?: Raw): Raw => ({ listen: '127.0.0.1:0', upstream: mosquitto.url, plugins, ...(reload === undefined ? {} : { reload }) })
  const p = await reloadableProxy(t, config([]))
  const v5 = await clientV(t, p.url, 5, { clientId: 'age-5' })
  const disconnect = told(v5)
  const report = await p.reload(config([{ name: 'trace', enabled: false }], { oldWorkerMaxAgeMs: 1000 }))
  t.match(report.changed, [{ setting: 'reload.oldWorkerMaxAgeMs', what: '3600000 → 1000' }, { setting: 'plugins[0] (trace)', what: 'added' }])
  t.equal((await disconnect).reasonCode, 0x8b, 'the older generation is drained after the new 1000 ms, not the hour in force before')
})

t.test('TLS: new certificate paths on the same port (another CA), and new content at the same paths', async (t) => {
  const [oldCa, newCa] = [await makePki(t), await makePki(t)]
  // Subjects CN=127.0.0.1 and CN=localhost: the expiry series must follow the certificate.
  const [oldCert, newCert] = [await oldCa.server(['127.0.0.1', 'localhost']), await newCa.server(['localhost', '127.0.0.1'])]
  const port = await freePort()
  const dir = await tempDir(t, 'mqtt-guard-reload-tls-')
  const live = { cert: path.join(dir, 'live.pem'), key: path.join(dir, 'live.key') }
  const config = (cert: { cert: string, key: string }): Raw => ({
    listen: [{ url: 'mqtt://127.0.0.1:0' }, { url: `mqtts://127.0.0.1:${port}`, ...cert }],
    upstream: mosquitto.url,
    admin: '127.0.0.1:0'
  })
  const p = await reloadableProxy(t, config(oldCert))
  const url = `mqtts://127.0.0.1:${port}`
  const [oldPem, newPem] = [await readFile(oldCa.ca), await readFile(newCa.ca)]
  const before = await clientV(t, url, 5, { clientId: 'tls-before', ca: oldPem })
  const dropped = drops([before])
  const issuer = async (ca: Buffer): Promise<string> => {
    const s = tls.connect({ port, host: '127.0.0.1', ca, servername: 'localhost' })
    t.teardown(() => { s.destroy() })
    return await new Promise<string>((resolve) => {
      s.once('secureConnect', () => { s.destroy(); resolve('verified') })
      s.once('error', (err: Error & { code?: string }) => { s.destroy(); resolve(err.code ?? 'error') })
    })
  }

  const report = await p.reload(config(newCert))
  t.match(report, { applied: true, refused: [] })
  t.same(p.server.listeners.map((l) => l.port).includes(port), true, 'the TLS listener is on the same port')
  t.equal(await issuer(newPem), 'verified', 'a client checking against the new CA connects')
  const expiry = (await p.server.metrics.certExpiry.get()).values.filter((v) => v.labels.listener === `mqtts://127.0.0.1:${port}`).map((v) => v.labels.subject)
  t.same(expiry, ['CN=localhost'], 'the expiry metric shows the certificate served now, and no longer the old one')
  t.not(await issuer(oldPem), 'verified', 'one checking against the old CA does not')
  await roundTrip(await clientV(t, url, 4, { clientId: 'tls-after', ca: newPem }), 'tls/after')
  const refused = mqtt.connect(url, { ...BASE, protocolVersion: 4, ca: oldPem, clientId: 'tls-old-ca' })
  t.teardown(() => { refused.end(true) })
  await once(refused as unknown as EventEmitter, 'error')
  await roundTrip(before, 'tls/before')
  t.same(dropped, [], 'the client connected before the reload stays')

  // Same paths, new content: POST /reload re-reads the files.
  await copyFile(newCert.cert, live.cert)
  await copyFile(newCert.key, live.key)
  await p.reload(config(live))
  t.equal(await issuer(newPem), 'verified')
  const rotated = await oldCa.server(['127.0.0.1', 'localhost'], { name: 'rotated' })
  await copyFile(rotated.key, live.key)
  await copyFile(rotated.cert, live.cert)
  const admin = `http://127.0.0.1:${p.server.admin?.port ?? 0}`
  const answer = await post(`${admin}/reload`)
  t.equal(answer.status, 200)
  t.same(answer.body.changed, [], 'no setting changed: the files were read again')
  t.equal(await pollUntil('the rotated certificate', 5000, async () => (await issuer(oldPem)) === 'verified' ? true : undefined), true, 'new connections get the rotated certificate')
  t.not(await issuer(newPem), 'verified')
  await roundTrip(before, 'tls/still')
  t.same(dropped, [], 'still connected')
})

t.test('admin: a new token applies at once; a new port answers and the old one stops', async (t) => {
  const [tokenA, tokenB] = ['a'.repeat(16) + '-token', 'b'.repeat(16) + '-token']
  const moved = await freePort()
  const config = (admin: Raw): Raw => ({ listen: '127.0.0.1:0', upstream: mosquitto.url, admin })
  const p = await reloadableProxy(t, config({ listen: '127.0.0.1:0', token: tokenA }))
  const oldPort = p.server.admin?.port ?? 0
  const status = async (port: number, token: string): Promise<number> => (await fetch(`http://127.0.0.1:${port}/connections`, { headers: { authorization: `Bearer ${token}` } })).status
  t.equal(await status(oldPort, tokenA), 200)
  const viaAdmin = await post(`http://127.0.0.1:${oldPort}/reload`, tokenA)
  t.equal(viaAdmin.status, 200, 'POST /reload with nothing changed')
  t.same(viaAdmin.body.changed, [])
  const report = await p.reload(config({ listen: '127.0.0.1:0', token: tokenB }))
  t.same(report.changed.map((ch) => [ch.setting, ch.reach]), [['admin', 'now']])
  t.equal(await status(oldPort, tokenA), 401, 'the old token is refused at once')
  t.equal(await status(oldPort, tokenB), 200, 'the new one accepted, same port')

  p.write(config({ listen: `127.0.0.1:${moved}`, token: tokenB }))
  const answer = await post(`http://127.0.0.1:${oldPort}/reload`, tokenB)
  t.equal(answer.status, 200, 'the POST /reload that moves the endpoint gets its answer from the old one')
  t.match(answer.body.changed, [{ setting: 'admin', what: `at 127.0.0.1:${moved}` }])
  t.equal(await status(moved, tokenB), 200, 'the new port answers')
  await pollUntil('the old admin port to close', 5000, async () => (await canConnect(oldPort)) ? undefined : true)
  t.pass('the old port stops answering')
})
