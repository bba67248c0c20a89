// trace against a real Mosquitto: lines for every packet type on both legs with MQTT 3.1.1 and
// 5, round trips per leg, verdicts, the real topic behind an alias, payload modes and
// redaction (no password ever), filters, rotation, a run-time trace started on one instance
// reaching another and ending on time, the CLI, and the export opened by tshark.

import t, { type Test } from 'tap'
import { readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import path from 'node:path'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startRedis } from '../helpers/redis.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { clientV, nextMessage, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { RawMqttClient } from '../helpers/raw-client.js'
import { tempDir } from '../helpers/auth-clients.js'
import { pollUntil } from '../helpers/processes.js'
import { runToExit } from '../helpers/cli-process.js'
import type { TraceLine } from '../../plugins/trace/format.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const redis = await startRedis()
t.teardown(() => redis.stop())
const PASSWORD = 'pw-Trace-never-7f3k'
let n = 0

/** A proxy with the trace plugin writing to a temp file, after the plugins in `before`. */
async function traced (t: Test, options: Record<string, unknown>, before: Array<Record<string, unknown>> = [], extra: Record<string, unknown> = {}): Promise<{ proxy: TestProxy, file: string, lines: () => Promise<TraceLine[]> }> {
  const dir = await tempDir(t, 'mqtt-guard-trace-')
  const file = path.join(dir, `trace-${++n}.jsonl`)
  const proxy = await startProxy({ config: { upstream: mosquitto.url, plugins: [...before, { name: 'trace', destination: file, ...options }], ...extra } })
  t.teardown(() => proxy.stop())
  const lines = async (): Promise<TraceLine[]> => {
    if (!existsSync(file)) return []
    return (await readFile(file, 'utf8')).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as TraceLine)
  }
  return { proxy, file, lines }
}

async function until (lines: () => Promise<TraceLine[]>, what: string, test: (all: TraceLine[]) => boolean): Promise<TraceLine[]> {
  return await pollUntil(what, 5000, async () => { const all = await lines(); return test(all) ? all : undefined })
}

const at = (p: TestProxy): string => p.url

