// The admin endpoint, in front of a real Mosquitto and Redis: probes, the metrics text after
// known traffic, /connections with subscriptions, a kick across two instances, the token, and
// the drain on stop.

import t, { type Test } from 'tap'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startRedis } from '../helpers/redis.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { clientV, closed, nextMessage, refusedCode, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { handMadeConnect } from '../helpers/raw-client.js'
import { runCli, runToExit } from '../helpers/cli-process.js'
import net from 'node:net'
import { once } from 'node:events'
import { buildConfig } from '../../src/config/config.js'
import { isGuardError } from '../../src/errors.js'
import type { IDisconnectPacket } from 'mqtt'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const redis = await startRedis()
t.teardown(() => redis.stop())
let prefixNo = 0

async function proxyWithAdmin (t: Test, config: Record<string, unknown> = {}): Promise<TestProxy & { admin: string }> {
  const p = await startProxy({ config: { upstream: mosquitto.url, admin: '127.0.0.1:0', ...config } })
  t.teardown(() => p.stop())
  return { ...p, admin: `http://127.0.0.1:${p.server.admin?.port ?? 0}` }
}

async function getJson (url: string, init: RequestInit = {}): Promise<{ status: number, body: unknown }> {
  const res = await fetch(url, init).catch((err: Error) => { throw new Error(`${url}: ${String((err.cause as Error | undefined)?.message ?? err.message)}`) })
  return { status: res.status, body: await res.json() }
}

/** Prometheus text as a map from `name{labels}` (labels sorted by name) to the value. */
function samples (text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue
    const at = line.lastIndexOf(' ')
    out.set(normalise(line.slice(0, at)), Number(line.slice(at + 1)))
  }
  return { get: (key: string) => out.get(normalise(key)), has: (key: string) => out.has(normalise(key)) } as unknown as Map<string, number>
}

