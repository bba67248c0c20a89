// `mqtt-guard doctor` (the CLI, a child process) against proxies in front of a real Mosquitto,
// each driven into the findings it must report: a client ID shared by two devices, refused
// connects, client-ID refusals, ACL denials and the subscriber they starve, QoS 0 clean-session
// subscribers, a slow consumer, a packet over the size limit, round trips on both legs, an
// expiring and an expired certificate, Redis and the broker away, connections and descriptors
// at their limits. A healthy proxy exits 0; any warning makes it exit 1.

import t, { type Test } from 'tap'
import net from 'node:net'
import { once, type EventEmitter } from 'node:events'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import mqtt, { MqttClient, type IClientOptions } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { spawn } from 'node:child_process'
import { BIN, CliProcess, ROOT, runToExit } from '../helpers/cli-process.js'
import { freePort } from '../helpers/ports.js'
import { makePki } from '../helpers/certs.js'
import { RawMqttClient } from '../helpers/raw-client.js'
import { BASE, clientV, nextMessage } from '../helpers/e2e-mqtt.js'
import { hashPbkdf2, formatHash } from '../../plugins/auth/password-file.js'
import { tempDir } from '../helpers/auth-clients.js'
import { pollUntil } from '../helpers/processes.js'
import type { Finding } from '../../src/observe/diagnostics.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

interface Doctor { code: number | null, findings: Finding[], stdout: string }

async function doctor (admin: string, json = true): Promise<Doctor> {
  const r = await runToExit(['doctor', '--admin', admin, ...(json ? ['--json'] : [])], { timeoutMs: 20_000 })
  return { code: r.code, findings: json ? (JSON.parse(r.stdout) as { findings: Finding[] }).findings : [], stdout: r.stdout }
}

async function guard (t: Test, config: Record<string, unknown> = {}): Promise<TestProxy & { admin: string }> {
  const p = await startProxy({ config: { upstream: mosquitto.url, admin: '127.0.0.1:0', ...config } })
  t.teardown(() => p.stop())
  return { ...p, admin: `http://127.0.0.1:${String(p.server.admin?.port)}` }
}

const one = (d: Doctor, id: string): Finding | undefined => d.findings.find((f) => f.id === id)

async function from (t: Test, port: number, localAddress: string, options: IClientOptions): Promise<MqttClient> {
  const c = new MqttClient(() => net.connect({ port, host: '127.0.0.1', localAddress }), { ...BASE, reconnectPeriod: 0, ...options })
  t.teardown(() => { c.end(true) })
  await once(c as unknown as EventEmitter, 'connect')
  return c
}

