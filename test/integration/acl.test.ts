// acl through the proxy in front of a private Mosquitto (which has no ACL of its own), MQTT.js
// 3.1.1 and 5: partial SUBACKs merged in order, all-denied SUBSCRIBEs answered by the proxy,
// denied publishes never reaching the broker, 3.1.1 drop vs disconnect, receive denials
// (QoS 2 flows completed towards the broker), the will topic, acl_file reload, and acl-check.

import t, { type Test } from 'tap'
import mqtt, { type MqttClient } from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startMosquitto } from '../helpers/mosquitto.js'
import { clientV } from '../helpers/e2e-mqtt.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { aclCheckCommand } from '../../plugins/acl/acl-check.js'

// One in-flight QoS 1/2 message per client: a refused QoS 2 delivery whose flow the proxy did
// not complete towards the broker would stall every later delivery.
const mosquitto = await startMosquitto({ extraConfig: 'max_inflight_messages 1' })
t.teardown(() => mosquitto.stop())

async function proxyWith (t: Test, acl: Record<string, unknown>): Promise<TestProxy> {
  const proxy = await startProxy({ config: { upstream: mosquitto.url, plugins: [{ name: 'acl', ...acl }] } })
  t.teardown(() => proxy.stop())
  return proxy
}


function collect (client: MqttClient): string[] {
  const got: string[] = []
  client.on('message', (topic, payload) => { got.push(`${topic}=${payload.toString()}`) })
  return got
}

async function until (check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setImmediate(resolve))
}

/** The SUBACK return codes, whether MQTT.js resolves or rejects (it rejects on any failure). */
async function suback (client: MqttClient, topics: string[], qos: 0 | 1 | 2 = 1): Promise<number[]> {
  return await client.subscribeAsync(topics, { qos }).then(
    (granted) => granted.map((g) => g.qos as number),
    (err: Error & { packet?: { granted: number[] } }) => { if (err.packet === undefined) throw err; return err.packet.granted })
}

async function publishCode (client: MqttClient, topic: string, qos: 0 | 1 | 2): Promise<number> {
  return await client.publishAsync(topic, 'x', { qos }).then(() => 0, (err: Error & { code?: number }) => err.code ?? -1)
}

/** [topic or filter, rule] of each denial logged; a SUBSCRIBE's one line lists its denied filters. */
const denials = (proxy: TestProxy, action: string): unknown[] =>
  proxy.logs.lines.filter((l) => l.msg === 'acl denied' && l.action === action).flatMap((l) =>
    Array.isArray(l.denied) ? (l.denied as Array<{ filter: string, rule: string }>).map((d) => [d.filter, d.rule]) : [[l.topic, l.rule]])

