// client-id's flapping ban with `workers: 2` and no Redis, through `mqtt-guard start` in front of
// a real Mosquitto: the primary keeps the counters (plugins/client-id/primary-store.ts), so the
// connects of one client ID add up over both workers; the connect that goes over maxConnects is
// refused (3.1.1: CONNACK 5, MQTT 5: 0x8A) on whichever worker it lands, later ones on either
// worker until the ban ends, and the ban is logged once with its evidence. The control: two
// client IDs, each at its limit on both workers, are not banned (counts are per ID).

import t, { type Test } from 'tap'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { startMosquitto } from '../helpers/mosquitto.js'
import { runCli, type CliLine, type CliProcess } from '../helpers/cli-process.js'
import { login, tempDir } from '../helpers/auth-clients.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

const WINDOW_MS = 60_000
// Long enough for the refusals below to happen inside the ban on a loaded 2-core machine.
const BAN_MS = 5000
const FLAPPING = 'client-id: flapping, banned'

interface Group { proc: CliProcess, url: string }

async function group (t: Test, maxConnects: number): Promise<Group> {
  const dir = await tempDir(t, 'mqtt-guard-workers-flapping-')
  const file = path.join(dir, 'guard.json')
  const clientId = { name: 'client-id', flapping: { maxConnects, windowMs: WINDOW_MS, banMs: BAN_MS } }
  await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', admin: '127.0.0.1:0', upstream: mosquitto.url, log: { level: 'info' }, workers: 2, plugins: [clientId] }))
  const proc = runCli(['start', '--config', file])
  t.teardown(async () => { await proc.stop(15_000) })
  const port = await proc.listening(30_000)
  return { proc, url: `mqtt://127.0.0.1:${port}` }
}

interface Attempt { code: number | undefined, worker: unknown, closed: CliLine }

const closedLines = (g: Group, clientId: string): CliLine[] => g.proc.lines.filter((l) => l.msg === 'connection closed' && l.clientId === clientId)

/**
 * One CONNECT of `clientId`: admitted (code 0), then a clean DISCONNECT; or refused. Resolves
 * once the proxy logged the connection's end, with the worker that logged it. Attempts are one
 * at a time, so the n-th end of this ID is this attempt's.
 */
async function attempt (t: Test, g: Group, version: 4 | 5, clientId: string): Promise<Attempt> {
  const before = closedLines(g, clientId).length
  const result = await login(t, g.url, version, { clientId })
  if (result.ok) await result.client.endAsync()
  await g.proc.waitFor(() => closedLines(g, clientId).length > before)
  const closed = closedLines(g, clientId)[before] as CliLine
  return { code: result.ok ? 0 : result.code, worker: closed.worker, closed }
}

let barriers = 0

/**
 * Returns once the primary has handled what `worker` sent it so far (the end of its last
 * connection, sent over IPC after its `connection closed` line): a connect of another client ID
 * admitted by that worker was asked of the primary after it, on the same ordered channel.
 * Round robin brings a connect to that worker within two.
 */
async function settled (t: Test, g: Group, worker: unknown): Promise<void> {
  for (let i = 0; i < 4; i++) {
    const a = await attempt(t, g, 5, `barrier-${++barriers}`)
    if (a.code === 0 && a.worker === worker) return
  }
  t.fail(`no connect reached worker ${String(worker)} in 4 tries`)
}

