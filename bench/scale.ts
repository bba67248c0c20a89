// `npm run scale`: many idle clients held by one mqtt-guard instance with `workers: N` in front
// of several Mosquittos (issue 22's scale target). Starts the brokers and the proxy (each with
// its descriptor limit raised to the hard limit), opens C idle clients through the proxy from K
// generator processes (bench/scale-gen.ts) at a bounded rate, then reports:
//   - the open descriptors of every process (/proc/PID/fd), each to stay under the hard limit;
//   - proxy memory per connection: RSS of the primary and its workers after, minus before, / C
//     (and the V8 heap in use, summed over the workers from the admin endpoint's /metrics);
//   - the time until every client has its PINGRESP after a PINGREQ sent to all at once (the
//     slowest over all generators; the target is 2 s);
//   - the CPU the proxy and the brokers spent per connection while the clients connected.
// Then it closes everything, by PID. Bounded by --deadline (default: the connect time at the
// given rate plus 3 minutes); past it, it says which step it was in and exits 1.
//
//   node dist/bench/scale.js [--clients 30000] [--workers 4] [--generators 4] [--brokers 3]
//                            [--rate 1500] [--pings 3] [--deadline SECONDS] [--json FILE]

import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { readdirSync, writeFileSync } from 'node:fs'
import { mkdtemp, writeFile } from 'node:fs/promises'
import os, { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { canConnect, cleanupAll, pidAlive, startServer, type ServerHandle } from '../test/helpers/processes.js'
import { freePort } from '../test/helpers/ports.js'
import { clockTicksPerSecond, processTree, rssKiB, treeCpuTicks } from './proc.js'
import type { Command, ConnectReport, PingReport, StatusReport } from './scale-gen.js'
import { FD_WRAP, ROOT, startBenchMosquitto } from './targets.js'

const USAGE = `Usage: node dist/bench/scale.js [options]

  --clients C      idle clients to hold (default 30000)
  --workers N      mqtt-guard workers (default 4)
  --generators K   load-generator processes (default 4)
  --brokers B      Mosquittos behind the proxy, upstream.brokers (default 3)
  --rate R         CONNECTs per second, all generators together (default 1500)
  --keepalive S    the clients' keepalive in CONNECT, seconds (default 600)
  --max-per-worker M  limits.maxConnections (each worker's own): past it a worker refuses
                   with CONNACK 3 and the generator tries again (up to 20 times)
  --health-timeout MS  upstream.healthCheck.timeoutMs (default 5000, interval as long, failures 3; the
                   proxy's defaults, 1000 and 2, read a PINGREQ storm on a loaded machine as
                   every broker down, and the worker drops its clients)
  --pings P        rounds of "PINGREQ to every client at once" (default 3)
  --deadline S     give up after S seconds (default C / R + 180)
  --json FILE      also write the figures as JSON
`

function log (line: string): void {
  process.stderr.write(`[scale ${new Date().toISOString().slice(11, 23)}] ${line}\n`)
}

const openFds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length
const hardFdLimit = (): number => {
  const out = execFileSync('bash', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim()
  return out === 'unlimited' ? Infinity : Number(out)
}

// ---- a generator process ---------------------------------------------------------------------

class Generator {
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (r: unknown) => void, reject: (e: Error) => void }>()
  private exited = false

  private constructor (private readonly child: ChildProcess, readonly index: number) {
    child.on('message', (reply: { id: number, ok: boolean, result?: unknown, error?: string }) => {
      const waiter = this.pending.get(reply.id)
      this.pending.delete(reply.id)
      if (reply.ok) waiter?.resolve(reply.result)
      else waiter?.reject(new Error(`generator ${index}: ${reply.error ?? '?'}`))
    })
    child.once('exit', (code, signal) => {
      this.exited = true
      for (const w of this.pending.values()) w.reject(new Error(`generator ${index} exited (code ${code}, signal ${signal})`))
      this.pending.clear()
    })
  }

  static async start (index: number): Promise<Generator> {
    const child = spawn('bash', ['-c', FD_WRAP, process.execPath, join(ROOT, 'dist', 'bench', 'scale-gen.js')], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    await new Promise<void>((resolve, reject) => { child.once('spawn', resolve); child.once('error', reject) })
    return new Generator(child, index)
  }

  get pid (): number { return this.child.pid as number }

  async ask<T> (command: Command): Promise<T> {
    if (this.exited) throw new Error(`generator ${this.index} is not running`)
    const id = this.nextId++
    return await new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: unknown) => void, reject })
      this.child.send({ id, command })
    })
  }

  /** SIGTERM by PID, SIGKILL after 3 s. */
  async stop (): Promise<void> {
    if (this.exited) return
    const gone = new Promise<void>((resolve) => { this.child.once('exit', () => { resolve() }) })
    this.child.kill('SIGTERM')
    const timer = setTimeout(() => { if (!this.exited) this.child.kill('SIGKILL') }, 3000)
    await gone
    clearTimeout(timer)
  }
}