for (const version of [4, 5] as const) {
  const v = `v${version}`
  const mode = `MQTT ${version === 5 ? '5' : '3.1.1'}`
  const fail = version === 5 ? 0x87 : 0x80

  t.test(`${mode}: partial SUBACK in order; all denied answered by the proxy`, async (t) => {
    const proxy = await proxyWith(t, { rules: [{ allow: ['subscribe', 'receive'], topic: `${v}/a/#` }, { allow: ['subscribe', 'receive'], topic: `${v}/c/#` }] })
    const client = await clientV(t, proxy.url, version)
    t.same(await suback(client, [`${v}/a/#`, `${v}/b/#`, `${v}/c/#`]), [1, fail, 1])
    t.same(await suback(client, [`${v}/b/x`, `${v}/d`]), [fail, fail], 'all denied: answered by the proxy')
    t.same(denials(proxy, 'subscribe'), [`${v}/b/#`, `${v}/b/x`, `${v}/d`].map((f) => [f, 'default deny']), 'each denial logged once')
    t.same(proxy.logs.lines.filter((l) => l.msg === 'acl denied').map((l) => [l.filterCount, l.deniedCount]), [[3, 1], [2, 2]], 'one line per SUBSCRIBE, with its counts')
    t.match(mosquitto.log(), `\t${v}/a/# (QoS 1)`)
    t.notMatch(mosquitto.log(), `${v}/b/`, 'denied filters never reached the broker')
    t.notMatch(mosquitto.log(), `\t${v}/d `)
    const got = collect(client)
    const direct = await clientV(t, mosquitto.url, 4)
    await direct.publishAsync(`${v}/c/1`, 'one', { qos: 1 })
    await until(() => got.length === 1)
    t.same(got, [`${v}/c/1=one`])
  })

  t.test(`${mode}: denied publishes never reach the broker`, async (t) => {
    const proxy = await proxyWith(t, { rules: [{ allow: 'publish', topic: `${v}/ok/#` }] })
    const direct = await clientV(t, mosquitto.url, 4)
    await direct.subscribeAsync(`${v}/#`, { qos: 2 })
    const seen = collect(direct)
    const client = await clientV(t, proxy.url, version, { clientId: `${v}-pub` })
    const refused = version === 5 ? 0x87 : 0 // 3.1.1 `drop`: acknowledged and dropped
    t.equal(await publishCode(client, `${v}/no/q0`, 0), 0)
    t.equal(await publishCode(client, `${v}/no/q1`, 1), refused)
    t.equal(await publishCode(client, `${v}/no/q2`, 2), refused, 'QoS 2 completed by the proxy (PUBREC, PUBREL → PUBCOMP)')
    t.equal(await publishCode(client, `${v}/no/q2`, 2), refused, 'and again with the next packet ID')
    t.equal(await publishCode(client, `${v}/ok/last`, 1), 0)
    await until(() => seen.length === 1)
    t.same(seen, [`${v}/ok/last=x`])
    t.match(mosquitto.log(), `Received PUBLISH from ${v}-pub`)
    t.notMatch(mosquitto.log(), `Received PUBREL from ${v}-pub`, 'the PUBREL of a dropped QoS 2 publish stays at the proxy')
    t.same(denials(proxy, 'publish'), ['q0', 'q1', 'q2', 'q2'].map((q) => [`${v}/no/${q}`, 'default deny']))
    t.equal(proxy.server.connections.size, 1, 'client still connected')
  })

  t.test(`${mode}: receive denied for secret/# although # may be subscribed`, async (t) => {
    const proxy = await proxyWith(t, { rules: [{ deny: 'receive', topic: `${v}/secret/#` }, { allow: ['subscribe', 'receive'], topic: '#' }] })
    const client = await clientV(t, proxy.url, version)
    t.same(await suback(client, ['#'], 2), [2])
    const got = collect(client)
    const pubrels: number[] = []
    client.on('packetreceive', (p) => { if (p.cmd === 'pubrel') pubrels.push(p.messageId as number) })
    const direct = await clientV(t, mosquitto.url, 4)
    for (const [topic, qos] of [['secret/q2', 2], ['public/1', 1], ['secret/q1', 1], ['secret/q2b', 2], ['public/2', 2], ['public/3', 1]] as const) {
      await direct.publishAsync(`${v}/${topic}`, topic, { qos })
    }
    // With one message in flight, public/3 comes only after public/2's PUBREL/PUBCOMP.
    await until(() => got.length === 3)
    t.same(got, ['public/1', 'public/2', 'public/3'].map((p) => `${v}/${p}=${p}`), 'later deliveries not stalled by refused QoS 2 flows')
    t.equal(pubrels.length, 1, 'the broker\'s PUBREL for a refused QoS 2 delivery is answered by the proxy, not forwarded')
    t.same(denials(proxy, 'receive').map((d) => (d as string[])[0]), ['secret/q2', 'secret/q1', 'secret/q2b'].map((s) => `${v}/${s}`))
  })

  t.test(`${mode}: will topic checked at CONNECT`, async (t) => {
    const proxy = await proxyWith(t, { rules: [{ allow: 'publish', topic: `${v}/status/%c` }] })
    const bad = mqtt.connect(proxy.url, { protocolVersion: version, reconnectPeriod: 0, clientId: `${v}-w1`, will: { topic: `${v}/status/other`, payload: Buffer.from('gone'), qos: 1, retain: false } })
    t.teardown(() => { bad.end(true) })
    const [err] = await once(bad as unknown as EventEmitter, 'error') as [Error & { code?: number }]
    t.equal(err.code, version === 5 ? 0x87 : 5)
    const good = await clientV(t, proxy.url, version, { clientId: `${v}-w2`, will: { topic: `${v}/status/${v}-w2`, payload: Buffer.from('gone'), qos: 1, retain: false } })
    t.ok(good.connected)
  })
}

t.test('MQTT 3.1.1 onDeniedPublish: disconnect closes the publisher; QoS 0 is only dropped', async (t) => {
  const proxy = await proxyWith(t, { rules: [{ allow: 'publish', topic: 'd/ok' }], onDeniedPublish: 'disconnect' })
  const direct = await clientV(t, mosquitto.url, 4)
  await direct.subscribeAsync('d/#', { qos: 1 })
  const seen = collect(direct)
  const client = await clientV(t, proxy.url, 4)
  await client.publishAsync('d/no', 'x', { qos: 0 })
  await client.publishAsync('d/ok', 'x', { qos: 1 })
  await until(() => seen.length === 1)
  client.publish('d/no', 'y', { qos: 1 })
  await once(client as unknown as EventEmitter, 'close')
  await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.reason === 'GUARD_ERR_NOT_AUTHORIZED')
  t.same(seen, ['d/ok=x'])
})

