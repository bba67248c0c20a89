// `npm run bench`: every scenario against every target, several rounds, in one run.
// Targets: Mosquitto direct, a bare TCP relay, mqtt-guard (one row per PROXY_VARIANTS entry)
// and aedes alone, each in its own process and started fresh per round; the load generator is
// one more process (bench/loadgen.ts), driven over IPC. Prints markdown tables (stdout),
// progress (stderr), and writes the figures as JSON under bench/results/.
//
//   node dist/bench/run.js [--quick] [--rounds N] [--only relay,proxy] [--out DIR]
//   node dist/bench/run.js --profile [--quick] [--only proxy]

import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { cleanupAll } from '../test/helpers/processes.js'
import type { FixedRateResult, IdleResult, Job, JobResult, Reply, Watched } from './jobs.js'
import { clockTicksPerSecond, machineInfo } from './proc.js'
import { buildTables, goalLines, renderTable, tableDefs, type Store, type TargetInfo } from './report.js'
import { allTargets, FD_WRAP, MOSQUITTO, ROOT, snapshotProxyBuild, startTarget, type Baseline, type ProxyBuild, type RunningTarget, type TargetDef } from './targets.js'
import { renderSummary, summariseFile, type Summary } from './profile-summary.js'

const SETTINGS = {
  full: {
    rounds: 3,
    throughput: { pairs: 10, window: 64, endToEnd: { 0: 256, 1: 1024 }, warmupMs: 700, durationMs: 2500 },
    latency: { payloadBytes: 64, warmup: 300, samples: 3000, maxMs: 15_000 },
    fixedRate: { rate: 10_000, pairs: 10, window: 64, payloadBytes: 64, warmupMs: 1000, durationMs: 8000, profileMs: 15_000 },
    idle: { connections: 9900, concurrency: 100, holdMs: 1000, timeoutMs: 120_000 }
  },
  quick: {
    rounds: 1,
    throughput: { pairs: 10, window: 64, endToEnd: { 0: 256, 1: 1024 }, warmupMs: 100, durationMs: 300 },
    latency: { payloadBytes: 64, warmup: 50, samples: 300, maxMs: 3000 },
    fixedRate: { rate: 10_000, pairs: 10, window: 64, payloadBytes: 64, warmupMs: 200, durationMs: 600, profileMs: 3000 },
    idle: { connections: 300, concurrency: 50, holdMs: 200, timeoutMs: 20_000 }
  }
}

type Settings = typeof SETTINGS.full

const USAGE = `Usage: node dist/bench/run.js [options]

  --quick          1 round, short durations, 300 idle connections (a smoke run, ~30 s)
  --rounds N       rounds (default 3; --quick 1)
  --only IDS       comma-separated target ids (${allTargets().map((t) => t.id).join(', ')})
  --scenarios IDS  comma-separated scenario ids (${scenarios(SETTINGS.quick).map((s) => s.id).join(', ')});
                   default all
  --out DIR        where the JSON goes (default bench/results)
  --baseline DIR   also run the proxy without plugins from DIR, another built checkout
                   (e.g. a git worktree of an older commit after npm run build): the
                   target proxy-baseline, for before/after figures in the same run
  --profile        run only the fixed-rate scenario against the relay and the proxy
                   variants under node --cpu-prof (profiles in bench/results/profiles)
                   and summarise the measurement window of each
  --profile-scenario fixed-rate|idle
                   with --profile: the scenario to profile (idle: the connect phase)
  -h, --help       this text
`

// ---- the load generator process ------------------------------------------------------------