for (const version of [4, 5] as const) {
  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: a line per packet per leg, round trips, payload, no password`, async (t) => {
    const { proxy, lines } = await traced(t, { payload: 'text', maxPayloadBytes: 8 })
    const clientId = `tr-${version}`
    const c = await clientV(t, at(proxy), version, { clientId, username: 'tracer', password: PASSWORD })
    const topic = uniqueTopic('trace')
    await c.subscribeAsync(topic, { qos: 2 })
    for (const qos of [0, 1, 2] as const) {
      const got = nextMessage(c, topic)
      await c.publishAsync(topic, `reading ${qos} with a long payload`, { qos })
      await got
    }
    await c.unsubscribeAsync(topic)
    await c.endAsync()
    const all = await until(lines, 'the DISCONNECT on the broker leg', (l) => l.some((x) => x.type === 'disconnect' && x.leg === 'broker'))
    const mine = all.filter((l) => l.clientId === clientId)
    const types = new Set(mine.map((l) => l.type))
    for (const type of ['connect', 'connack', 'subscribe', 'suback', 'publish', 'puback', 'pubrec', 'pubrel', 'pubcomp', 'unsubscribe', 'unsuback', 'disconnect']) {
      t.ok(types.has(type), `${type} traced`)
    }
    const legs = (type: string): string[] => mine.filter((l) => l.type === type).map((l) => `${l.leg}/${l.dir}/${l.verdict}`)
    t.same(legs('connect'), ['client/up/forwarded', 'broker/up/sent'], 'CONNECT: read from the client, written to the broker')
    t.same(legs('connack'), ['broker/down/forwarded', 'client/down/sent'])
    const connacks = mine.filter((l) => l.type === 'connack')
    t.ok(connacks.every((l) => typeof l.rttUs === 'number' && l.rttUs > 0), 'CONNECT→CONNACK round trip on both legs')
    t.ok((connacks[0]?.rttUs ?? 0) <= (connacks[1]?.rttUs ?? 0), 'the broker leg is part of the client leg')
    const connect = mine.find((l) => l.type === 'connect')
    t.match(connect, { username: 'tracer', connect: { hasPassword: true } })
    const pub = mine.find((l) => l.type === 'publish' && l.qos === 1 && l.leg === 'client' && l.dir === 'up')
    t.match(pub, { topic, qos: 1, payload: { bytes: 29, text: 'reading ', truncated: true } })
    t.ok(mine.some((l) => l.type === 'puback' && l.leg === 'broker' && typeof l.rttUs === 'number'), 'PUBLISH→PUBACK on the broker leg')
    t.ok(mine.some((l) => l.type === 'pubcomp' && typeof l.rttUs === 'number'), 'PUBREL→PUBCOMP')
    t.ok(mine.every((l) => typeof l.us === 'number' && l.time === Math.floor(l.us / 1000)), 'µs timestamps')
    const text = JSON.stringify(all)
    t.notOk(text.includes(PASSWORD), 'the password is nowhere, not even in the frames kept for export')
    t.notOk(all.some((l) => l.frame !== undefined && Buffer.from(l.frame, 'base64').includes(PASSWORD)), 'nor in any base64 frame')
  })
}

t.test('verdicts, the real topic behind an alias, hash payloads, redacted user properties', async (t) => {
  const acl = { name: 'acl', rules: [{ deny: 'publish', topic: 'secret/#' }, { allow: ['publish', 'subscribe', 'receive'], topic: '#' }] }
  const { proxy, lines } = await traced(t, { payload: 'hash', redactUserProperties: ['token'] }, [acl])
  const raw = await RawMqttClient.connected(proxy.port, 5, 'tr-alias')
  t.teardown(() => raw.destroy())
  const topic = uniqueTopic('alias')
  raw.sendPacket({ cmd: 'publish', qos: 1, messageId: 1, topic, payload: Buffer.from('first'), dup: false, retain: false, properties: { topicAlias: 1, userProperties: { token: 'tok-secret-1', site: 'plant-3' } } })
  await raw.take('puback')
  raw.sendPacket({ cmd: 'publish', qos: 1, messageId: 2, topic: '', payload: Buffer.from('second'), dup: false, retain: false, properties: { topicAlias: 1 } })
  await raw.take('puback')
  raw.sendPacket({ cmd: 'publish', qos: 1, messageId: 3, topic: 'secret/x', payload: Buffer.from('no'), dup: false, retain: false })
  t.equal((await raw.take('puback')).reasonCode, 0x87)
  const all = await until(lines, 'the refusal', (l) => l.some((x) => x.verdict === 'refused'))
  const up = all.filter((l) => l.type === 'publish' && l.leg === 'client' && l.dir === 'up')
  t.same(up.map((l) => l.topic), [topic, topic, 'secret/x'], 'the aliased PUBLISH shows its real topic')
  t.equal(up[1]?.topicAlias, 1)
  t.match(up[0], { payload: { bytes: 5, sha256: /^[0-9a-f]{64}$/ }, properties: { userProperties: { token: '[redacted]', site: 'plant-3' } } })
  t.match(up[2], { verdict: 'refused', plugin: 'acl' })
  t.ok(all.some((l) => l.type === 'puback' && l.verdict === 'proxy' && l.reasonCode === 0x87 && l.leg === 'client'), 'the proxy\'s own PUBACK 0x87')
  t.notOk(JSON.stringify(all).includes('tok-secret-1'), 'the redacted property value is nowhere')
})

t.test('PINGREQ→PINGRESP on both legs; AUTH data never written', async (t) => {
  const { proxy, lines } = await traced(t, { payload: 'hex' })
  const raw = await RawMqttClient.connected(proxy.port, 5, 'tr-ping')
  t.teardown(() => raw.destroy())
  raw.sendPacket({ cmd: 'pingreq' })
  await raw.take('pingresp')
  const all = await until(lines, 'the PINGRESP to the client', (l) => l.some((x) => x.type === 'pingresp' && x.leg === 'client'))
  const resp = all.filter((l) => l.type === 'pingresp')
  t.same(resp.map((l) => l.leg), ['broker', 'client'])
  t.ok(resp.every((l) => typeof l.rttUs === 'number'), 'round trips on both legs')
  // AUTH: the broker (Mosquitto) does not do enhanced authentication, so the tap is fed directly.
  const { ConnectionTrace } = await import('../../plugins/trace/tap.js')
  const { compileFilters } = await import('../../plugins/trace/filters.js')
  const { validateOptions } = await import('../../plugins/trace/options.js')
  const written: string[] = []
  const sink = { writeText: (text: string) => { written.push(text) } }
  const conn = { id: 'x', clientId: 'auth-client', username: undefined, address: '127.0.0.1', port: 1, listener: 'l', openedAt: 0, protocolVersion: 5 as const, log: proxy.server.log, close: () => {} }
  const tap = new ConnectionTrace(conn, { id: 't', filters: compileFilters({}) }, validateOptions({ payload: 'hex' }), sink as never, 'i')
  const mqttPacket = (await import('mqtt-packet')).default
  const auth = mqttPacket.generate({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'SCRAM-SHA-1', authenticationData: Buffer.from('pw-Scram-9x1q') } }, { protocolVersion: 5 })
  tap.received('client', auth, 'forwarded', undefined, undefined)
  t.equal(written.length, 1)
  const line = JSON.parse(written[0] as string) as TraceLine
  t.match(line, { type: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'SCRAM-SHA-1', authenticationData: '[redacted]' } })
  t.notOk((written[0] as string).includes('pw-Scram-9x1q'), 'not in the line')
  t.notOk(Buffer.from(line.frame ?? '', 'base64').includes('pw-Scram-9x1q'), 'nor in the bytes kept for export')
})

t.test('filters: client ID glob and topic; nothing for others', async (t) => {
  const { proxy, lines } = await traced(t, { filters: { clientId: 'sensor-*', topic: 'plant/#' } })
  const sensor = await clientV(t, at(proxy), 4, { clientId: 'sensor-1' })
  const other = await clientV(t, at(proxy), 4, { clientId: 'gateway-1' })
  await sensor.publishAsync('plant/3/temp', '21', { qos: 1 })
  await sensor.publishAsync('office/temp', '19', { qos: 1 })
  await other.publishAsync('plant/3/temp', '22', { qos: 1 })
  await sensor.publishAsync('plant/end', 'x', { qos: 1 })
  const all = await until(lines, 'plant/end', (l) => l.some((x) => x.topic === 'plant/end' && x.leg === 'broker'))
  t.same([...new Set(all.map((l) => l.clientId))], ['sensor-1'], 'only the matching client')
  t.same([...new Set(all.filter((l) => l.topic !== undefined).map((l) => l.topic))], ['plant/3/temp', 'plant/end'], 'only matching topics')
})

t.test('rotation by size', async (t) => {
  const { proxy, file } = await traced(t, { rotateBytes: 4000, keepFiles: 2 })
  const c = await clientV(t, at(proxy), 4, { clientId: 'rot' })
  for (let i = 0; i < 40; i++) await c.publishAsync('rot/x', String(i), { qos: 1 })
  await pollUntil('a rotated file', 5000, () => existsSync(`${file}.1`) ? true : undefined)
  t.notOk(existsSync(`${file}.3`), 'at most keepFiles old files')
})

t.test('run time: started on one instance, traced on another, ended on time, by the CLI too', async (t) => {
  const keyPrefix = `tr${++n}:`
  const dir = await tempDir(t, 'mqtt-guard-trace-rt-')
  const start = async (name: string): Promise<TestProxy> => {
    const p = await startProxy({ config: { upstream: mosquitto.url, admin: '127.0.0.1:0', redis: { url: redis.url, keyPrefix }, plugins: [{ name: 'trace', enabled: false, destination: path.join(dir, `${name}.jsonl`) }] } })
    t.teardown(() => p.stop())
    return p
  }
  const a = await start('a')
  const b = await start('b')
  const adminA = `http://127.0.0.1:${a.server.admin?.port ?? 0}`
  const adminB = `http://127.0.0.1:${b.server.admin?.port ?? 0}`
  const started = await runToExit(['trace', 'start', '--admin', adminA, '--client', 'rt-*', '--for', '3s'])
  t.equal(started.code, 0, started.stderr)
  const spec = JSON.parse(started.stdout) as { id: string, until: string }
  await pollUntil('the trace on B', 5000, async () => ((await (await fetch(`${adminB}/traces`)).json()) as Array<{ id: string }>).some((x) => x.id === spec.id) ? true : undefined)
  // Listed while it surely runs: the trace lasts 3 s, which a loaded machine can spend below.
  const listed = await runToExit(['trace', 'list', '--admin', adminB])
  t.match(listed.stdout, spec.id)
  const c = await clientV(t, b.url, 5, { clientId: 'rt-1' })
  await c.publishAsync('rt/x', 'during', { qos: 1 })
  const bFile = path.join(dir, 'b.jsonl')
  const during = await pollUntil('lines on B', 5000, async () => existsSync(bFile) && (await readFile(bFile, 'utf8')).includes('"topic":"rt/x"') ? true : undefined)
  t.ok(during, 'a client on B is traced by a trace started on A')
  await pollUntil('the end of the trace', 5000, async () => ((await (await fetch(`${adminB}/traces`)).json()) as unknown[]).length === 0 ? true : undefined)
  const before = (await readFile(bFile, 'utf8')).length
  await c.publishAsync('rt/y', 'after', { qos: 1 })
  const c2 = await clientV(t, b.url, 5, { clientId: 'rt-2' })
  await c2.publishAsync('rt/z', 'after', { qos: 1 })
  t.equal((await readFile(bFile, 'utf8')).length, before, 'nothing traced after the end time')
  const again = await runToExit(['trace', 'start', '--admin', adminB, '--topic', 'rt/#', '--for', '1h'])
  const id = (JSON.parse(again.stdout) as { id: string }).id
  const stopped = await runToExit(['trace', 'stop', id, '--admin', adminA])
  t.equal(stopped.code, 0, 'stopped from the other instance')
  await pollUntil('stopped on B', 5000, async () => ((await (await fetch(`${adminB}/traces`)).json()) as unknown[]).length === 0 ? true : undefined)
  const bad = await fetch(`${adminA}/traces`, { method: 'POST', body: JSON.stringify({ filters: { types: ['nope'] } }) })
  t.equal(bad.status, 400)
  t.match(await bad.json(), { error: /^filters\.types\[0\]: unknown packet type "nope"/ })
})

