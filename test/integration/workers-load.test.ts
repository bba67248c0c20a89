// A worker killed under load (issue 22): `workers: 2` in front of a real Mosquitto, 100 clients
// (50 MQTT 3.1.1, 50 MQTT 5) exchanging QoS 1 messages without pause; one worker gets SIGKILL.
// Counted: only that worker's clients see their connection close (the others see no close,
// offline or DISCONNECT, and every QoS 1 message acknowledged to a publisher reaches its
// subscriber when that subscriber was not cut); the cut clients reconnect and are served again;
// the worker is replaced, and the replacement takes new connections.

import t from 'tap'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { MqttClient } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.js'
import { runCli } from '../helpers/cli-process.js'
import { clientV } from '../helpers/e2e-mqtt.js'
import { pollUntil } from '../helpers/processes.js'
import { tempDir } from '../helpers/auth-clients.js'
import { parseExposition, valueOf } from '../helpers/metrics-scrape.js'

const CLIENTS = 100
const PUBLISH_EVERY_MS = 100

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

t.test('SIGKILL to one of two workers under QoS 1 load: only its clients are cut, they reconnect, nothing acknowledged is lost', { timeout: 60_000 }, async (t) => {
  const dir = await tempDir(t, 'mqtt-guard-workers-load-')
  const file = path.join(dir, 'guard.json')
  await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', admin: '127.0.0.1:0', upstream: mosquitto.url, log: { level: 'info' }, workers: 2 }))
  const proc = runCli(['start', '--config', file])
  t.teardown(async () => { await proc.stop(15_000) })
  const url = `mqtt://127.0.0.1:${await proc.listening(30_000)}`
  const admin = `http://127.0.0.1:${await proc.adminPort()}`
  const run = `wl${process.pid}`

  // MQTT.js reconnects by itself (and subscribes again): what a device does when its proxy goes.
  const clients: MqttClient[] = []
  for (let batch = 0; batch < CLIENTS; batch += 20) {
    clients.push(...await Promise.all(Array.from({ length: 20 }, async (_, j) => {
      const i = batch + j
      const c = await clientV(t, url, i % 2 === 0 ? 4 : 5, { clientId: `${run}-${i}`, keepalive: 30, reconnectPeriod: 300 })
      await c.subscribeAsync(`${run}/to/${i}`, { qos: 1 })
      return c
    })))
  }
  const workerOf = new Map<string, number>()
  for (const l of proc.lines) if (l.msg === 'connection opened' && typeof l.clientId === 'string') workerOf.set(l.clientId, l.pid as number)
  t.equal(workerOf.size, CLIENTS, 'every client\'s connection opened line names its worker')
  const pids = [...new Set(proc.lines.filter((l) => l.msg === 'worker listening').map((l) => l.pid as number))]
  t.equal(pids.length, 2, 'two workers')
  const victim = pids[0] as number
  const cut = new Set(clients.map((_, i) => i).filter((i) => workerOf.get(`${run}-${i}`) === victim))
  t.ok(cut.size > 0 && cut.size < CLIENTS, `the victim worker holds ${cut.size} of ${CLIENTS} clients`)

  const closes = new Map<number, number>()
  const reconnects = new Map<number, number>()
  clients.forEach((c, i) => {
    c.on('close', () => { closes.set(i, (closes.get(i) ?? 0) + 1) })
    c.on('disconnect', () => { closes.set(i, (closes.get(i) ?? 0) + 1) })
    c.on('connect', () => { reconnects.set(i, (reconnects.get(i) ?? 0) + 1) })
  })
  // key `from:seq`; the subscriber of `from` is from + 1.
  const received = new Set<string>()
  const acked = new Set<string>()
  const failed: string[] = []
  for (const c of clients) c.on('message', (_topic, payload) => { received.add(payload.toString()) })
  let publishing = true
  const timers = clients.map((c, i) => {
    let seq = 0
    const to = `${run}/to/${(i + 1) % CLIENTS}`
    return setInterval(() => {
      if (!publishing || !c.connected) return
      const key = `${i}:${seq++}`
      c.publish(to, key, { qos: 1 }, (err) => { if (err === undefined || err === null) acked.add(key); else failed.push(`${key} ${err.message}`) })
    }, PUBLISH_EVERY_MS)
  })
  t.teardown(() => { for (const timer of timers) clearInterval(timer) })
  const flowing = async (n: number): Promise<void> => {
    const from = received.size
    await pollUntil(`${n} more messages`, 15_000, () => received.size >= from + n ? true : undefined)
  }
  await flowing(1000)

  process.kill(victim, 'SIGKILL')
  await proc.waitFor((l) => l.msg === 'worker replaced', 20_000)
  // The listeners came after the first CONNACK: one 'connect' is the reconnection.
  await pollUntil('every cut client connected again', 20_000, () => [...cut].every((i) => (reconnects.get(i) ?? 0) >= 1) ? true : undefined)
  t.same(clients.map((_, i) => i).filter((i) => !cut.has(i) && reconnects.has(i)), [], 'no client of the other worker connected again')
  await flowing(1000)
  publishing = false
  // What was acknowledged before the stop has had time to arrive: wait for it, bounded.
  const owed = (): string[] => [...acked].filter((key) => {
    const from = Number(key.split(':')[0])
    return !cut.has((from + 1) % CLIENTS) && !received.has(key)
  })
  await pollUntil('every acknowledged message to a client that was not cut', 10_000, () => owed().length === 0 ? true : undefined).catch(() => {})

  const cutClosed = [...cut].filter((i) => (closes.get(i) ?? 0) > 0)
  const othersClosed = clients.map((_, i) => i).filter((i) => !cut.has(i) && (closes.get(i) ?? 0) > 0)
  t.same(othersClosed, [], 'no client of the other worker saw a close, offline or DISCONNECT')
  t.equal(cutClosed.length, cut.size, `all ${cut.size} clients of the killed worker were cut`)
  t.same(owed(), [], `every acknowledged message to a client that was not cut arrived (${acked.size} acknowledged)`)
  t.same(failed.filter((f) => !cut.has(Number(f.split(':')[0]))), [], 'no publish of a client that was not cut failed')

  const m = parseExposition(await (await fetch(`${admin}/metrics`)).text())
  t.equal(valueOf(m, 'mqtt_guard_worker_restarts_total', { reason: 'SIGKILL' }), 1, 'the death is counted')
  t.equal(valueOf(m, 'mqtt_guard_workers', { state: 'serving' }), 2, 'two workers serve again')
  const replacement = proc.lines.filter((l) => l.msg === 'worker listening').map((l) => l.pid as number).find((pid) => !pids.includes(pid))
  t.ok(replacement !== undefined, 'a new worker process listens')
  for (let i = 0; i < 6; i++) await clientV(t, url, 5, { clientId: `${run}-new-${i}` })
  await pollUntil('the new clients\' connection opened lines', 5000, () => proc.lines.filter((l) => l.msg === 'connection opened' && String(l.clientId).startsWith(`${run}-new-`)).length === 6 ? true : undefined)
  const onReplacement = proc.lines.filter((l) => l.msg === 'connection opened' && String(l.clientId).startsWith(`${run}-new-`) && l.pid === replacement).length
  t.ok(onReplacement > 0, `the replacement took ${onReplacement} of 6 new connections`)
})
