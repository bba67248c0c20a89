// The proxy process is killed with SIGKILL during QoS 1 traffic and started again on the same
// port: clients reconnect by themselves, publishers resend what was not acknowledged, and no
// message is lost (counted end to end).

import t from 'tap'
import mqtt, { type MqttClient } from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import { startMosquitto } from '../helpers/mosquitto.js'
import { runCli, type CliProcess } from '../helpers/cli-process.js'
import { freePort } from '../helpers/ports.js'
import { pollUntil } from '../helpers/processes.js'
import { uniqueTopic } from '../helpers/e2e-mqtt.js'

const COUNT = 300

t.test('proxy SIGKILLed mid-traffic and restarted: no QoS 1 message lost', { timeout: 90_000 }, async (t) => {
  const broker = await startMosquitto()
  t.teardown(() => broker.stop())
  const port = await freePort()
  const start = async (): Promise<CliProcess> => {
    const proc = runCli(['start', '--listen', `127.0.0.1:${port}`, '--upstream', broker.url])
    t.teardown(async () => { await proc.stop() })
    await proc.listening()
    return proc
  }
  let proxy = await start()
  const url = `mqtt://127.0.0.1:${port}`
  const topic = uniqueTopic('kill')
  const options = { reconnectPeriod: 100, connectTimeout: 3000, clean: false }
  const sub: MqttClient = mqtt.connect(url, { ...options, protocolVersion: 5, clientId: 'kill-sub', properties: { sessionExpiryInterval: 600 } })
  t.teardown(() => { sub.end(true) })
  sub.on('error', () => {})
  await once(sub as unknown as EventEmitter, 'connect')
  await sub.subscribeAsync(topic, { qos: 1 })
  const seen = new Map<number, number>()
  sub.on('message', (_t, payload) => { const n = Number(payload.toString()); seen.set(n, (seen.get(n) ?? 0) + 1) })
  const pub: MqttClient = mqtt.connect(url, { ...options, protocolVersion: 4, clientId: 'kill-pub' })
  t.teardown(() => { pub.end(true) })
  pub.on('error', () => {})
  await once(pub as unknown as EventEmitter, 'connect')

  const acks: Array<Promise<unknown>> = []
  for (let i = 0; i < COUNT; i++) {
    acks.push(pub.publishAsync(topic, String(i), { qos: 1 }))
    if (i === Math.floor(COUNT / 2)) {
      proxy.signal('SIGKILL')
      await proxy.exited
      proxy = await start()
    }
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  await Promise.all(acks)
  await pollUntil('every message at the subscriber', 30_000, () => seen.size === COUNT ? true : undefined)
  t.same(Array.from({ length: COUNT }, (_, i) => i).filter((i) => !seen.has(i)), [], `all ${COUNT} messages arrived`)
  t.comment(`${[...seen.values()].filter((n) => n > 1).length} delivered more than once (QoS 1 allows it)`)
})