class Loadgen {
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (r: JobResult) => void, reject: (e: Error) => void }>()
  private exited = false

  private constructor (private readonly child: ChildProcess) {
    child.on('message', (reply: Reply) => {
      const waiter = this.pending.get(reply.id)
      if (waiter === undefined) return
      this.pending.delete(reply.id)
      if (reply.ok) waiter.resolve(reply.result)
      else waiter.reject(new Error(`load generator: ${reply.error}`))
    })
    child.once('exit', (code, signal) => {
      this.exited = true
      for (const waiter of this.pending.values()) waiter.reject(new Error(`load generator exited (code ${code}, signal ${signal})`))
      this.pending.clear()
    })
  }

  static async start (): Promise<Loadgen> {
    const script = join(ROOT, 'dist', 'bench', 'loadgen.js')
    const child = spawn('bash', ['-c', FD_WRAP, process.execPath, script], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve)
      child.once('error', reject)
    })
    return new Loadgen(child)
  }

  get pid (): number | undefined { return this.child.pid }

  async run (job: Job, timeoutMs: number): Promise<JobResult> {
    if (this.exited) throw new Error('load generator is not running')
    const id = this.nextId++
    let timer: NodeJS.Timeout | undefined
    try {
      return await new Promise<JobResult>((resolve, reject) => {
        this.pending.set(id, { resolve, reject })
        timer = setTimeout(() => {
          this.pending.delete(id)
          reject(new Error(`load generator: no answer to ${job.kind} within ${timeoutMs} ms`))
        }, timeoutMs)
        this.child.send({ id, job })
      })
    } finally {
      clearTimeout(timer)
    }
  }

  /** SIGTERM by PID, SIGKILL after 3 s; resolves once it has exited. */
  async stop (): Promise<void> {
    if (this.exited || this.child.pid === undefined) return
    const gone = new Promise<void>((resolve) => { this.child.once('exit', () => { resolve() }) })
    this.child.kill('SIGTERM')
    const timer = setTimeout(() => { if (!this.exited) this.child.kill('SIGKILL') }, 3000)
    await gone
    clearTimeout(timer)
  }
}

// ---- scenarios -------------------------------------------------------------------------------

interface Scenario {
  id: string
  /** Upper bound for the generator's answer. */
  timeoutMs: number
  job: (base: { tag: string, port: number, watch: Watched, clkTck: number }) => Job
}

function scenarios (s: Settings): Scenario[] {
  const t = s.throughput
  const throughput = (qos: 0 | 1, payloadBytes: number): Scenario => ({
    id: `throughput-q${qos}-${payloadBytes}`,
    timeoutMs: t.warmupMs + t.durationMs + 30_000,
    job: (base) => ({ ...base, kind: 'throughput', qos, payloadBytes, pairs: t.pairs, window: t.window, endToEndWindow: t.endToEnd[qos], warmupMs: t.warmupMs, durationMs: t.durationMs })
  })
  const latency = (qos: 0 | 1): Scenario => ({
    id: `latency-q${qos}`,
    timeoutMs: s.latency.maxMs + 30_000,
    job: (base) => ({ ...base, kind: 'latency', qos, ...s.latency })
  })
  const f = s.fixedRate
  return [
    throughput(0, 64), throughput(1, 64), throughput(0, 4096), throughput(1, 4096),
    latency(0), latency(1),
    {
      id: 'fixed-rate',
      timeoutMs: f.warmupMs + f.durationMs + 30_000,
      job: (base) => ({ ...base, kind: 'fixed-rate', payloadBytes: f.payloadBytes, pairs: f.pairs, rate: f.rate, window: f.window, warmupMs: f.warmupMs, durationMs: f.durationMs })
    },
    {
      id: 'idle',
      timeoutMs: s.idle.timeoutMs + s.idle.holdMs + 30_000,
      job: (base) => ({ ...base, kind: 'idle', ...s.idle })
    }
  ]
}

// ---- the run ----------------------------------------------------------------------------------

/** Set by SIGINT/SIGTERM: the run is being torn down, errors from its jobs are expected. */
let stopping = false