t.test('a healthy proxy: round trips on both legs as info, exit 0, readable output', async (t) => {
  const p = await guard(t)
  const a = await clientV(t, p.url, 5, { clientId: 'dr-healthy', clean: false, properties: { sessionExpiryInterval: 60 } })
  await a.subscribeAsync('dr/healthy', { qos: 1 })
  const got = nextMessage(a, 'dr/healthy')
  await a.publishAsync('dr/healthy', 'x', { qos: 1 })
  await got
  await pollUntil('a client-leg sample', 5000, async () => (await p.server.metrics.roundTrip.get()).values.some((v) => v.labels.leg === 'client' && (v.metricName ?? '').endsWith('_count') && v.value > 0) ? true : undefined)
  const d = await doctor(p.admin)
  t.equal(d.code, 0, 'exit 0')
  t.same(d.findings.filter((f) => f.severity !== 'info'), [], 'nothing worse than info')
  t.match(one(d, 'latency-placement'), { severity: 'info', evidence: [/^broker leg .* ms mean over \d+ samples?$/, /^client leg .* ms mean over \d+ samples?$/] })
  const text = await doctor(p.admin, false)
  t.match(text.stdout, /^doctor http:\/\/127\.0\.0\.1:\d+ \(instance [0-9a-f]+, /)
  t.match(text.stdout, /INFO {5}latency-placement: round trips on both legs\n {9}broker leg/)
})

t.test('a client ID shared by two devices: flapping, from two addresses, with the fix', async (t) => {
  const p = await guard(t)
  for (let i = 0; i < 6; i++) {
    const c = await from(t, p.port, i % 2 === 0 ? '127.0.0.1' : '127.0.0.2', { clientId: 'dr-shared', protocolVersion: 4 })
    // Mosquitto takes the session over and closes the older connection.
    void c
  }
  await pollUntil('the takeovers logged', 5000, () => p.logs.lines.filter((l) => l.msg === 'connection closed' && l.clientId === 'dr-shared').length >= 5 ? true : undefined)
  const d = await doctor(p.admin)
  t.equal(d.code, 1, 'a warning: exit 1')
  t.match(one(d, 'flapping-client'), { severity: 'warning', summary: /^client dr-shared connected [56] times/, evidence: ['from 2 addresses: 127.0.0.1, 127.0.0.2', /× closed by the broker/], fix: /share the client ID dr-shared/ })
})

t.test('refused connects by code, and client-ID refusals', async (t) => {
  const dir = await tempDir(t, 'mqtt-guard-doctor-')
  const passwordFile = path.join(dir, 'passwd')
  await writeFile(passwordFile, `carol:${formatHash(await hashPbkdf2('pw-doctor-carol'))}\n`)
  const p = await guard(t, { plugins: [{ name: 'auth', passwordFile, bruteForce: { maxFailures: 100 } }, { name: 'client-id', policy: 'reject-new' }] })
  for (let i = 0; i < 5; i++) {
    const c = mqtt.connect(p.url, { ...BASE, reconnectPeriod: 0, clientId: `dr-bad-${i}`, username: 'carol', password: 'pw-doctor-wrong' })
    t.teardown(() => { c.end(true) })
    await once(c as unknown as EventEmitter, 'error')
  }
  await clientV(t, p.url, 4, { clientId: 'dr-dup', username: 'carol', password: 'pw-doctor-carol' })
  const dup = mqtt.connect(p.url, { ...BASE, reconnectPeriod: 0, clientId: 'dr-dup', username: 'carol', password: 'pw-doctor-carol' })
  t.teardown(() => { dup.end(true) })
  await once(dup as unknown as EventEmitter, 'error')
  const d = await doctor(p.admin)
  t.equal(d.code, 1)
  t.match(one(d, 'connect-refusals'), { severity: 'warning', evidence: [/^5 × GUARD_ERR_BAD_CREDENTIALS: dr-bad-\d from 127\.0\.0\.1/] })
  t.match(one(d, 'client-id-refusals'), { severity: 'warning', evidence: [/^1 × client ID refused .*: dr-dup from 127\.0\.0\.1$/] })
})

t.test('ACL denials by rule, and the subscriber they starve; QoS 0 clean-session subscribers', async (t) => {
  const p = await guard(t, {
    plugins: [{ name: 'acl', rules: [{ deny: 'publish', topic: 'dr/room/#', clients: ['dr-pub'] }, { allow: ['publish', 'subscribe', 'receive'], topic: 'dr/#' }] }]
  })
  const sub = await clientV(t, p.url, 5, { clientId: 'dr-sub' })
  await sub.subscribeAsync('dr/room/+', { qos: 0 })
  const pub = await clientV(t, p.url, 5, { clientId: 'dr-pub' })
  for (let i = 0; i < 3; i++) await pub.publishAsync('dr/room/1', 'x', { qos: 1 }).catch(() => undefined)
  const d = await doctor(p.admin)
  t.match(one(d, 'acl-denials'), { severity: 'info', summary: /^3 ACL denials/, evidence: [/^rules\[0\].*: 3 × publish of dr\/room\/1 by dr-pub$/] })
  t.match(one(d, 'subscriber-starved'), { severity: 'warning', summary: 'dr-sub subscribes to dr/room/+, but 3 publishes it would match were refused', evidence: ['3 × dr/room/1 from dr-pub refused by acl'] })
  t.match(one(d, 'qos0-clean-subscribers'), { severity: 'info', evidence: ['dr-sub: dr/room/+'] })
  t.equal(d.code, 1)
})

t.test('a slow consumer and a packet over the size limit', async (t) => {
  const p = await guard(t, { limits: { maxPacketSize: 128 * 1024 } })
  const slow = await RawMqttClient.connected(p.port, 4, 'dr-slow', false)
  t.teardown(() => slow.destroy())
  slow.sendPacket({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'dr/flood', qos: 0 }] })
  await pollUntil('subscribed', 5000, () => p.server.connectionViews().some((c) => c.clientId === 'dr-slow' && c.subscriptions.length === 1) ? true : undefined)
  slow.socket.pause()
  const pub = await clientV(t, mosquitto.url, 4, { clientId: 'dr-flooder' })
  const payload = Buffer.alloc(100 * 1024)
  for (let i = 0; i < 400 && !p.server.connectionViews().some((c) => c.clientId === 'dr-slow' && c.stalls > 0); i++) {
    await pub.publishAsync('dr/flood', payload, { qos: 0 })
  }
  const big = await RawMqttClient.connected(p.port, 4, 'dr-big')
  big.sendPacket({ cmd: 'publish', topic: 'dr/big', payload: Buffer.alloc(200 * 1024), qos: 0, retain: false, dup: false })
  await big.waitClose()
  const d = await doctor(p.admin)
  t.match(one(d, 'slow-consumers'), { severity: 'warning', evidence: [/^dr-slow \(127\.0\.0\.1\): \d+ stalls?, \d+ ms in all$/] })
  t.match(one(d, 'packets-too-large'), { severity: 'warning', evidence: [/^dr-big: 1 × /] })
})

