// workers: N, through `mqtt-guard start` in front of a real Mosquitto: connections spread over
// the workers, /metrics is their sum, /connections and a kick reach every worker, a killed
// worker is replaced (its clients reconnect to the others, nobody else is dropped), and without
// Redis the primary's state holds across workers: a duplicate client ID is refused or taken over,
// a dedupe resend through another worker is removed, guessing on every worker adds up. A reload
// changes the worker count without disconnecting anyone.

import t, { type Test } from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { MqttClient } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.js'
import { runCli, runToExit, type CliProcess } from '../helpers/cli-process.js'
import { clientV, refusedCode, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { pollUntil } from '../helpers/processes.js'
import { loginCode, mosquittoPasswdFile, tempDir } from '../helpers/auth-clients.js'
import { RawMqttClient } from '../helpers/raw-client.js'
import { parseExposition, valueOf } from '../helpers/metrics-scrape.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

interface Group { proc: CliProcess, url: string, admin: string, file: string }

async function group (t: Test, config: Record<string, unknown>): Promise<Group> {
  const dir = await tempDir(t, 'mqtt-guard-workers-')
  const file = path.join(dir, 'guard.json')
  await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', admin: '127.0.0.1:0', upstream: mosquitto.url, log: { level: 'info' }, ...config }))
  const proc = runCli(['start', '--config', file])
  t.teardown(async () => { await proc.stop(15_000) })
  const port = await proc.listening(30_000)
  const admin = `http://127.0.0.1:${await proc.adminPort()}`
  return { proc, url: `mqtt://127.0.0.1:${port}`, admin, file }
}

async function metrics (g: Group): Promise<ReturnType<typeof parseExposition>> {
  return parseExposition(await (await fetch(`${g.admin}/metrics`)).text())
}

/** Which worker each connection's `connection opened` line came from, by client port. */
function workersOf (g: Group): Map<number, number> {
  const seen = new Map<number, number>()
  for (const l of g.proc.lines) if (l.msg === 'connection opened' && typeof l.worker === 'number') seen.set(l.worker, (seen.get(l.worker) ?? 0) + 1)
  return seen
}

t.test('connections spread over the workers; /metrics, /connections and a kick see all of them', async (t) => {
  const g = await group(t, { workers: 2 })
  const topic = uniqueTopic('w/spread')
  const clients: MqttClient[] = []
  for (let i = 0; i < 8; i++) clients.push(await clientV(t, g.url, i % 2 === 0 ? 4 : 5, { clientId: `spread-${i}` }))
  const per = workersOf(g)
  t.equal(per.size, 2, `both workers took connections: ${JSON.stringify([...per])}`)
  t.ok([...per.values()].every((n) => n >= 2), 'neither took them all')
  for (const c of clients) await c.publishAsync(topic, 'x', { qos: 1 })
  await pollUntil('the sum of both workers in /metrics', 10_000, async () => {
    const m = await metrics(g)
    return valueOf(m, 'mqtt_guard_connections') === 8 && valueOf(m, 'mqtt_guard_packets_total', { type: 'publish', direction: 'in' }) === 8 ? true : undefined
  })
  const m = await metrics(g)
  t.equal(valueOf(m, 'mqtt_guard_workers', { state: 'serving' }), 2)
  t.equal(valueOf(m, 'mqtt_guard_ready'), 1, 'ready: the minimum over the workers, not their sum')
  t.equal(valueOf(m, 'mqtt_guard_build_info', { version: m.get('mqtt_guard_build_info')?.samples[0]?.labels.version ?? '', node_version: process.versions.node }), 1, 'an info gauge once, not per worker')
  const listed = await (await fetch(`${g.admin}/connections`)).json() as Array<{ clientId: string }>
  t.same(listed.map((c) => c.clientId).sort(), clients.map((_, i) => `spread-${i}`).sort(), '/connections lists both workers\' clients')
  const ready = await (await fetch(`${g.admin}/readyz`)).json() as { ready: boolean, checks: Record<string, unknown> }
  t.same([ready.ready, ready.checks.workers], [true, '2/2 ready'])
  // Kick each: whichever worker holds it closes it.
  for (const i of [0, 1, 2, 3]) {
    const closed = new Promise<void>((resolve) => { clients[i]?.once('close', () => { resolve() }) })
    const res = await fetch(`${g.admin}/connections/spread-${i}`, { method: 'DELETE' })
    t.equal(res.status, 200)
    t.equal((await res.json() as { closedHere: number }).closedHere, 1)
    await closed
  }
  const overview = await (await fetch(`${g.admin}/overview`)).json() as { connections: number, connects: number }
  t.equal(overview.connects, 8, 'the console\'s overview adds the workers up')
})

t.test('a duplicate client ID is refused across workers without Redis (client-id, reject-new)', async (t) => {
  const g = await group(t, { workers: 2, plugins: [{ name: 'client-id', policy: 'reject-new' }] })
  await clientV(t, g.url, 5, { clientId: 'only-once' })
  // Round robin: of the next tries, some land on the other worker; every one is refused.
  for (let i = 0; i < 4; i++) t.equal(await refusedCode(t, g.url, 5, { clientId: 'only-once' }), 0x85, `try ${i + 1} refused (0x85)`)
  const refusing = new Set(g.proc.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('client-id: refused')).map((l) => l.worker))
  t.equal(refusing.size, 2, 'refused by both workers, from the one registry the primary keeps')
})