t.test('trace view and trace export: readable lines, and a capture tshark decodes', async (t) => {
  const { proxy, file, lines } = await traced(t, { payload: 'text' })
  const c = await clientV(t, at(proxy), 4, { clientId: 'exp-1', username: 'u', password: PASSWORD })
  await c.subscribeAsync('plant/#', { qos: 1 })
  const got = nextMessage(c, 'plant/7/temp')
  await c.publishAsync('plant/7/temp', '21.5', { qos: 1 })
  await got
  await c.endAsync()
  await until(lines, 'the DISCONNECT', (l) => l.some((x) => x.type === 'disconnect' && x.leg === 'broker'))
  const view = await runToExit(['trace', 'view', file, '--no-color'])
  t.equal(view.code, 0, view.stderr)
  t.match(view.stdout, /PUBLISH .*plant\/7\/temp/)
  t.match(view.stdout, /rtt/)
  const out = path.join(path.dirname(file), 'capture.pcapng')
  const exported = await runToExit(['trace', 'export', file, '--pcap', out])
  t.equal(exported.code, 0, exported.stderr)
  const { stdout } = await promisify(execFile)('tshark', ['-r', out, '-Y', 'mqtt.msgtype == 3', '-T', 'fields', '-e', 'mqtt.topic'])
  t.ok(stdout.split('\n').filter((x) => x === 'plant/7/temp').length >= 4, 'the PUBLISH on both legs, both ways, decoded as MQTT')
  const pcap = await readFile(out)
  t.notOk(pcap.includes(PASSWORD), 'the capture has no password either')
})