function normalise (key: string): string {
  const open = key.indexOf('{')
  if (open < 0) return key
  const labels = key.slice(open + 1, -1).split(/,(?=[a-z_]+=")/).sort()
  return `${key.slice(0, open)}{${labels.join(',')}}`
}

t.test('probes: alive, ready; not ready when the broker is unreachable', async (t) => {
  const p = await proxyWithAdmin(t)
  t.same(await getJson(`${p.admin}/healthz`), { status: 200, body: { status: 'ok' } })
  t.same(await getJson(`${p.admin}/readyz`), { status: 200, body: { ready: true, checks: { listening: true, upstream: true } } })
  const down = await proxyWithAdmin(t, { upstream: 'mqtt://127.0.0.1:1' })
  t.same(await getJson(`${down.admin}/readyz`), { status: 503, body: { ready: false, checks: { listening: true, upstream: false } } })
  const withRedis = await proxyWithAdmin(t, { redis: { url: 'redis://127.0.0.1:1', keyPrefix: 'x:' } })
  t.match(await getJson(`${withRedis.admin}/readyz`), { status: 503, body: { ready: false, checks: { redis: false } } }, 'Redis configured and unreachable')
  t.equal((await fetch(`${p.admin}/nope`)).status, 404)
  t.equal((await fetch(`${p.admin}/metrics`, { method: 'POST' })).status, 405)
})

t.test('HTTP conventions: Bearer in any case (RFC 9110 §11.1), HEAD for every GET, Allow on 405 and OPTIONS', async (t) => {
  const token = 'a-long-enough-admin-token'
  const p = await proxyWithAdmin(t, { admin: { listen: '127.0.0.1:0', token } })
  for (const scheme of ['bearer', 'BEARER', 'Bearer  ']) {
    t.equal((await fetch(`${p.admin}/connections`, { headers: { authorization: `${scheme} ${token}` } })).status, 200, `"${scheme}" is the Bearer scheme`)
  }
  const auth = { authorization: `Bearer ${token}` }
  for (const route of ['/healthz', '/metrics', '/connections']) {
    const res = await fetch(`${p.admin}${route}`, { method: 'HEAD', headers: auth })
    t.equal(res.status, 200, `HEAD ${route}`)
    t.equal(await res.text(), '', `HEAD ${route}: no body`)
  }
  const post = await fetch(`${p.admin}/metrics`, { method: 'POST', headers: auth })
  t.equal(post.status, 405)
  t.equal(post.headers.get('allow'), 'GET, HEAD, OPTIONS', '405 says what is allowed')
  const options = await fetch(`${p.admin}/connections`, { method: 'OPTIONS', headers: auth })
  t.equal(options.status, 204)
  t.match(options.headers.get('allow'), /GET, HEAD/, 'OPTIONS lists the methods')
})

t.test('metrics after known traffic', async (t) => {
  const p = await proxyWithAdmin(t, { plugins: [{ name: 'auth', allowAnonymous: true, bruteForce: false }], allowAnonymous: true })
  const c = await clientV(t, p.url, 4, { clientId: 'metrics-a' })
  const topic = uniqueTopic('metrics')
  await c.subscribeAsync(topic, { qos: 1 })
  for (let i = 0; i < 5; i++) {
    const got = nextMessage(c, topic)
    await c.publishAsync(topic, `m${i}`, { qos: 1 })
    await got
  }
  t.equal(await refusedCode(t, p.url, 5, { clientId: 'metrics-b', username: 'nobody', password: 'x' }), 0x86, 'one refusal (no password file: unknown user)')
  const res = await fetch(`${p.admin}/metrics`)
  t.match(res.headers.get('content-type'), /^text\/plain/)
  const m = samples(await res.text())
  t.equal(m.get('mqtt_guard_packets_total{type="publish",direction="in"}'), 5, 'five PUBLISH in')
  t.equal(m.get('mqtt_guard_packets_total{type="publish",direction="out"}'), 5, 'five deliveries out')
  t.equal(m.get('mqtt_guard_packets_total{type="puback",direction="in"}'), 5)
  t.equal(m.get('mqtt_guard_packets_total{type="subscribe",direction="in"}'), 1)
  t.ok((m.get('mqtt_guard_bytes_total{type="publish",direction="in"}') ?? 0) > 5 * topic.length, 'bytes counted')
  // The listener label is the configured listener (the tests listen on port 0).
  t.equal(m.get('mqtt_guard_connections{listener="mqtt://127.0.0.1:0"}'), 1)
  t.equal(m.get('mqtt_guard_connects_total{listener="mqtt://127.0.0.1:0"}'), 2)
  t.equal(m.get('mqtt_guard_refusals_total{code="GUARD_ERR_BAD_CREDENTIALS",reason_code="134"}'), 1, 'refusal by code and reason code')
  t.equal(m.get('mqtt_guard_plugin_verdicts_total{plugin="auth",action="reject"}'), 1)
  t.ok((m.get('mqtt_guard_round_trip_seconds_count{leg="broker"}') ?? 0) >= 1, 'a broker-leg round trip sampled')
  t.ok((m.get('mqtt_guard_round_trip_seconds_count{leg="client"}') ?? 0) >= 1, 'a client-leg round trip sampled')
  t.equal(m.get('mqtt_guard_upstream_dial_seconds_count'), 1, 'one dial (the refused client never reached the broker)')
  t.ok(m.has('nodejs_eventloop_lag_p99_seconds'), 'event-loop delay, under prom-client\'s own name')
})

t.test('/connections lists clients with their subscriptions; DELETE closes one on any instance', async (t) => {
  const keyPrefix = `adm${++prefixNo}:`
  const a = await proxyWithAdmin(t, { redis: { url: redis.url, keyPrefix } })
  const b = await proxyWithAdmin(t, { redis: { url: redis.url, keyPrefix } })
  const c = await clientV(t, b.url, 5, { clientId: 'kick-me', username: 'ops' })
  await c.subscribeAsync({ 'fleet/+/status': { qos: 1 }, 'fleet/cmd': { qos: 0 } })
  const list = await getJson(`${b.admin}/connections`)
  t.match(list, {
    status: 200,
    body: [{ clientId: 'kick-me', username: 'ops', address: '127.0.0.1', protocolVersion: 5, state: 'relaying', subscriptions: [{ filter: 'fleet/+/status', qos: 1 }, { filter: 'fleet/cmd', qos: 0 }] }]
  })
  t.same((await getJson(`${a.admin}/connections?clientId=kick-me`)).body, [], 'not on the other instance')
  let disconnect: IDisconnectPacket | undefined
  c.once('disconnect', (packet: IDisconnectPacket) => { disconnect = packet })
  const gone = closed(c)
  // Asked on instance A, held on instance B.
  t.same(await getJson(`${a.admin}/connections/kick-me`, { method: 'DELETE' }), { status: 200, body: { clientId: 'kick-me', closedHere: 0, announced: true } })
  await gone
  t.equal(disconnect?.reasonCode, 0x98, 'MQTT 5: DISCONNECT 0x98 administrative action')
  await b.logs.waitFor((l) => l.msg === 'connection closed' && l.reason === 'GUARD_ERR_ADMIN_KICK')
  const alone = await proxyWithAdmin(t)
  t.equal((await fetch(`${alone.admin}/connections/nobody`, { method: 'DELETE' })).status, 404, 'without Redis, an unknown client ID is 404')
})

t.test('the token: required off loopback, checked on everything but the probes', async (t) => {
  const err = (() => { try { buildConfig({ admin: '0.0.0.0:9884' }, {}) } catch (e) { return isGuardError(e) ? e.message : String(e) } return 'no error' })()
  t.match(err, /^admin\.token: required when admin listens on 0\.0\.0\.0/)
  const short = (() => { try { buildConfig({ admin: { listen: '127.0.0.1:0', token: 'short' } }, {}) } catch (e) { return isGuardError(e) ? e.message : String(e) } return 'no error' })()
  t.match(short, /^admin\.token: /)
  const token = 'a-long-enough-admin-token'
  const p = await proxyWithAdmin(t, { admin: { listen: '127.0.0.1:0', token } })
  t.equal((await fetch(`${p.admin}/metrics`)).status, 401)
  t.equal((await fetch(`${p.admin}/metrics`, { headers: { authorization: 'Bearer wrong-token-of-some-length' } })).status, 401)
  t.equal((await fetch(`${p.admin}/metrics`, { headers: { authorization: `Bearer ${token}` } })).status, 200)
  t.equal((await fetch(`${p.admin}/connections`, { headers: { authorization: `Bearer ${token}` } })).status, 200)
  t.equal((await fetch(`${p.admin}/readyz`)).status, 200, 'probes need no token')
})

t.test('--admin and MQTT_GUARD_ADMIN choose the address; off turns it off', async (t) => {
  const on = runCli(['start', '--listen', '127.0.0.1:0', '--upstream', mosquitto.url, '--admin', '127.0.0.1:0'])
  t.teardown(async () => { await on.stop() })
  const port = await on.adminPort()
  t.same(await getJson(`http://127.0.0.1:${port}/healthz`), { status: 200, body: { status: 'ok' } })
  const off = runCli(['start', '--listen', '127.0.0.1:0', '--upstream', mosquitto.url], { env: { MQTT_GUARD_ADMIN: 'off' } })
  t.teardown(async () => { await off.stop() })
  const line = await off.waitFor((l) => l.msg === 'mqtt-guard listening')
  t.equal(line.admin, undefined, 'no admin endpoint')
  const exposed = await runToExit(['start', '--listen', '127.0.0.1:0', '--admin', '0.0.0.0:0'])
  t.equal(exposed.code, 78)
  t.match(exposed.stderr, /admin\.token: required when admin listens on 0\.0\.0\.0/)
})

t.test('drain: readiness false, no new connections, MQTT 5 clients told 0x8B, lingering sockets cut', async (t) => {
  const p = await startProxy({ config: { upstream: mosquitto.url, admin: '127.0.0.1:0', limits: { drainTimeoutMs: 300 } } })
  const admin = `http://127.0.0.1:${p.server.admin?.port ?? 0}`
  const v5 = await clientV(t, p.url, 5, { clientId: 'drain-5' })
  let disconnect: IDisconnectPacket | undefined
  v5.once('disconnect', (packet: IDisconnectPacket) => { disconnect = packet })
  // A client that never closes its side: the drain must not wait for it forever.
  const stuck = net.connect({ port: p.port, host: '127.0.0.1', allowHalfOpen: true })
  t.teardown(() => { stuck.destroy() })
  await once(stuck, 'connect')
  stuck.write(handMadeConnect(4, 'drain-stuck'))
  await once(stuck, 'data') // CONNACK
  const started = Date.now()
  const stopping = p.stop()
  const ready = await getJson(`${admin}/readyz`)
  t.match(ready, { status: 503, body: { ready: false, checks: { listening: false, draining: true } } })
  await stopping
  t.ok(Date.now() - started < 1500, `stopped at the drain timeout, before the sockets' own 2 s grace (${Date.now() - started} ms)`)
  t.equal(disconnect?.reasonCode, 0x8b, 'MQTT 5: DISCONNECT 0x8B server shutting down')
  // The proxy's side is gone: a write is answered with a reset, the next one fails.
  stuck.on('error', () => {})
  const cut = new Promise<void>((resolve) => { stuck.once('close', () => { resolve() }) })
  const pinging = setInterval(() => { if (!stuck.destroyed) stuck.write(Buffer.from([0xc0, 0x00])) }, 50)
  await cut
  clearInterval(pinging)
  t.pass('the lingering socket was cut')
})
