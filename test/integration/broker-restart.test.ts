// The broker stops and comes back during QoS 1 traffic through the proxy: clients are closed,
// reconnect by themselves (refused with 3 / 0x88 while the broker is away), their persistent
// sessions resume, and every message arrives: counted end to end.

import t from 'tap'
import mqtt, { type MqttClient } from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy } from '../helpers/proxy.js'
import { pollUntil } from '../helpers/processes.js'
import { uniqueTopic } from '../helpers/e2e-mqtt.js'

const COUNT = 300

t.test('broker restarted mid-traffic: no QoS 1 message lost', { timeout: 90_000 }, async (t) => {
  const broker = await startMosquitto({ persistence: true })
  t.teardown(() => broker.stop())
  const proxy = await startProxy({ config: { upstream: broker.url, limits: { connectTimeoutMs: 2000 } } })
  t.teardown(() => proxy.stop())
  const topic = uniqueTopic('restart')
  const options = { reconnectPeriod: 200, connectTimeout: 3000, clean: false }
  const sub: MqttClient = mqtt.connect(proxy.url, { ...options, protocolVersion: 4, clientId: 'restart-sub' })
  t.teardown(() => { sub.end(true) })
  sub.on('error', () => {})
  await once(sub as unknown as EventEmitter, 'connect')
  await sub.subscribeAsync(topic, { qos: 1 })
  const seen = new Map<number, number>()
  sub.on('message', (_topic, payload) => { const n = Number(payload.toString()); seen.set(n, (seen.get(n) ?? 0) + 1) })
  const pub: MqttClient = mqtt.connect(proxy.url, { ...options, protocolVersion: 5, clientId: 'restart-pub', properties: { sessionExpiryInterval: 600 } })
  t.teardown(() => { pub.end(true) })
  pub.on('error', () => {})
  await once(pub as unknown as EventEmitter, 'connect')
  let closes = 0
  sub.on('close', () => { closes++ })

  // Publish steadily; restart the broker a third of the way in.
  const acks: Array<Promise<unknown>> = []
  for (let i = 0; i < COUNT; i++) {
    acks.push(pub.publishAsync(topic, String(i), { qos: 1 }))
    if (i === Math.floor(COUNT / 3)) await broker.restart()
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  await Promise.all(acks)
  await pollUntil('every message at the subscriber', 30_000, () => seen.size === COUNT ? true : undefined)
  const missing = Array.from({ length: COUNT }, (_, i) => i).filter((i) => !seen.has(i))
  t.same(missing, [], `all ${COUNT} messages arrived`)
  const duplicates = [...seen.values()].filter((n) => n > 1).length
  t.comment(`${duplicates} delivered more than once (QoS 1 allows it; dedupe removes them)`)
  t.ok(closes >= 1, 'the subscriber was closed when the broker went away, and came back')
  t.ok(proxy.logs.lines.some((l) => l.msg === 'connection closed' && l.reason === 'broker-closed'), 'the proxy logged why')
})