t.test('a plugin slower than the traffic: the connection\'s queue fills', async (t) => {
  const slowHook = { name: 'dr-slow-hook', in: { publish: async () => { await new Promise((resolve) => setTimeout(resolve, 20)) } } }
  const p = await startProxy({ config: { upstream: mosquitto.url, admin: '127.0.0.1:0', limits: { maxQueuedPackets: 5 } }, extraPlugins: [slowHook] })
  t.teardown(() => p.stop())
  const c = await clientV(t, p.url, 4, { clientId: 'dr-queue' })
  await Promise.all(Array.from({ length: 30 }, async (_, i) => await c.publishAsync('dr/queue', String(i), { qos: 1 })))
  const d = await doctor(`http://127.0.0.1:${String(p.server.admin?.port)}`)
  t.match(one(d, 'queue-full'), { severity: 'warning', evidence: [/^dr-queue \(127\.0\.0\.1\): held \d+ times?$/] })
})

t.test('certificates: one that expires soon, one that has expired', async (t) => {
  const pki = await makePki(t)
  const soon = await pki.server(['localhost'], { name: 'soon', days: 10 })
  const gone = await pki.server(['localhost'], { name: 'gone', days: 0 })
  const p = await guard(t, { listen: [{ url: 'mqtt://127.0.0.1:0' }, { url: 'mqtts://127.0.0.1:0', cert: soon.cert, key: soon.key }, { url: 'wss://127.0.0.1:0', cert: gone.cert, key: gone.key }] })
  const d = await doctor(p.admin)
  const certs = d.findings.filter((f) => f.id === 'certificate-expiry')
  t.match(certs.find((f) => f.severity === 'warning'), { summary: /^the certificate of mqtts:\/\/127\.0\.0\.1:0 .*expires in (9|10) days$/ })
  t.match(certs.find((f) => f.severity === 'error'), { summary: /^the certificate of wss:\/\/127\.0\.0\.1:0\/mqtt \(CN=localhost\) has expired$/ })
  t.equal(d.code, 1)
})

t.test('Redis and the broker away', async (t) => {
  const p = await guard(t, { upstream: `mqtt://127.0.0.1:${await freePort()}`, redis: { url: `redis://127.0.0.1:${await freePort()}` } })
  const d = await doctor(p.admin)
  t.match(one(d, 'upstream-unhealthy'), { severity: 'error' })
  t.match(one(d, 'redis-unhealthy'), { severity: 'error' })
  t.equal(d.code, 1)
})

t.test('connections at limits.maxConnections; descriptors near the process limit (ulimit -n 200)', async (t) => {
  const p = await guard(t, { limits: { maxConnections: 2 } })
  await clientV(t, p.url, 4, { clientId: 'dr-lim-1' })
  await clientV(t, p.url, 4, { clientId: 'dr-lim-2' })
  t.match(one(await doctor(p.admin), 'connection-limit'), { severity: 'warning', summary: '2 connections of limits.maxConnections 2' })

  const dir = await tempDir(t, 'mqtt-guard-doctor-fd-')
  const file = path.join(dir, 'guard.json')
  const adminPort = await freePort()
  await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', upstream: mosquitto.url, admin: `127.0.0.1:${adminPort}`, limits: { maxConnections: 1000 } }))
  // The proxy as a child whose open-files limit is 200: sh lowers it, then becomes the proxy.
  const env = { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MQTT_GUARD_'))), MQTT_GUARD_ADMIN: `127.0.0.1:${adminPort}` }
  const proc = new CliProcess(spawn('sh', ['-c', `ulimit -n 200 && exec "${process.execPath}" "${BIN}" start --config "${file}"`], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] }))
  t.teardown(async () => { await proc.stop() })
  const port = await proc.listening()
  const admin = `http://127.0.0.1:${adminPort}`
  t.match(one(await doctor(admin), 'fd-limit'), { severity: 'info', summary: /^the open-files limit 200 holds about 68 clients, fewer than limits.maxConnections 1000$/ })
  for (let i = 0; i < 55; i++) await clientV(t, `mqtt://127.0.0.1:${port}`, 4, { clientId: `dr-fd-${i}` })
  const d = await doctor(admin)
  t.match(one(d, 'fd-limit'), { severity: /warning|error/, summary: /^\d+ of 200 file descriptors open$/, fix: /raise the open-files limit to at least 2064/ })
  t.equal(d.code, 1)
})

t.test('doctor without a proxy, or without its token', async (t) => {
  const none = await runToExit(['doctor', '--admin', `http://127.0.0.1:${await freePort()}`], { timeoutMs: 20_000 })
  t.equal(none.code, 3)
  t.match(none.stderr, /cannot ask http:\/\/127\.0\.0\.1:\d+/)
  const p = await guard(t, { admin: { listen: '127.0.0.1:0', token: 'pw-doctor-token-0123' } })
  const denied = await runToExit(['doctor', '--admin', p.admin], { timeoutMs: 20_000 })
  t.equal(denied.code, 3)
  t.match(denied.stderr, /wants a bearer token/)
  const allowed = await runToExit(['doctor', '--admin', p.admin, '--token', 'pw-doctor-token-0123'], { timeoutMs: 20_000 })
  t.equal(allowed.code, 0)
})
