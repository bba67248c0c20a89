// `npm run bench -- --quick` as a child process: it must print every table and write a JSON
// file of the documented shape, so the benchmark cannot rot. Performance itself is reported by
// the benchmark, never asserted here: only that every target served every scenario.

import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const RUN = join(ROOT, 'dist', 'bench', 'run.js')
const DEADLINE_MS = 70_000

const TABLES = [
  'throughput-q0-64', 'throughput-q1-64', 'throughput-q0-4096', 'throughput-q1-4096',
  'latency-q0', 'latency-q1', 'fixed-rate', 'idle'
]
const TARGETS = ['mosquitto', 'relay', 'haproxy', 'proxy', 'aedes']

interface Row { target: string, label: string, median: number, min: number, max: number, values: number[], vsDirect: number | null, vsRelay: number | null, goal: { text: string, pass: boolean } | null }
interface Report {
  schema: string
  mode: string
  machine: { cpuModel: string, cores: number, node: string, mosquitto: string }
  settings: { rounds: number, idle: { connections: number } }
  targets: Array<{ id: string }>
  tables: Array<{ id: string, title: string, rows: Row[] }>
  goals: Array<{ target: string, table: string, pass: boolean }>
  raw: Record<string, Record<string, Array<Record<string, unknown>>>>
}

t.test('bench --quick prints the tables and writes the JSON', { timeout: DEADLINE_MS + 5000 }, async (t) => {
  const out = await mkdtemp(join(tmpdir(), 'mqtt-guard-bench-test-'))
  t.teardown(async () => { await rm(out, { recursive: true, force: true }) })

  // Its own process group: if it overruns, the group (runner, generator, targets) is killed by id.
  // The reference rows only, the peer HAProxy among them (the extra proxy variants would add ~5 s each).
  const child = spawn(process.execPath, [RUN, '--quick', '--only', TARGETS.join(','), '--out', out], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString('utf8') })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8') })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => { resolve({ code, signal }) })
  })
  let running = true
  void exited.then(() => { running = false })
  const killGroup = (signal: NodeJS.Signals): void => {
    if (running && child.pid !== undefined) {
      try { process.kill(-child.pid, signal) } catch { /* already gone */ }
    }
  }
  t.teardown(async () => {
    if (!running) return
    killGroup('SIGKILL')
    await exited
  })
  const timer = setTimeout(() => { killGroup('SIGTERM'); setTimeout(() => { killGroup('SIGKILL') }, 3000).unref() }, DEADLINE_MS)
  const exit = await exited
  clearTimeout(timer)

  t.same(exit, { code: 0, signal: null }, `exits 0; stderr tail:\n${stderr.split('\n').slice(-15).join('\n')}`)

  t.test('stdout has every table with a row per target', async (t) => {
    for (const title of ['Throughput, QoS 0, 64 B', 'Throughput, QoS 1, 64 B', 'Throughput, QoS 0, 4 KiB', 'Throughput, QoS 1, 4 KiB',
      'Latency, QoS 0', 'Latency, QoS 1', 'Fixed rate, 10,000 msg/s', 'Idle connections: 300 clients']) {
      t.match(stdout, new RegExp(`^### ${title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 'm'), title)
    }
    for (const label of ['Mosquitto direct', 'bare TCP relay', 'HAProxy, TCP, CONNECT validated', 'mqtt-guard, no plugins', 'aedes alone']) {
      t.equal(stdout.split('\n').filter((l) => l.startsWith(`| ${label} |`)).length, TABLES.length, `${label}: one row in each of the ${TABLES.length} tables`)
    }
    t.match(stdout, /^### Targets of issues #3, #6, #8, #20, #21 and #22/m)
  })

  t.test('one JSON file of the documented shape', async (t) => {
    const files = (await readdir(out)).filter((f) => f.endsWith('.json'))
    t.equal(files.length, 1, 'exactly one JSON file')
    t.match(files[0], /^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ-quick\.json$/)
    const report = JSON.parse(await readFile(join(out, files[0] as string), 'utf8')) as Report
    t.equal(report.schema, 'mqtt-guard-bench/1')
    t.equal(report.mode, 'quick')
    t.equal(report.settings.rounds, 1)
    t.equal(report.settings.idle.connections, 300)
    t.type(report.machine.cpuModel, 'string')
    t.ok(report.machine.cores >= 1, 'cores')
    t.equal(report.machine.node, process.version)
    t.match(report.machine.mosquitto, /^\d+\.\d+\.\d+/)
    t.same(report.tables.map((table) => table.id), TABLES)
    for (const table of report.tables) {
      for (const target of TARGETS) {
        const row = table.rows.find((r) => r.target === target)
        if (row === undefined) { t.fail(`${table.id}: no row for ${target}`); continue }
        t.equal(row.values.length, 1, `${table.id}/${target}: one value per round`)
        t.ok(Number.isFinite(row.median) && row.median > 0, `${table.id}/${target}: median ${row.median} > 0`)
        t.ok(row.min <= row.median && row.median <= row.max, `${table.id}/${target}: min ≤ median ≤ max`)
        if (target === 'mosquitto') t.equal(row.vsDirect, 1, `${table.id}: direct is 1× itself`)
        if (target === 'relay') t.equal(row.vsRelay, 1, `${table.id}: relay is 1× itself`)
      }
    }
    // Correctness of the generator and the targets, not speed: nothing lost, every client held.
    for (const target of TARGETS) {
      for (const id of ['throughput-q1-64', 'throughput-q1-4096', 'fixed-rate']) {
        t.equal(report.raw[id]?.[target]?.[0]?.['lost'], 0, `${id}/${target}: no QoS 1 message lost`)
      }
      const idle = report.raw['idle']?.[target]?.[0]
      t.equal(idle?.['opened'], 300, `idle/${target}: 300 CONNACKs`)
      t.equal(idle?.['held'], 300, `idle/${target}: 300 held`)
      const cpu = idle?.['cpu'] as Record<string, { usPerMessage: number }> | undefined
      t.ok((cpu?.['target']?.usPerMessage ?? -1) >= 0, `idle/${target}: CPU per connection read from /proc`)
    }
    const proxyGoals = report.goals.filter((g) => g.target === 'proxy').map((g) => g.table).sort()
    t.same(proxyGoals, ['fixed-rate', 'idle', 'latency-q0', 'latency-q1', 'throughput-q1-64'], 'the no-plugins targets are reported')
    for (const g of report.goals) t.type(g.pass, 'boolean')
  })
})
