// The admin endpoint cannot take the proxy down (issue 18, points 1 and 2), each against a proxy
// in its own process, so its memory and its descriptors are its own: a hundred live-trace
// viewers that never read, with a client publishing as fast as the trace keeps up, and two
// thousand admin sockets that never finish their headers on a proxy limited to 1 024
// descriptors. Through both, an MQTT client keeps its traffic and /healthz answers.

import t, { type Test } from 'tap'
import net from 'node:net'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { startGuard } from '../helpers/guard-process.js'
import { BIN, CliProcess } from '../helpers/cli-process.js'
import { clientV, nextMessage } from '../helpers/e2e-mqtt.js'
import { RawMqttClient } from '../helpers/raw-client.js'
import mqttPacket from 'mqtt-packet'
import { pollUntil } from '../helpers/processes.js'
import { parseExposition, valueOf } from '../helpers/metrics-scrape.js'
import { descriptorLimit } from '../../src/admin/sockets.js'

const MiB = 1024 * 1024

/** A proc's memory line from /proc/PID/status, in bytes: VmRSS now, VmHWM its peak. */
function memory (pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? NaN) * 1024
}

async function scrape (admin: string): Promise<ReturnType<typeof parseExposition>> {
  return parseExposition(await (await fetch(`${admin}/metrics`)).text())
}

// Viewers that never read, with a receive buffer of 4 KiB (SO_RCVBUF; Node.js cannot set it),
// so what they do not read stays in the proxy and not in this machine's socket buffers.
// A line on stdin: read the first viewer until the proxy's `dropped` event, and say so.
const SLOW_VIEWERS = `
import socket, sys
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
held = []
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(('127.0.0.1', port))
    s.sendall(('GET %s HTTP/1.1\\r\\nHost: 127.0.0.1:%d\\r\\n\\r\\n' % (path, port)).encode())
    held.append(s)
print('open', flush=True)
sys.stdin.readline()
seen = b''
while b'event: dropped' not in seen:
    chunk = held[0].recv(65536)
    if not chunk: break
    seen = seen[-64:] + chunk
print('dropped-event' if b'event: dropped' in seen else 'closed', flush=True)
sys.stdin.read()
`

async function slowViewers (t: Test, port: number, n: number, urlPath: string): Promise<{ readFirst: () => Promise<string> }> {
  const child = spawn('python3', ['-c', SLOW_VIEWERS, String(port), String(n), urlPath], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => { if (child.exitCode === null) child.kill() })
  let out = ''
  const said = async (word: string): Promise<string> => await new Promise((resolve, reject) => {
    const look = (): void => { if (out.includes(word)) resolve(out) }
    child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString(); look() })
    child.once('exit', (code) => { reject(new Error(`slow viewers exited ${String(code)}: ${out}`)) })
    look()
  })
  await said('open')
  return {
    readFirst: async () => {
      child.stdin.write('read\n')
      return await said('-event\n').catch(async () => await said('closed'))
    }
  }
}

// python3 (for SO_RCVBUF) and prlimit come from test/setup/system-packages.sh, like every tool.
t.test('100 live-trace viewers that never read: memory stays within budget, a canary keeps its traffic', async (t) => {
  const g = await startGuard(t, {
    upstream: 'embedded',
    admin: { listen: '127.0.0.1:0', maxConnections: 128, maxViewers: 110, maxViewersPerStream: 110 },
    plugins: [{ name: 'trace', enabled: false, destination: '/dev/null', rotateBytes: 0, payload: 'hex', maxPayloadBytes: 1024, maxLinesPerSecond: 100_000 }]
  })
  const pid = g.proc.child.pid as number
  const adminPort = await g.proc.adminPort()
  const admin = `http://127.0.0.1:${adminPort}`
  const started = await fetch(`${admin}/traces`, { method: 'POST', body: JSON.stringify({ filters: { clientId: 'firehose' }, for: '5m' }) })
  t.equal(started.status, 201, 'trace started')
  const { id } = await started.json() as { id: string }
  const canary = await clientV(t, g.url, 5, { clientId: 'canary' })
  await canary.subscribeAsync('canary/t', { qos: 1 })
  const firehose = await RawMqttClient.connected(g.port, 4, 'firehose', false)
  t.teardown(() => { firehose.socket.destroy() })
  const publish = mqttPacket.generate({ cmd: 'publish', topic: 'firehose/t', payload: Buffer.alloc(1024, 0x61), qos: 0, dup: false, retain: false })
  const batch = Buffer.concat(Array.from({ length: 20 }, () => publish))
  let sent = 0
  // About 2 000 PUBLISH a second, 4 000 trace lines of ~4 KiB: 16 MiB/s to each viewer; no
  // more than the proxy reads.
  const fire = setInterval(() => {
    if (firehose.socket.writableNeedDrain) return
    firehose.send(batch)
    sent += 20
  }, 10)
  t.teardown(() => { clearInterval(fire) })
  await sleep(2000) // warm up: the baseline is a proxy already tracing at full rate
  const baseline = memory(pid, 'VmRSS')
  const viewers = await slowViewers(t, adminPort, 100, `/traces/${id}/live`)
  let received = 0
  const sentBefore = sent
  const rss: number[] = []
  for (let second = 0; second < 20; second++) {
    const got = nextMessage(canary, 'canary/t', 5000)
    await canary.publishAsync('canary/t', `beat ${second}`, { qos: 1 })
    t.equal((await got).payload, `beat ${second}`, `canary message ${second}`)
    received++
    await sleep(1000)
    rss.push(memory(pid, 'VmRSS'))
  }
  clearInterval(fire)
  t.ok(sent - sentBefore > 20 * 500, `the traced client published ${sent - sentBefore} messages in the 20 s`)
  const peak = memory(pid, 'VmHWM')
  t.equal(received, 20, 'the canary got every message')
  // A guard against unbounded growth (the build before issue 18 grew by about 16 MiB a second
  // per viewer and died in 3 s), not a tight fit: the peak (VmHWM) moves with when V8 collects
  // (67-133 MiB over the baseline on 2026-12-06, 161 on a faster VM on 2026-12-07, same code).
  // So two checks: a generous ceiling, and no growth from the first ten seconds to the last ten
  // (bounded buffers level off; a leak of 16 MiB a second per viewer would not).
  t.ok(peak - baseline < 256 * MiB, `peak memory ${Math.round(peak / MiB)} MiB, ${Math.round((peak - baseline) / MiB)} MiB over the ${Math.round(baseline / MiB)} MiB baseline (ceiling 256 MiB; the viewers' buffers are 25 MiB)`)
  const first = Math.max(...rss.slice(0, 10))
  const last = Math.max(...rss.slice(10))
  t.ok(last - first < 64 * MiB, `levelled off: at most ${Math.round(first / MiB)} MiB in the first 10 s, ${Math.round(last / MiB)} MiB in the last 10 s (growth under 64 MiB)`)
  const m = await scrape(admin)
  t.ok((valueOf(m, 'mqtt_guard_admin_stream_dropped_total', { stream: 'trace' }) ?? 0) > 0, 'lines dropped for the viewers, counted')
  t.equal(valueOf(m, 'mqtt_guard_admin_viewers', { stream: 'trace' }), 100, 'all 100 viewers still open (none stalled 30 s)')
  t.match(await viewers.readFirst(), /dropped-event/, 'a viewer that reads again is told how many lines it missed')
})