t.test('takeover across workers closes the old connection on the other worker', async (t) => {
  const g = await group(t, { workers: 2, plugins: [{ name: 'client-id', policy: 'takeover' }] })
  const old = await clientV(t, g.url, 5, { clientId: 'moving', reconnectPeriod: 0 })
  const gone = new Promise<number | undefined>((resolve) => { old.once('disconnect', (p) => { resolve(p.reasonCode) }) })
  await clientV(t, g.url, 5, { clientId: 'moving' })
  t.equal(await gone, 0x8e, 'the old connection got DISCONNECT 0x8E (session taken over)')
})

t.test('dedupe without Redis: a resend through another worker is answered, not delivered again', async (t) => {
  const g = await group(t, { workers: 2, plugins: [{ name: 'dedupe', maxEntries: 1000 }] })
  const topic = uniqueTopic('w/dedupe')
  const got: string[] = []
  const sub = await clientV(t, mosquitto.url, 4, { clientId: 'w-dd-sub' })
  sub.on('message', (tp, payload) => { if (tp === topic) got.push(payload.toString()) })
  await sub.subscribeAsync(topic, { qos: 1 })
  const port = Number(new URL(g.url).port)
  const connect = async (): Promise<RawMqttClient> => {
    const c = await RawMqttClient.open(port, 5)
    t.teardown(() => c.destroy())
    c.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId: 'w-dd', clean: true, keepalive: 60 })
    await c.next('connack')
    return c
  }
  // Round robin alternates the workers: of these four resends, some land on the other worker.
  for (let k = 0; k < 4; k++) {
    const publish = { cmd: 'publish', qos: 1, messageId: 10 + k, topic, payload: Buffer.from(`m${k}`), dup: false, retain: false } as const
    const first = await connect()
    first.sendPacket(publish)
    await first.take('puback')
    await first.destroy()
    const again = await connect()
    again.sendPacket({ ...publish, dup: true })
    t.equal((await again.take('puback')).messageId, 10 + k, `resend ${k + 1} acknowledged`)
    await again.destroy()
  }
  const marker = await connect()
  marker.sendPacket({ cmd: 'publish', qos: 1, messageId: 99, topic, payload: Buffer.from('marker'), dup: false, retain: false })
  await marker.take('puback')
  await pollUntil('the marker', 5000, () => got.includes('marker') ? true : undefined)
  t.same(got, ['m0', 'm1', 'm2', 'm3', 'marker'], 'each message delivered once')
  const workers = g.proc.lines.filter((l) => l.msg === 'connection opened' && l.clientId === 'w-dd').map((l) => l.worker)
  t.ok(workers.some((w, i) => i % 2 === 1 && w !== workers[i - 1]), `a resend went through the other worker than its original: ${workers.join(',')}`)
  t.equal(g.proc.lines.filter((l) => l.msg === 'dedupe: duplicate removed').length, 4, 'all four removed')
})

t.test('auth brute-force counters without Redis: failures on every worker add up', async (t) => {
  const dir = await tempDir(t, 'mqtt-guard-workers-auth-')
  const passwd = await mosquittoPasswdFile(path.join(dir, 'passwd'), [{ user: 'dev', password: 'right-password' }])
  const g = await group(t, { workers: 2, plugins: [{ name: 'auth', passwordFile: passwd, bruteForce: { maxFailures: 3, windowMs: 60_000, blockMs: 60_000 } }] })
  // Three wrong passwords, spread over both workers by round robin: blocked in all of them.
  for (let i = 0; i < 3; i++) t.equal(await loginCode(t, g.url, 5, 'dev', 'wrong'), 0x86, `wrong password ${i + 1}: 0x86`)
  for (let i = 0; i < 2; i++) t.equal(await loginCode(t, g.url, 5, 'dev', 'right-password'), 0x8a, `then the right one is refused as banned (0x8A), on either worker (${i + 1})`)
  const failing = new Set(g.proc.lines.filter((l) => l.msg === 'auth refused').map((l) => l.worker))
  t.equal(failing.size, 2, 'the attempts reached both workers')
})