function log (line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 23)}] ${line}\n`)
}

function describeResult (id: string, r: JobResult): string {
  if ('p50Us' in r) return `p50 ${r.p50Us.toFixed(0)} µs, p99 ${r.p99Us.toFixed(0)} µs`
  if ('behind' in r) return `${r.rate.toFixed(0)} msg/s, target ${(r.cpu['target']?.usPerMessage ?? NaN).toFixed(1)} µs/msg`
  if ('held' in r) return `${r.held}/${r.requested} held, ${r.rate.toFixed(0)} conn/s, ${(r.rss['target']?.perConnectionKiB ?? NaN).toFixed(1)} KiB/conn`
  if ('lost' in r) return `${r.rate.toFixed(0)} msg/s${r.lost > 0 ? `, ${r.lost} lost` : ''}`
  return id
}

/** Hard descriptor limit as the targets will see it (they raise their soft limit to it). */
function hardFdLimit (): number {
  try {
    const out = execFileSync('bash', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim()
    return out === 'unlimited' ? Infinity : Number(out)
  } catch {
    return 1024
  }
}

/** DIR as a baseline: it must be a built checkout; named by its commit when it is a git one. */
function baselineBuild (dir: string): Baseline {
  const root = resolve(dir)
  for (const part of [join('bin', 'mqtt-guard.js'), join('dist', 'src'), 'node_modules']) {
    if (!existsSync(join(root, part))) throw new Error(`--baseline ${dir}: no ${part} there (a checkout after npm ci or npm run build)`)
  }
  let name = root
  try {
    name = execFileSync('git', ['-C', root, 'log', '-1', '--format=%h'], { encoding: 'utf8' }).trim()
  } catch { /* not a git checkout: named by its folder */ }
  return { root, name }
}

async function main (): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      profile: { type: 'boolean' },
      'profile-scenario': { type: 'string' },
      rounds: { type: 'string' },
      only: { type: 'string' },
      scenarios: { type: 'string' },
      out: { type: 'string' },
      baseline: { type: 'string' },
      help: { type: 'boolean', short: 'h' }
    },
    strict: true
  })
  if (values.help === true) { process.stdout.write(USAGE); return 0 }
  const quick = values.quick === true
  const profile = values.profile === true
  const settings: Settings = structuredClone(quick ? SETTINGS.quick : SETTINGS.full)
  if (values.rounds !== undefined) settings.rounds = Math.max(1, Math.min(20, Number(values.rounds) || 1))
  if (profile) {
    settings.rounds = 1
    settings.fixedRate.durationMs = settings.fixedRate.profileMs
  }
  // A proxy or relay holds two descriptors per client.
  const fdLimit = hardFdLimit()
  const maxIdle = Math.floor((fdLimit - 200) / 2)
  if (settings.idle.connections > maxIdle) {
    log(`descriptor hard limit ${fdLimit}: idle connections lowered from ${settings.idle.connections} to ${maxIdle}`)
    settings.idle.connections = maxIdle
  }

  const baseline = values.baseline === undefined ? undefined : baselineBuild(values.baseline)
  const only = values.only?.split(',').map((s) => s.trim()).filter((s) => s !== '')
  const skipped: Array<{ id: string, reason: string }> = []
  const targets: TargetDef[] = []
  for (const def of allTargets(baseline)) {
    if (only !== undefined && !only.includes(def.id)) continue
    if (profile && def.kind !== 'proxy' && def.kind !== 'relay') continue
    const reason = def.unavailable?.() ?? def.variant?.unavailable?.()
    if (reason !== undefined) { skipped.push({ id: def.id, reason }); continue }
    targets.push(def)
  }
  if (only !== undefined) {
    const unknown = only.filter((id) => !allTargets(baseline).some((t) => t.id === id))
    if (unknown.length > 0) throw new Error(`unknown target ${unknown.join(', ')}; known: ${allTargets(baseline).map((t) => t.id).join(', ')}${baseline === undefined ? ' (proxy-baseline with --baseline DIR)' : ''}`)
  }
  if (targets.length === 0) throw new Error('no target to run')
  const profiled = values['profile-scenario'] ?? 'fixed-rate'
  if (profiled !== 'fixed-rate' && profiled !== 'idle') throw new Error('--profile-scenario is fixed-rate or idle')
  const wanted = values.scenarios?.split(',').map((s) => s.trim()).filter((s) => s !== '')
  const known = scenarios(settings).map((s) => s.id)
  const unknownScenario = wanted?.filter((id) => !known.includes(id)) ?? []
  if (unknownScenario.length > 0) throw new Error(`unknown scenario ${unknownScenario.join(', ')}; known: ${known.join(', ')}`)
  const plan = scenarios(settings).filter((s) => profile ? s.id === profiled : wanted === undefined || wanted.includes(s.id))
  if (plan.length === 0) throw new Error('no scenario to run')

  const startedAt = new Date()
  const stamp = startedAt.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')
  const outDir = resolve(values.out ?? join(ROOT, 'bench', 'results'))
  const profileDir = join(ROOT, 'bench', 'results', 'profiles')
  const machine = machineInfo(MOSQUITTO, ROOT)
  const clkTck = clockTicksPerSecond()
  log(`${profile ? 'profile' : quick ? 'quick' : 'full'} run: ${settings.rounds} round(s), targets ${targets.map((t) => t.id).join(', ')}${skipped.length > 0 ? `; skipped ${skipped.map((s) => `${s.id} (${s.reason})`).join(', ')}` : ''}`)
  log(`${machine.cpuModel}, ${machine.cores} cores, node ${machine.node}, mosquitto ${machine.mosquitto}`)
  if ((machine.loadAverage[0] ?? 0) > machine.cores / 2) {
    log(`load average ${machine.loadAverage.join(' ')} on ${machine.cores} cores: other work on this machine will widen the min–max spreads`)
  }

  // Others may rebuild dist/ while this runs: every round runs the proxy from one copy.
  const build: ProxyBuild | undefined = targets.some((t) => t.kind === 'proxy') ? await snapshotProxyBuild() : undefined
  if (build !== undefined) log(`proxy build ${build.hash} copied to ${build.root}`)
  const loadgen = await Loadgen.start()
  let current: RunningTarget | undefined
  const shutdown = async (): Promise<void> => {
    const target = current
    current = undefined
    await target?.stop().catch(() => {})
    await cleanupAll().catch(() => {})
    await loadgen.stop()
    await build?.remove()
  }
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) return
    stopping = true
    log(`${signal}: stopping every child process`)
    shutdown().finally(() => { process.exit(130) })
  }
  // test/helpers/processes.ts turns these signals into an immediate exit (its exit handler then
  // SIGKILLs the children); here they stop everything in order first.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.removeAllListeners(signal)
    process.once(signal, onSignal)
  }

  const store: Store = {}
  const profiles: Array<{ target: string, file: string, summary: Summary }> = []
  let jobCount = 0
  try {
    for (let round = 1; round <= settings.rounds; round++) {
      // Each round starts with another target, so slow drift on a shared machine spreads evenly.
      const order = targets.map((_, i) => targets[(i + round - 1) % targets.length] as TargetDef)
      for (const def of order) {
        if (stopping) break
        const profileName = profile ? `${def.id}-${profiled}-${stamp}.cpuprofile` : undefined
        if (profile) mkdirSync(profileDir, { recursive: true })
        const t0 = Date.now()
        current = await startTarget(def, { proxyRoot: def.root ?? build?.root, ...(profile ? { profileDir, profileName } : {}) })
        log(`round ${round}/${settings.rounds}: ${def.label} started in ${Date.now() - t0} ms (pids ${Object.entries(current.watch).map(([k, v]) => `${k} ${v}`).join(', ')})`)
        try {
          for (const scenario of plan) {
            if (stopping) break
            const tag = `b${process.pid}r${round}${def.id}${++jobCount}`
            const job = { ...scenario.job({ tag, port: current.port, watch: current.watch, clkTck }), credentials: def.variant?.credentials, brokers: current.brokers }
            const result = await loadgen.run(job, scenario.timeoutMs)
            ;((store[scenario.id] ??= {})[def.id] ??= []).push(result)
            log(`  ${def.id} ${scenario.id}: ${describeResult(scenario.id, result)}`)
          }
        } finally {
          const target = current
          current = undefined
          await target?.stop()
        }
        if (profileName !== undefined) {
          const file = join(profileDir, profileName)
          const window = (store[profiled]?.[def.id]?.at(-1) as FixedRateResult | IdleResult | undefined)?.windowUs
          if (existsSync(file)) profiles.push({ target: def.id, file, summary: summariseFile(file, 15, window) })
          else log(`no profile written for ${def.id} (did the proxy exit cleanly?)`)
        }
      }
    }
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    if (!stopping) await shutdown()
  }
  if (stopping) return 130

  const targetInfo: TargetInfo[] = targets.map((t) => ({ id: t.id, label: t.label, goals: t.variant?.goals, relativeGoal: t.variant?.relativeGoal }))
  const tables = buildTables(store, targetInfo, tableDefs({ fixedRate: settings.fixedRate.rate, idleConnections: settings.idle.connections }))
  const goals = goalLines(tables)
  const finishedAt = new Date()

  const out: string[] = []
  out.push(`## mqtt-guard benchmark, ${startedAt.toISOString()}${profile ? ' (under the CPU profiler)' : quick ? ' (--quick)' : ''}`, '')
  out.push(`${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.kernel}; Node ${machine.node}; Mosquitto ${machine.mosquitto}; aedes ${machine.aedes}; mqtt-guard ${machine.commit}${build === undefined ? '' : ` (build ${build.hash})`}; load average at start ${machine.loadAverage.join(' ')}, at end ${os.loadavg().map((v) => v.toFixed(2)).join(' ')}; ${settings.rounds} round(s), medians with min–max.`, '')
  for (const table of tables) out.push(renderTable(table))
  if (goals.length > 0) {
    out.push('### Targets of issues #3, #6, #8, #20, #21 and #22 (reported, not asserted)', '')
    for (const g of goals) out.push(`- ${g.pass ? '✅ pass' : '❌ FAIL'} · ${g.target} · ${g.table}: ${g.text}`)
    out.push('')
  }
  for (const p of profiles) out.push(renderSummary(p.summary, `CPU profile of ${p.target}, ${profiled}: top ${p.summary.functions.length} functions by self time (${p.file.slice(ROOT.length)})`))
  if (skipped.length > 0) out.push(`Skipped: ${skipped.map((s) => `${s.id} (${s.reason})`).join('; ')}`, '')
  process.stdout.write(out.join('\n') + '\n')

  mkdirSync(outDir, { recursive: true })
  const file = join(outDir, `${stamp}${profile ? '-profile' : quick ? '-quick' : ''}.json`)
  writeFileSync(file, JSON.stringify({
    schema: 'mqtt-guard-bench/1',
    mode: profile ? 'profile' : quick ? 'quick' : 'full',
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationSeconds: (finishedAt.getTime() - startedAt.getTime()) / 1000,
    machine,
    proxyBuild: build?.hash ?? null,
    loadAverageAtEnd: os.loadavg().map((v) => Math.round(v * 100) / 100),
    clockTicksPerSecond: clkTck,
    settings,
    targets: targets.map((t) => ({ id: t.id, label: t.label, kind: t.kind, goals: t.variant?.goals ?? null, relativeGoal: t.variant?.relativeGoal ?? null })),
    skipped,
    tables,
    goals,
    profiles: profiles.map((p) => ({ target: p.target, file: p.file, summary: p.summary })),
    raw: store
  }, null, 2) + '\n')
  log(`wrote ${file} (${((finishedAt.getTime() - startedAt.getTime()) / 1000).toFixed(0)} s)`)
  return 0
}

main().then((code) => { process.exitCode = code }, async (err: unknown) => {
  if (stopping) return
  process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  await cleanupAll().catch(() => {})
  process.exitCode = 1
})