t.test('SIGHUP: new trace options from the file apply in the running process', async (t) => {
  const dir = await tempDir(t, 'mqtt-guard-trace-hup-')
  const config = path.join(dir, 'guard.json')
  const first = path.join(dir, 'first.jsonl')
  const second = path.join(dir, 'second.jsonl')
  const write = async (trace: Record<string, unknown>, aclRules: unknown[]): Promise<void> => {
    await (await import('node:fs/promises')).writeFile(config, JSON.stringify({
      listen: '127.0.0.1:0', upstream: mosquitto.url,
      plugins: [{ name: 'acl', rules: aclRules }, { name: 'trace', ...trace }]
    }))
  }
  const allowAll = [{ allow: ['publish', 'subscribe', 'receive'], topic: '#' }]
  await write({ destination: first, payload: 'none' }, allowAll)
  const proc = (await import('../helpers/cli-process.js')).runCli(['start', '--config', config])
  t.teardown(async () => { await proc.stop() })
  const url = `mqtt://127.0.0.1:${await proc.listening()}`
  const a = await clientV(t, url, 4, { clientId: 'hup-a' })
  await a.publishAsync('hup/x', 'one', { qos: 1 })
  await pollUntil('lines in the first file', 5000, async () => existsSync(first) && (await readFile(first, 'utf8')).includes('"topic":"hup/x"') ? true : undefined)
  await write({ destination: second, payload: 'text', filters: { clientId: 'hup-b*' } }, [{ allow: ['publish', 'subscribe', 'receive'], topic: 'hup/#' }])
  proc.signal('SIGHUP')
  await proc.waitFor((l) => l.msg === 'plugin reconfigured' && l.plugin === 'trace')
  const reloaded = await proc.waitFor((l) => l.msg === 'reloaded')
  t.same(reloaded.changed, ['plugins[0] (acl): new options (now)', 'plugins[1] (trace): new options (now)'], 'both take their new options in place, and the line says so')
  const b = await clientV(t, url, 4, { clientId: 'hup-b1' })
  await b.publishAsync('hup/y', 'two', { qos: 1 })
  await a.publishAsync('hup/z', 'three', { qos: 1 })
  const lines = await pollUntil('lines in the second file', 5000, async () => {
    if (!existsSync(second)) return undefined
    const text = await readFile(second, 'utf8')
    return text.includes('"topic":"hup/y"') ? text : undefined
  })
  t.match(lines, /"payload":\{"bytes":3,"text":"two"\}/, 'payload mode text now')
  t.notOk(lines.includes('hup-a'), 'the new filters: hup-a is no longer traced')
})
