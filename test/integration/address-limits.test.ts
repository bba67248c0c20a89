// Limits per address and per connection, each refusal with its reason code and counted:
// connections per address, connects per second per address, keepalive bounds (MQTT 5 server
// keepalive, 3.1.1 refused), a publish rate (the client is slowed down, nothing is lost), the
// maximum connection count, and limits changed by SIGHUP in a running process.

import t, { type Test } from 'tap'
import mqtt from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { IConnackPacket } from 'mqtt-packet'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { BASE, clientV, nextMessage, refusedCode, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { runCli } from '../helpers/cli-process.js'
import { tempDir } from '../helpers/auth-clients.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

async function proxy (t: Test, limits: Record<string, number>): Promise<TestProxy> {
  const p = await startProxy({ config: { upstream: mosquitto.url, limits } })
  t.teardown(() => p.stop())
  return p
}

async function metric (p: TestProxy, name: string): Promise<string> {
  return (await p.server.metrics.text()).split('\n').filter((l) => l.startsWith(name)).join('\n')
}

t.test('connections per address: 3.1.1 code 3, MQTT 5 0x97 quota exceeded', async (t) => {
  const p = await proxy(t, { maxConnectionsPerAddress: 2 })
  const a = await clientV(t, p.url, 4, { clientId: 'pa-1' })
  await clientV(t, p.url, 5, { clientId: 'pa-2' })
  t.equal(await refusedCode(t, p.url, 4, { clientId: 'pa-3' }), 3)
  t.equal(await refusedCode(t, p.url, 5, { clientId: 'pa-4' }), 0x97)
  await a.endAsync()
  await p.logs.waitFor((l) => l.msg === 'connection closed' && l.clientId === 'pa-1')
  await clientV(t, p.url, 4, { clientId: 'pa-5' })
  t.pass('a slot frees when a connection closes')
  t.match(await metric(p, 'mqtt_guard_refusals_total'), /code="GUARD_ERR_ADDRESS_LIMIT",reason_code="3"\} 1[\s\S]*code="GUARD_ERR_ADDRESS_LIMIT",reason_code="151"\} 1|code="GUARD_ERR_ADDRESS_LIMIT",reason_code="151"\} 1[\s\S]*code="GUARD_ERR_ADDRESS_LIMIT",reason_code="3"\} 1/)
})

t.test('connects per second per address: MQTT 5 0x9F connection rate exceeded', async (t) => {
  const p = await proxy(t, { maxConnectsPerSecondPerAddress: 3 })
  const codes: Array<number | undefined> = []
  for (let i = 0; i < 5; i++) {
    const c = mqtt.connect(p.url, { ...BASE, protocolVersion: 5, clientId: `rate-${i}` })
    t.teardown(() => { c.end(true) })
    codes.push(await new Promise<number | undefined>((resolve) => {
      c.once('connect', () => { resolve(0) })
      c.once('error', (e: Error & { code?: number }) => { resolve(e.code) })
    }))
  }
  t.same(codes.slice(0, 3), [0, 0, 0], 'the burst of 3 is admitted')
  t.ok(codes.slice(3).every((c) => c === 0x9f), `then 0x9F (${codes.join(', ')})`)
})

t.test('keepalive bounds: MQTT 5 gets a server keepalive, the broker the same; 3.1.1 refused', async (t) => {
  const p = await proxy(t, { maxKeepaliveSeconds: 30 })
  for (const keepalive of [120, 0]) {
    const c = mqtt.connect(p.url, { ...BASE, protocolVersion: 5, keepalive, clientId: `ka-${keepalive}` })
    t.teardown(() => { c.end(true) })
    const [connack] = await once(c as unknown as EventEmitter, 'connect') as [IConnackPacket]
    t.equal(connack.properties?.serverKeepAlive, 30, `keepalive ${keepalive}: server keepalive 30 [MQTT-3.2.2-21]`)
  }
  const fine = mqtt.connect(p.url, { ...BASE, protocolVersion: 5, keepalive: 20, clientId: 'ka-20' })
  t.teardown(() => { fine.end(true) })
  const [connack] = await once(fine as unknown as EventEmitter, 'connect') as [IConnackPacket]
  t.equal(connack.properties?.serverKeepAlive, undefined, 'within the bound: untouched')
  t.equal(await refusedCode(t, p.url, 4, { clientId: 'ka-v4', keepalive: 120 }), 2, '3.1.1 above the bound: refused')
  await p.logs.waitFor((l) => l.msg === 'connection closed' && l.reason === 'GUARD_ERR_KEEPALIVE')
})

t.test('publish rate: the client is slowed to the limit, every message arrives', async (t) => {
  const p = await proxy(t, { maxPublishesPerSecond: 50 })
  const c = await clientV(t, p.url, 4, { clientId: 'throttled' })
  const sub = await clientV(t, mosquitto.url, 4, { clientId: 'throttle-sub' })
  const topic = uniqueTopic('rate')
  await sub.subscribeAsync(topic, { qos: 1 })
  let got = 0
  sub.on('message', () => { got++ })
  const last = new Promise<void>((resolve) => { sub.on('message', (_t, payload) => { if (payload.toString() === '149') resolve() }) })
  const started = Date.now()
  for (let i = 0; i < 150; i++) c.publish(topic, String(i), { qos: 0 })
  await last
  const took = Date.now() - started
  t.equal(got, 150, 'nothing lost')
  t.ok(took >= 1800, `150 messages at 50/s after a burst of 50 take about 2 s; took ${took} ms`)
  t.match(await metric(p, 'mqtt_guard_publish_throttled_total'), /mqtt_guard_publish_throttled_total [1-9]/)
  void nextMessage
})

t.test('SIGHUP applies new limits in a running process, and its log line says which', async (t) => {
  const dir = await tempDir(t, 'mqtt-guard-reload-')
  const file = path.join(dir, 'guard.json')
  await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', upstream: mosquitto.url, limits: { maxConnectionsPerAddress: 1 } }))
  const proc = runCli(['start', '--config', file])
  t.teardown(async () => { await proc.stop() })
  const port = await proc.listening()
  const url = `mqtt://127.0.0.1:${port}`
  await clientV(t, url, 4, { clientId: 'r-1' })
  t.equal(await refusedCode(t, url, 4, { clientId: 'r-2' }), 3, 'one per address')
  await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', upstream: mosquitto.url, limits: { maxConnectionsPerAddress: 2 } }))
  proc.signal('SIGHUP')
  const reloaded = await proc.waitFor((l) => l.msg === 'reloaded')
  t.same(reloaded.changed, ['limits.maxConnectionsPerAddress: 1 → 2 (new connections)'])
  await clientV(t, url, 4, { clientId: 'r-3' })
  t.pass('two per address after the reload')
})