// ---- the proxy -------------------------------------------------------------------------------

interface Proxy { handle: ServerHandle, ports: number[], admin: string }

/** mqtt-guard from this checkout with `workers`, two listeners, the brokers as upstream.brokers. */
async function startProxy (workers: number, brokers: string[], maxPerWorker: number | undefined, healthTimeoutMs: number): Promise<Proxy> {
  const dir = await mkdtemp(join(tmpdir(), 'mqtt-guard-scale-'))
  const config = join(dir, 'config.yaml')
  let second = 0
  let admin = 0
  const handle = await startServer({
    name: 'mqtt-guard',
    command: 'bash',
    dir,
    logFile: join(dir, 'proxy.log'),
    startTimeoutMs: 30_000,
    argv: async (port) => {
      second = await freePort()
      admin = await freePort()
      // Two listeners: one destination takes at most the ~28 000 ephemeral ports of loopback.
      await writeFile(config, JSON.stringify({
        listen: [`127.0.0.1:${port}`, `127.0.0.1:${second}`],
        admin: `127.0.0.1:${admin}`,
        upstream: { brokers, balance: 'client-id', healthCheck: { intervalMs: Math.max(2000, healthTimeoutMs), timeoutMs: healthTimeoutMs, failures: healthTimeoutMs > 1000 ? 3 : 2 } },
        workers,
        log: { level: 'warn' },
        ...(maxPerWorker === undefined ? {} : { limits: { maxConnections: maxPerWorker } }),
        plugins: []
      }, null, 2) + '\n')
      return ['-c', FD_WRAP, process.execPath, join(ROOT, 'bin', 'mqtt-guard.js'), 'start', '--config', config]
    },
    probe: async (port, child) => {
      if (!child.running || !await canConnect(port) || !await canConnect(second)) return false
      const ready = await fetch(`http://127.0.0.1:${admin}/readyz`).then((r) => r.ok, () => false)
      return ready
    },
    url: (port) => `mqtt://127.0.0.1:${port}`
  })
  return { handle, ports: [handle.port, second], admin: `http://127.0.0.1:${admin}` }
}