// The connect over the limit is steered to worker 1 in one case, worker 2 in the other.
for (const [version, maxConnects, overOn] of [[4, 4, 1], [5, 3, 2]] as const) {
  const banned = version === 5 ? 0x8a : 5
  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: one client ID's connects on both workers add up to one ban, refused on worker ${overOn}`, async (t) => {
    const g = await group(t, maxConnects)
    const id = `flap-v${version}`
    const admitted: unknown[] = []
    for (let i = 0; i < maxConnects; i++) {
      const a = await attempt(t, g, version, id)
      t.equal(a.code, 0, `connect ${i + 1} of ${maxConnects} admitted (worker ${String(a.worker)})`)
      admitted.push(a.worker)
    }
    t.equal(new Set(admitted).size, 2, `the admitted connects landed on both workers: ${admitted.join(', ')}`)
    // So that the evidence below holds every end: the last one may still be on its way.
    const last = admitted.at(-1)
    await settled(t, g, last)
    // Round robin alternates: the next connect goes to the other worker than the last one.
    if (last === overOn) await settled(t, g, overOn === 1 ? 2 : 1)

    const over = await attempt(t, g, version, id)
    t.equal(over.code, banned, `connect ${maxConnects + 1} is refused (${banned}) on worker ${String(over.worker)}: the count was over both workers`)
    t.equal(over.worker, overOn, 'round robin brought it to the worker chosen')
    t.equal(over.closed.reason, 'GUARD_ERR_BANNED')
    const bans = g.proc.lines.filter((l) => l.msg === FLAPPING)
    t.equal(bans.length, 1, 'the ban is logged')
    const ban = bans[0] as CliLine & { until: string, ends: Array<{ why: string, count: number }> } | undefined
    if (ban === undefined) return
    t.equal(ban.worker, over.worker, 'by the worker that refused the connect over the limit')
    t.match(ban, { plugin: 'client-id', clientId: id, key: `id:${id}`, connects: maxConnects + 1, windowMs: WINDOW_MS, banMs: BAN_MS, addresses: ['127.0.0.1'] }, 'with the evidence')
    // Each admitted connect ended, and the primary had its end, before the next one began.
    t.same(ban.ends.map((e) => e.why.replace(/ after \d+ s$/, '')), ['clean DISCONNECT from the client'], `the ends in the evidence: ${JSON.stringify(ban.ends)}`)
    t.equal(ban.ends.reduce((n, e) => n + e.count, 0), maxConnects, 'one end per admitted connect, from both workers')
    const until = Date.parse(ban.until)

    // Later connects are refused on either worker until the ban ends (at most 6 tries to see both).
    const refusing = new Set<unknown>()
    for (let i = 0; i < 6 && refusing.size < 2; i++) {
      const a = await attempt(t, g, version, id)
      t.ok(Date.now() < until, 'still within the ban')
      t.equal(a.code, banned, `a later connect is refused (${banned}) on worker ${String(a.worker)}`)
      refusing.add(a.worker)
    }
    t.equal(refusing.size, 2, 'refused by both workers')
    t.equal(g.proc.lines.filter((l) => l.msg === FLAPPING).length, 1, 'the ban is logged once, not per refusal')

    // The ban's end is a time, not an event: wait for it, then each worker admits the ID again.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, until - Date.now())))
    const admitting = new Set<unknown>()
    for (let i = 0; i < maxConnects && admitting.size < 2; i++) {
      const a = await attempt(t, g, version, id)
      t.equal(a.code, 0, `admitted again after the ban (worker ${String(a.worker)})`)
      admitting.add(a.worker)
    }
    t.equal(admitting.size, 2, 'on both workers')
  })
}

t.test('control: two client IDs, each at its limit on both workers (more connects than a ban took), are not banned', async (t) => {
  const maxConnects = 3
  const g = await group(t, maxConnects)
  // One ID after the other: round robin spreads each one's connects over both workers.
  for (const [id, version] of [['ctl-a', 5], ['ctl-b', 4]] as const) {
    const workers = new Set<unknown>()
    for (let i = 0; i < maxConnects; i++) {
      const a = await attempt(t, g, version, id)
      t.equal(a.code, 0, `${id} connect ${i + 1} (MQTT ${version === 5 ? '5' : '3.1.1'}) admitted (worker ${String(a.worker)})`)
      workers.add(a.worker)
    }
    t.equal(workers.size, 2, `${id}'s connects reached both workers`)
  }
  t.equal(g.proc.lines.filter((l) => l.msg === FLAPPING).length, 0, 'no ban logged')
})
