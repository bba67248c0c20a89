// The quota plugin with `workers: 2` and no Redis, through `mqtt-guard start` in front of a real
// Mosquitto: the primary keeps the per-user counts (plugins/quota/primary.ts), so a user name's
// connections are counted across both workers (CONNACK 0x97 / 3 on either), freed at close and
// when a worker dies; and a user's messages per second are shared: two clients of one user on
// different workers, each under the limit alone, together over it, and one gets DISCONNECT 0x96.

import t, { type Test } from 'tap'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { IDisconnectPacket, MqttClient } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.js'
import { runCli, type CliLine, type CliProcess } from '../helpers/cli-process.js'
import { clientV, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { login, tempDir } from '../helpers/auth-clients.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

interface Group { proc: CliProcess, url: string }

async function group (t: Test, quota: Record<string, unknown>): Promise<Group> {
  const dir = await tempDir(t, 'mqtt-guard-quota-workers-')
  const file = path.join(dir, 'guard.json')
  await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', admin: '127.0.0.1:0', upstream: mosquitto.url, log: { level: 'info' }, workers: 2, plugins: [{ name: 'quota', ...quota }] }))
  const proc = runCli(['start', '--config', file])
  t.teardown(async () => { await proc.stop(15_000) })
  const port = await proc.listening(30_000)
  return { proc, url: `mqtt://127.0.0.1:${port}` }
}

/** The `connection opened` line of `clientId` (which worker and process hold it). */
async function opened (g: Group, clientId: string): Promise<CliLine> {
  return await g.proc.waitFor((l) => l.msg === 'connection opened' && l.clientId === clientId)
}

const REFUSED = 'quota exceeded: connections per user name'

/** The CONNACK code of one CONNECT of una (0: admitted, and the client ended at once). */
async function codeOf (t: Test, g: Group, version: 4 | 5, clientId: string): Promise<number | undefined> {
  const result = await login(t, g.url, version, { clientId, username: 'una' })
  if (result.ok) { result.client.end(true); return 0 }
  return result.code
}

t.test('connections per user name are counted across both workers; freed at close and when a worker dies', async (t) => {
  const g = await group(t, { perUser: { connections: 2 } })
  const first = await clientV(t, g.url, 5, { clientId: 'una-1', username: 'una' })
  const second = await clientV(t, g.url, 4, { clientId: 'una-2', username: 'una' })
  const held = [await opened(g, 'una-1'), await opened(g, 'una-2')]
  t.not(held[0]?.worker, held[1]?.worker, `round robin put the two on different workers: ${held.map((l) => String(l.worker)).join(', ')}`)
  // Each worker holds one connection of una: a third is refused only if the primary counts both.
  let refused = 0
  for (let i = 0; i < 4; i++) {
    const version = i % 2 === 0 ? 5 : 4
    const code = await codeOf(t, g, version, `una-x${i}`)
    t.equal(code, version === 5 ? 0x97 : 3, `try ${i + 1} (MQTT ${version}) refused`)
    if (code !== 0) refused++
  }
  // Each refusal's line (the log reaches this process after the CONNACK).
  await g.proc.waitFor(() => g.proc.lines.filter((l) => l.msg === REFUSED).length === refused)
  const refusing = new Set(g.proc.lines.filter((l) => l.msg === REFUSED).map((l) => l.worker))
  t.equal(refusing.size, 2, 'refused by both workers, from the one count the primary keeps')
  t.match(g.proc.lines.find((l) => l.msg === REFUSED), { plugin: 'quota', limit: 2, count: 2, alone: false })
  await clientV(t, g.url, 5, { clientId: 'amy-1', username: 'amy' })
  t.pass('another user name is not counted with una')

  // A close on one worker frees the place for a CONNECT on either.
  await first.endAsync()
  await g.proc.waitFor((l) => l.msg === 'connection closed' && l.clientId === 'una-1')
  await clientV(t, g.url, 5, { clientId: 'una-3', username: 'una' })
  const third = await opened(g, 'una-3')
  t.equal(await codeOf(t, g, 5, 'una-x4'), 0x97, 'full again')

  // A worker killed: nothing of it says goodbye, the primary frees what it held.
  const victim = held[1]?.pid as number
  const gone = new Promise<void>((resolve) => { second.once('close', () => { resolve() }) })
  process.kill(victim, 'SIGKILL')
  await gone
  await g.proc.waitFor((l) => l.msg === 'worker replaced', 20_000)
  const left = third.pid === victim ? 0 : 1
  const after: MqttClient[] = []
  for (let i = 0; i < 2 - left; i++) {
    const result = await login(t, g.url, 5, { clientId: `una-after-${i}`, username: 'una' })
    if (result.ok) after.push(result.client)
  }
  t.equal(after.length, 2 - left, `the dead worker's connections stopped counting (${left} of una's left on the other worker)`)
  t.equal(await codeOf(t, g, 5, 'una-x5'), 0x97, 'and the limit holds after')
})

/** Publishes QoS 0 every `everyMs` until `max` were sent or the client is closed; resolves with the DISCONNECT's code (undefined: none). */
async function pace (c: MqttClient, topic: string, everyMs: number, max: number): Promise<{ sent: number, code: number | undefined, closed: boolean }> {
  return await new Promise((resolve) => {
    let sent = 0
    let code: number | undefined
    c.on('disconnect', (p: IDisconnectPacket) => { code = p.reasonCode })
    const timer = setInterval(() => {
      if (sent >= max || !c.connected) {
        clearInterval(timer)
        resolve({ sent, code, closed: !c.connected })
        return
      }
      c.publish(topic, 'x', { qos: 0 })
      sent++
    }, everyMs)
  })
}

t.test('a user\'s messages per second are shared by its clients on both workers', async (t) => {
  // 10/s with a burst of 1 s: each client alone at 8/s stays under it for ever; together 16/s
  // drain the shared bucket at 6/s, empty after about 1.7 s (plus a sync).
  const g = await group(t, { perUser: { messagesPerSecond: 10, burstSeconds: 1 }, syncMs: 50 })
  const a = await clientV(t, g.url, 5, { clientId: 'vic-a', username: 'vic' })
  const b = await clientV(t, g.url, 5, { clientId: 'vic-b', username: 'vic' })
  const on = [await opened(g, 'vic-a'), await opened(g, 'vic-b')]
  t.not(on[0]?.worker, on[1]?.worker, `vic's two clients on different workers: ${on.map((l) => String(l.worker)).join(', ')}`)
  const topic = uniqueTopic('quota/workers')
  // 60 each at 8/s: 7.5 s, four times what the shared bucket lasts.
  const [ra, rb] = await Promise.all([pace(a, topic, 125, 60), pace(b, topic, 125, 60)])
  const ended = [ra, rb].filter((r) => r.closed)
  t.ok(ended.length >= 1, `one of them was disconnected (a: sent ${ra.sent}, b: sent ${rb.sent})`)
  t.ok(ended.every((r) => r.code === 0x96), 'with DISCONNECT 0x96 (message rate too high)')
  const line = await g.proc.waitFor((l) => l.msg === 'quota exceeded: disconnecting')
  t.match(line, { plugin: 'quota', kind: 'messages', scope: 'user', limit: 10 })
  t.ok(Math.min(ra.sent, rb.sent) < 60, 'before the clients were done')
})