t.test('acl_file reload: new rules for connected clients, a broken file keeps the old ones', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-acl-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = path.join(dir, 'acl')
  await writeFile(file, 'topic readwrite r/one/#\n')
  const proxy = await proxyWith(t, { aclFile: file })
  const client = await clientV(t, proxy.url, 5)
  t.same(await suback(client, ['r/one/#', 'r/two/#']), [1, 0x87])
  const got = collect(client)
  await writeFile(file, 'topic readwrite r/two/#\n')
  await proxy.logs.waitFor((l) => l.msg === 'file reloaded' && l.file === file)
  t.same(await suback(client, ['r/two/#', 'r/one/x']), [1, 0x87])
  const direct = await clientV(t, mosquitto.url, 4)
  await direct.publishAsync('r/one/x', 'old rule', { qos: 1 })
  await direct.publishAsync('r/two/x', 'new rule', { qos: 1 })
  await until(() => got.length === 1)
  t.same(got, ['r/two/x=new rule'], 'the subscription made under the old rules no longer delivers')
  await writeFile(file, 'topic sometimes r/#\n')
  await proxy.logs.waitFor((l) => l.msg === 'file not reloaded: previous content stays in force')
  t.same(await suback(client, ['r/two/y', 'r/#']), [1, 0x87])
  await writeFile(file, 'topic read r/three/#\n')
  await proxy.server.reload() // what SIGHUP does: re-read now, without waiting for the watcher
  t.same(await suback(client, ['r/three/#', 'r/two/y']), [1, 0x87])
})

t.test('acl-check prints the deciding rule and exits 0 / 1 / 2', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-acl-check-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  await writeFile(path.join(dir, 'acl'), 'user bob\ntopic read sensors/#\n')
  const config = path.join(dir, 'guard.yaml')
  await writeFile(config, 'upstream: embedded\nplugins:\n  - name: acl\n    aclFile: ./acl\n    groups: { ops: [olga] }\n    rules:\n      - { deny: receive, topic: sensors/secret/# }\n      - { allow: publish, topic: "ops/#", groups: [ops] }\n')
  const run = async (args: string[]): Promise<[number, string]> => {
    let out = ''
    const write = process.stdout.write
    const writeErr = process.stderr.write
    process.stdout.write = ((chunk: string) => { out += chunk; return true }) as typeof process.stdout.write
    process.stderr.write = ((chunk: string) => { out += chunk; return true }) as typeof process.stderr.write
    let pending: Promise<number>
    try {
      pending = aclCheckCommand(args) // runs synchronously up to its result
    } finally {
      process.stdout.write = write
      process.stderr.write = writeErr
    }
    return [await pending, out]
  }
  const c = ['--config', config]
  t.same(await run([...c, '--user', 'bob', '--client', 'b', 'receive', 'sensors/t']), [0, `allow ${path.join(dir, 'acl')}:2: topic read sensors/#\n`])
  t.same(await run([...c, '--user', 'bob', '--client', 'b', 'receive', 'sensors/secret/k']), [1, 'deny rules[0]: deny receive sensors/secret/#\n'])
  t.same(await run([...c, '--user', 'bob', '--client', 'b', 'subscribe', 'sensors/#']), [0, `allow ${path.join(dir, 'acl')}:2: topic read sensors/#\n`])
  t.same(await run([...c, '--user', 'olga', '--client', 'o', 'publish', 'ops/x']), [0, 'allow rules[1]: allow publish ops/# for groups ops\n'])
  t.same(await run([...c, '--user', 'eve', '--client', 'e', '--group', 'ops', 'publish', 'ops/x']), [0, 'allow rules[1]: allow publish ops/# for groups ops\n'])
  t.same(await run([...c, '--client', 'e', 'publish', 'ops/x']), [1, `deny default deny: no line of ${path.join(dir, 'acl')} matched\n`])
  t.equal((await run([...c, 'jump', 'x']))[0], 2)
  t.equal((await run([...c, 'publish', 'ops/#']))[0], 2, 'a wildcard is not a topic name')
  t.equal((await run([...c, 'publish']))[0], 2)
  t.equal((await run(['publish', 'x']))[0], 2)
  t.equal((await run([...c, '--bogus', 'publish', 'x']))[0], 2)
})