/** One sample of the admin endpoint's /metrics (the workers' sum). */
async function metric (admin: string, name: string): Promise<number> {
  const text = await (await fetch(`${admin}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
  return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1))
}

// ---- the run ---------------------------------------------------------------------------------

interface Options { clients: number, workers: number, generators: number, brokers: number, rate: number, keepalive: number, maxPerWorker: number | undefined, healthTimeoutMs: number, pings: number, deadlineS: number, json: string | undefined }

function options (): Options {
  const { values } = parseArgs({
    options: {
      clients: { type: 'string' }, workers: { type: 'string' }, generators: { type: 'string' }, brokers: { type: 'string' },
      rate: { type: 'string' }, keepalive: { type: 'string' }, 'max-per-worker': { type: 'string' }, 'health-timeout': { type: 'string' }, pings: { type: 'string' }, deadline: { type: 'string' }, json: { type: 'string' }, help: { type: 'boolean', short: 'h' }
    },
    strict: true
  })
  if (values.help === true) { process.stdout.write(USAGE); process.exit(0) }
  const int = (v: string | undefined, d: number, min: number): number => {
    const n = v === undefined ? d : Number(v)
    if (!Number.isInteger(n) || n < min) throw new Error(`expected an integer >= ${min}, got ${String(v)}`)
    return n
  }
  const clients = int(values.clients, 30_000, 1)
  const rate = int(values.rate, 1500, 1)
  return {
    clients,
    workers: int(values.workers, 4, 1),
    generators: int(values.generators, 4, 1),
    brokers: int(values.brokers, 3, 1),
    rate,
    keepalive: int(values.keepalive, 600, 0),
    healthTimeoutMs: int(values['health-timeout'], 5000, 100),
    maxPerWorker: values['max-per-worker'] === undefined ? undefined : int(values['max-per-worker'], 0, 1),
    pings: int(values.pings, 3, 1),
    deadlineS: int(values.deadline, Math.ceil(clients / rate) + 180, 10),
    json: values.json
  }
}

interface Step { name: string }

async function main (): Promise<number> {
  const o = options()
  const limit = hardFdLimit()
  const step: Step = { name: 'starting' }
  const started: Array<{ stop: () => Promise<void> }> = []
  const generators: Generator[] = []
  const workerPids = new Set<number>()
  let finished = false
  let stopping: Promise<void> | undefined
  // Once, whoever asks first (the deadline, a signal, the end of the run): the others wait for it.
  const stopAll = async (): Promise<void> => { stopping ??= stopEverything(); await stopping }
  const stopEverything = async (): Promise<void> => {
    await Promise.all(generators.map(async (g) => { await g.stop() }))
    for (const s of started.reverse()) await s.stop().catch((err: unknown) => { log(`stop: ${String(err)}`) })
    started.length = 0
    // Workers outlive a primary that was SIGKILLed only until they see the channel close; a
    // straggler is ended here, by its PID.
    for (const pid of workerPids) if (pidAlive(pid)) { log(`worker ${pid} still running: SIGKILL`); process.kill(pid, 'SIGKILL') }
  }
  const deadline = setTimeout(() => {
    if (finished) return
    log(`FAIL: deadline of ${o.deadlineS} s passed during "${step.name}": stopping everything`)
    process.exitCode = 1
    stopAll().finally(() => { process.exit(1) })
  }, o.deadlineS * 1000)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.removeAllListeners(signal)
    process.once(signal, () => { log(`${signal}: stopping everything`); process.exitCode = 130; stopAll().finally(() => { process.exit(130) }) })
  }

  log(`${o.clients} clients, workers ${o.workers}, ${o.brokers} brokers, ${o.generators} generators, ${o.rate} CONNECT/s, keepalive ${o.keepalive} s${o.maxPerWorker === undefined ? '' : `, limits.maxConnections ${o.maxPerWorker}`}, health check timeout ${o.healthTimeoutMs} ms; descriptor hard limit ${limit}; load ${os.loadavg().map((v) => v.toFixed(2)).join(' ')}`)
  const perWorker = Math.ceil(o.clients / o.workers)
  if (2 * perWorker >= limit) log(`note: ${perWorker} clients per worker need ${2 * perWorker} descriptors (client + broker side), over the limit of ${limit}: expect refusals`)
  const clkTck = clockTicksPerSecond()
  try {
    step.name = 'starting the brokers'
    const brokers: ServerHandle[] = []
    for (let i = 0; i < o.brokers; i++) { const b = await startBenchMosquitto(); started.push(b); brokers.push(b) }
    step.name = 'starting mqtt-guard'
    const proxy = await startProxy(o.workers, brokers.map((b) => `mqtt://127.0.0.1:${b.port}`), o.maxPerWorker, o.healthTimeoutMs)
    // A primary drains its workers on SIGTERM (limits.drainTimeoutMs): give it 20 s before
    // the handle's own stop (SIGKILL after 5 s) runs.
    started.push({
      stop: async () => {
        proxy.handle.kill('SIGTERM')
        await Promise.race([proxy.handle.exited(), new Promise((resolve) => setTimeout(resolve, 20_000))])
        await proxy.handle.stop()
      }
    })
    const primary = proxy.handle.pid
    const tree = (): number[] => processTree(primary)
    for (const pid of tree()) if (pid !== primary) workerPids.add(pid)
    log(`mqtt-guard primary ${primary}, workers ${[...workerPids].join(' ')}; listeners ${proxy.ports.join(', ')}; brokers ${brokers.map((b) => `${b.pid}:${b.port}`).join(' ')}`)
    for (let k = 0; k < o.generators; k++) generators.push(await Generator.start(k + 1))

    step.name = 'settling before the baseline'
    await new Promise((resolve) => setTimeout(resolve, 3000))
    const rssOf = (pids: number[]): number => pids.reduce((s, p) => s + rssKiB(p), 0)
    const fdsBefore = new Map(tree().map((pid) => [pid, openFds(pid)]))
    const rssBefore = rssOf(tree())
    const heapBefore = await metric(proxy.admin, 'nodejs_heap_size_used_bytes')
    const watch = { proxy: primary, ...Object.fromEntries(brokers.map((b, i) => [`broker${i + 1}`, b.pid])) }
    const cpuBefore = treeCpuTicks(watch)

    step.name = 'connecting the clients'
    const t0 = Date.now()
    const share = (k: number): { first: number, count: number } => {
      const base = Math.floor(o.clients / o.generators)
      const extra = o.clients % o.generators
      return { first: k * base + Math.min(k, extra), count: base + (k < extra ? 1 : 0) }
    }
    const tag = `s${process.pid}`
    const connectTimeoutMs = Math.max(10, o.deadlineS - 90) * 1000
    const reports = await Promise.all(generators.map(async (g, k) => await g.ask<ConnectReport>({
      cmd: 'connect', ports: proxy.ports, tag, ...share(k), ratePerSecond: o.rate / o.generators, concurrency: 64, keepaliveSeconds: o.keepalive, timeoutMs: connectTimeoutMs, retries: o.maxPerWorker === undefined ? 0 : 20
    })))
    const connectSeconds = (Date.now() - t0) / 1000
    const cpuAfter = treeCpuTicks(watch)
    const opened = reports.reduce((s, r) => s + r.opened, 0)
    const failed = reports.reduce((s, r) => s + r.failed, 0)
    const unanswered = reports.reduce((s, r) => s + r.unanswered, 0)
    const retried = reports.reduce((s, r) => s + r.retried, 0)
    log(`connected ${opened}/${o.clients} in ${connectSeconds.toFixed(1)} s (${failed} failed, ${unanswered} unanswered, ${retried} refusals retried${failed + unanswered > 0 ? `: ${reports.find((r) => r.firstError !== undefined)?.firstError ?? ''}` : ''})`)
    const cpuPerConn = Object.fromEntries(Object.keys(watch).map((role) => [role, ((cpuAfter[role] ?? 0) - (cpuBefore[role] ?? 0)) / clkTck * 1e6 / Math.max(1, opened)]))

    step.name = 'holding'
    await new Promise((resolve) => setTimeout(resolve, 3000))
    const pids = tree()
    const rssAfter = rssOf(pids)
    const heapAfter = await metric(proxy.admin, 'nodejs_heap_size_used_bytes')
    const fds: Array<{ process: string, pid: number, fds: number, rssMiB: number }> = []
    for (const pid of pids) {
      const now = openFds(pid)
      // A worker holds two descriptors per client (client and broker side) over its own baseline.
      const clients = pid === primary ? '' : ` (~${Math.round((now - (fdsBefore.get(pid) ?? 0)) / 2)} clients)`
      fds.push({ process: pid === primary ? 'mqtt-guard primary' : `mqtt-guard worker${clients}`, pid, fds: now, rssMiB: rssKiB(pid) / 1024 })
    }
    brokers.forEach((b, i) => { fds.push({ process: `mosquitto ${i + 1}`, pid: b.pid, fds: openFds(b.pid), rssMiB: rssKiB(b.pid) / 1024 }) })
    generators.forEach((g) => { fds.push({ process: `generator ${g.index}`, pid: g.pid, fds: openFds(g.pid), rssMiB: rssKiB(g.pid) / 1024 }) })

    const pingRounds: Array<{ answered: number, sent: number, maxMs: number, p50Ms: number, p99Ms: number, cpuSeconds: Record<string, number> }> = []
    const pingWatch = { ...watch, ...Object.fromEntries(generators.map((g) => [`generator${g.index}`, g.pid])) }
    for (let p = 1; p <= o.pings; p++) {
      step.name = `PINGREQ round ${p}`
      const before = treeCpuTicks(pingWatch)
      const rs = await Promise.all(generators.map(async (g) => await g.ask<PingReport>({ cmd: 'ping', timeoutMs: 10_000 })))
      const after = treeCpuTicks(pingWatch)
      // What one round cost every process: on n cores it cannot take less than the sum / n.
      const cpuSeconds = Object.fromEntries(Object.keys(pingWatch).map((role) => [role, ((after[role] ?? 0) - (before[role] ?? 0)) / clkTck]))
      const round = {
        sent: rs.reduce((s, r) => s + r.sent, 0),
        answered: rs.reduce((s, r) => s + r.answered, 0),
        maxMs: Math.max(...rs.map((r) => r.maxMs)),
        p50Ms: Math.max(...rs.map((r) => r.p50Ms)),
        p99Ms: Math.max(...rs.map((r) => r.p99Ms)),
        cpuSeconds
      }
      pingRounds.push(round)
      log(`PINGREQ round ${p}: ${round.answered}/${round.sent} PINGRESP, slowest ${round.maxMs.toFixed(0)} ms (worst generator's p50 ${round.p50Ms.toFixed(0)}, p99 ${round.p99Ms.toFixed(0)} ms); CPU s ${Object.entries(cpuSeconds).map(([r, v]) => `${r} ${v.toFixed(2)}`).join(', ')}`)
      await new Promise((resolve) => setTimeout(resolve, 1000))
    }
    // Again after the pings and a quiet spell: V8 collects the connect phase's garbage late.
    step.name = 'holding (second memory reading)'
    await new Promise((resolve) => setTimeout(resolve, 10_000))
    const rssLater = rssOf(tree())
    const heapLater = await metric(proxy.admin, 'nodejs_heap_size_used_bytes')
    log(`memory 10 s after the pings: RSS ${(rssLater / 1024).toFixed(0)} MiB (${((rssLater - rssBefore) / Math.max(1, opened)).toFixed(2)} KiB/conn), heap ${(heapLater / 2 ** 20).toFixed(0)} MiB (${((heapLater - heapBefore) / 1024 / Math.max(1, opened)).toFixed(2)} KiB/conn)`)
    const status = await Promise.all(generators.map(async (g) => await g.ask<StatusReport>({ cmd: 'status' })))
    const lost = status.reduce((s, r) => s + r.closedAfterConnack, 0)
    const errors = proxy.handle.log().split('\n').filter((l) => /"level":(40|50|60)|EMFILE|Error/.test(l))

    const result = {
      when: new Date().toISOString(),
      options: o,
      descriptorHardLimit: limit,
      loadAverage: os.loadavg().map((v) => Math.round(v * 100) / 100),
      opened,
      failed,
      unanswered,
      retried,
      lostAfterConnack: lost,
      connectSeconds,
      connectRate: opened / connectSeconds,
      cpuUsPerConnection: cpuPerConn,
      proxyRssKiB: { before: rssBefore, after: rssAfter, perConnection: (rssAfter - rssBefore) / Math.max(1, opened), later: rssLater, perConnectionLater: (rssLater - rssBefore) / Math.max(1, opened) },
      proxyHeapUsedBytes: { before: heapBefore, after: heapAfter, perConnection: (heapAfter - heapBefore) / Math.max(1, opened), later: heapLater, perConnectionLater: (heapLater - heapBefore) / Math.max(1, opened) },
      processes: fds,
      maxFds: Math.max(...fds.map((f) => f.fds)),
      pings: pingRounds,
      proxyErrorLines: errors.length,
      firstProxyErrors: errors.slice(0, 3)
    }
    const pass = {
      allConnected: opened === o.clients && lost === 0,
      descriptors: result.maxFds < limit,
      memory: Math.min(result.proxyRssKiB.perConnection, result.proxyRssKiB.perConnectionLater) <= 6,
      ping: pingRounds.every((r) => r.answered === o.clients && r.maxMs <= 2000)
    }
    const lines = [
      `clients ${opened}/${o.clients} connected (${failed} refused or failed, ${unanswered} unanswered, ${lost} closed after CONNACK, ${retried} refusals retried) in ${connectSeconds.toFixed(1)} s, ${result.connectRate.toFixed(0)}/s ${pass.allConnected ? '✅' : '❌'}`,
      `CPU per connection while connecting: ${Object.entries(cpuPerConn).map(([r, v]) => `${r} ${v.toFixed(0)} µs`).join(', ')}`,
      `proxy RSS (primary + ${pids.length - 1} workers): ${(rssBefore / 1024).toFixed(0)} → ${(rssAfter / 1024).toFixed(0)} MiB = ${result.proxyRssKiB.perConnection.toFixed(2)} KiB per connection, ${result.proxyRssKiB.perConnectionLater.toFixed(2)} after the pings and 10 s more (≤ 6) ${pass.memory ? '✅' : '❌'}; V8 heap used ${(heapBefore / 2 ** 20).toFixed(0)} → ${(heapAfter / 2 ** 20).toFixed(0)} → ${(heapLater / 2 ** 20).toFixed(0)} MiB = ${(result.proxyHeapUsedBytes.perConnection / 1024).toFixed(2)}, later ${(result.proxyHeapUsedBytes.perConnectionLater / 1024).toFixed(2)} KiB per connection`,
      `descriptors (limit ${limit}): ${fds.map((f) => `${f.process} ${f.fds}`).join(', ')}; max ${result.maxFds} ${pass.descriptors ? '✅' : '❌'}`,
      `PINGREQ to all at once, slowest PINGRESP per round: ${pingRounds.map((r) => `${r.maxMs.toFixed(0)} ms (${r.answered}/${r.sent}; CPU ${Object.values(r.cpuSeconds).reduce((a, b) => a + b, 0).toFixed(2)} s in all)`).join(', ')} (≤ 2000 ms, all answered) ${pass.ping ? '✅' : '❌'}`,
      `proxy error lines: ${errors.length}${errors.length > 0 ? ` (first: ${errors[0]?.slice(0, 300) ?? ''})` : ''}`
    ]
    process.stdout.write(lines.join('\n') + '\n')
    if (o.json !== undefined) writeFileSync(o.json, JSON.stringify({ ...result, pass }, null, 2) + '\n')

    step.name = 'closing the clients'
    await Promise.all(generators.map(async (g) => await g.ask<number>({ cmd: 'close' })))
    return Object.values(pass).every(Boolean) ? 0 : 2
  } finally {
    step.name = 'stopping'
    await stopAll()
    finished = true
    clearTimeout(deadline)
  }
}

main().then((code) => { process.exitCode = code }, async (err: unknown) => {
  if (process.exitCode !== undefined) return
  process.stderr.write(`scale: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  await cleanupAll().catch(() => {})
  process.exitCode = 1
})