t.test('a trace started from the admin endpoint covers every worker under one ID, a file per worker', async (t) => {
  const dir = await tempDir(t, 'mqtt-guard-workers-trace-')
  const g = await group(t, { workers: 2, plugins: [{ name: 'trace', enabled: false, destination: path.join(dir, 'trace.jsonl') }] })
  const res = await fetch(`${g.admin}/traces`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ filters: { clientId: 'tr-*' }, for: '1m' }) })
  t.equal(res.status, 201)
  const { id } = await res.json() as { id: string }
  const topic = uniqueTopic('w/trace')
  for (let i = 0; i < 4; i++) await (await clientV(t, g.url, 5, { clientId: `tr-${i}` })).publishAsync(topic, `t${i}`, { qos: 1 })
  const files = [path.join(dir, 'trace.w1.jsonl'), path.join(dir, 'trace.w2.jsonl')]
  for (const file of files) {
    const text = await pollUntil(`lines in ${path.basename(file)}`, 10_000, async () => {
      const content = await readFile(file, 'utf8').catch(() => '')
      return content.includes(`"trace":"${id}"`) && content.includes(topic) ? content : undefined
    })
    t.ok(text.split('\n').filter((l) => l.includes(topic)).every((l) => l.includes(`"trace":"${id}"`)), `${path.basename(file)}: this worker's clients, traced under ${id}`)
  }
  const listed = await (await fetch(`${g.admin}/traces`)).json() as Array<{ id: string }>
  t.same(listed.map((x) => x.id), [id])
  t.equal((await fetch(`${g.admin}/traces/${id}`, { method: 'DELETE' })).status, 200)
  const after = await (await fetch(`${g.admin}/traces`)).json() as unknown[]
  t.same(after, [], 'one DELETE ended it on every worker')
})

t.test('a killed worker is replaced; only its clients reconnect', async (t) => {
  const g = await group(t, { workers: 2 })
  const clients: MqttClient[] = []
  for (let i = 0; i < 6; i++) clients.push(await clientV(t, g.url, 4, { clientId: `kill-${i}`, reconnectPeriod: 0 }))
  const pids = [...new Set(g.proc.lines.filter((l) => l.msg === 'worker listening').map((l) => l.pid as number))]
  t.equal(pids.length, 2)
  const victim = pids[0] as number
  // Who is where, from the log: read before the kill (a killed process's unwritten lines are lost).
  await pollUntil('each connection logged', 10_000, () => g.proc.lines.filter((l) => l.msg === 'connection opened').length === 6 ? true : undefined)
  const victims = g.proc.lines.filter((l) => l.msg === 'connection opened' && l.pid === victim).length
  const closed: number[] = []
  clients.forEach((c, i) => c.once('close', () => { closed.push(i) }))
  process.kill(victim, 'SIGKILL')
  await g.proc.waitFor((l) => l.msg === 'worker replaced', 20_000)
  const died = g.proc.lines.find((l) => l.msg?.startsWith('worker died') === true)
  t.equal(died?.reason, 'SIGKILL', 'logged with its reason')
  t.equal(closed.length, victims, `exactly the killed worker's ${victims} clients were cut, no other`)
  const m = await metrics(g)
  t.equal(valueOf(m, 'mqtt_guard_worker_restarts_total', { reason: 'SIGKILL' }), 1, 'counted')
  t.equal(valueOf(m, 'mqtt_guard_workers', { state: 'serving' }), 2, 'two workers serve again')
  await clientV(t, g.url, 5, { clientId: 'after-kill' })
  t.pass('new clients are served')
})

t.test('a reload changes the worker count without disconnecting anyone', async (t) => {
  const g = await group(t, { workers: 2, reload: { oldWorkerMaxAgeMs: 60_000 } })
  const clients: MqttClient[] = []
  for (let i = 0; i < 6; i++) clients.push(await clientV(t, g.url, 5, { clientId: `rs-${i}`, reconnectPeriod: 0 }))
  let closed = 0
  for (const c of clients) c.once('close', () => { closed++ })
  await writeFile(g.file, JSON.stringify({ listen: '127.0.0.1:0', admin: '127.0.0.1:0', upstream: mosquitto.url, log: { level: 'info' }, workers: 3, reload: { oldWorkerMaxAgeMs: 60_000 } }))
  const up = await runToExit(['reload', '--admin', g.admin])
  t.equal(up.code, 0, up.stderr)
  t.match(up.stdout, /workers: 2 → 3/)
  await writeFile(g.file, JSON.stringify({ listen: '127.0.0.1:0', admin: '127.0.0.1:0', upstream: mosquitto.url, log: { level: 'info' }, workers: 1, reload: { oldWorkerMaxAgeMs: 60_000 } }))
  const down = await (await fetch(`${g.admin}/reload`, { method: 'POST' })).json() as { changed: Array<{ setting: string, what: string }> }
  t.match(down.changed.find((c) => c.setting === 'workers')?.what, /^3 → 1$/)
  const m = await metrics(g)
  t.equal(valueOf(m, 'mqtt_guard_workers', { state: 'serving' }), 1)
  t.ok((valueOf(m, 'mqtt_guard_workers', { state: 'retiring' }) ?? 0) >= 1, 'the retired ones still serve their clients')
  t.equal(valueOf(m, 'mqtt_guard_reloads_total', { result: 'applied' }), 2, 'two reloads counted once each, not once per worker')
  const topic = uniqueTopic('w/resize')
  for (const c of clients) await c.publishAsync(topic, 'still here', { qos: 1 })
  t.equal(closed, 0, 'no client was disconnected by either reload')
  for (let i = 0; i < 4; i++) await clientV(t, g.url, 4, { clientId: `rs-new-${i}` })
  t.pass('new clients are served by the remaining worker')
})