/** `mqtt-guard start` under `ulimit -n` = `nofile`. */
async function limitedGuard (t: Test, nofile: number): Promise<CliProcess> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-fds-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = path.join(dir, 'config.json')
  await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', upstream: 'embedded', admin: '127.0.0.1:0', log: { level: 'info' } }))
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MQTT_GUARD_')))
  const proc = new CliProcess(spawn('prlimit', [`--nofile=${nofile}:${nofile}`, '--', process.execPath, BIN, 'start', '--config', file], { env, stdio: ['ignore', 'pipe', 'pipe'] }))
  t.teardown(async () => { await proc.stop() })
  return proc
}

const nofile = descriptorLimit() ?? 0
t.test('2 000 half-open admin sockets on a proxy with 1 024 descriptors: MQTT and /healthz keep working', { skip: nofile >= 4500 ? false : `needs ulimit -n >= 4500 in the test (have ${nofile}; .ci/run sets 20000)` }, async (t) => {
  const proc = await limitedGuard(t, 1024)
  const mqttPort = await proc.listening()
  const admin = `http://127.0.0.1:${await proc.adminPort()}`
  const adminPort = Number(new URL(admin).port)
  const sockets: net.Socket[] = []
  t.teardown(() => { for (const s of sockets) s.destroy() })
  for (let i = 0; i < 2000; i++) {
    const s = net.connect(adminPort, '127.0.0.1', () => { s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n') }) // no blank line: never finished
    s.on('error', () => {})
    sockets.push(s)
  }
  // Each one connected (and was held, or closed by the proxy to make room) or failed.
  await Promise.all(sockets.map(async (s) => { if (s.connecting) await Promise.race([once(s, 'connect'), once(s, 'close')]) }))
  const c = await clientV(t, `mqtt://127.0.0.1:${mqttPort}`, 5, { clientId: 'after-the-flood' })
  await c.subscribeAsync('fds/t', { qos: 1 })
  const got = nextMessage(c, 'fds/t')
  await c.publishAsync('fds/t', 'still here', { qos: 1 })
  t.equal((await got).payload, 'still here', 'an MQTT client connects and gets its message')
  const health = await fetch(`${admin}/healthz`, { signal: AbortSignal.timeout(3000) })
  t.equal(health.status, 200, '/healthz answers at once')
  const m = await scrape(admin)
  const closed = valueOf(m, 'mqtt_guard_admin_refusals_total', { reason: 'idle_closed' }) ?? 0
  // Not all 2 000 need be counted yet: some may still wait in the listen backlog.
  t.ok(closed >= 1500, `${closed} unfinished sockets closed to make room (admin.maxConnections 64)`)
  t.ok((valueOf(m, 'mqtt_guard_admin_connections') ?? 99) <= 64, 'never more than admin.maxConnections open')
  const logged = proc.lines.filter((l) => l.msg === 'admin requests refused')
  t.ok(logged.length >= 1 && logged.length <= 2, `refusals logged, at a bounded rate (${logged.length} lines)`)
  // Half-open sockets that stay are cut by headersTimeout (5 s). While the flood's sockets
  // still fill the admin side, a scrape may itself be one it closes to make room: ask again.
  await pollUntil('the held sockets timed out', 15_000, async () => {
    const m = await scrape(admin).catch(() => undefined)
    return m !== undefined && (valueOf(m, 'mqtt_guard_admin_refusals_total', { reason: 'timeout' }) ?? 0) > 0 ? true : undefined
  })
  t.pass('unfinished requests time out')
})

t.test('a descriptor limit too low for the reserve is named at start', async (t) => {
  const proc = await limitedGuard(t, 300)
  const line = await proc.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('ulimit -n is low'))
  t.match(line, { level: 40, ulimit: 300, reserveDescriptors: 256, maxConnections: 64 })
  await proc.listening()
})
