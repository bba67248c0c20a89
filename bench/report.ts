// Turns the per-round results into tables: median, min–max, ratios to Mosquitto direct and to
// the bare relay, and the issue's targets as pass/fail. Targets are reported, never asserted.

import type { FixedRateResult, IdleResult, JobResult, LatencyResult, ThroughputResult } from './jobs.js'
import type { Goals, RelativeGoal } from './variants.js'

/** results[scenario][target] = one result per round. */
export type Store = Record<string, Record<string, JobResult[]>>

export interface GoalResult { text: string, pass: boolean }

export interface TableRow {
  target: string
  label: string
  median: number
  min: number
  max: number
  values: number[]
  vsDirect: number | null
  vsRelay: number | null
  extras: string[]
  goal: GoalResult | null
}

export interface Table {
  id: string
  scenario: string
  title: string
  unit: string
  better: 'higher' | 'lower'
  extraHeaders: string[]
  rows: TableRow[]
}

export interface TargetInfo { id: string, label: string, goals: Goals | undefined, relativeGoal?: RelativeGoal | undefined }

export function median (values: number[]): number {
  if (values.length === 0) return NaN
  const s = [...values].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid] as number : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

export function fmt (value: number): string {
  if (!Number.isFinite(value)) return 'n/a'
  const abs = Math.abs(value)
  if (abs >= 1000) return Math.round(value).toLocaleString('en-US')
  if (abs >= 100) return value.toFixed(0)
  if (abs >= 10) return value.toFixed(1)
  return value.toFixed(2)
}

const pct = (value: number): string => Number.isFinite(value) ? `${Math.round(value * 100)} %` : 'n/a'
const ratio = (value: number | null): string => value === null || !Number.isFinite(value) ? '—' : `${value.toFixed(2)}×`
const mark = (pass: boolean): string => pass ? '✅' : '❌'

function range (values: number[]): string {
  return values.length === 0 ? 'n/a' : `${fmt(Math.min(...values))}–${fmt(Math.max(...values))}`
}

interface TableDef {
  id: string
  scenario: string
  title: string
  unit: string
  better: 'higher' | 'lower'
  value: (r: JobResult) => number
  extras?: Array<{ header: string, cell: (results: JobResult[], ctx: Ctx) => string }>
  goal?: (ctx: Ctx, goals: Goals) => GoalResult | null
  /** Whether a target's RelativeGoal (a share of another target's median) is judged here. */
  relativeGoals?: boolean
}

/** What a cell or goal of one row may look at. */
interface Ctx {
  target: string
  store: Store
  /** Median of `value` for another target in the same scenario (NaN if it did not run). */
  medianOf: (target: string) => number
  values: number[]
}

const asThroughput = (r: JobResult): ThroughputResult => r as ThroughputResult
const asLatency = (r: JobResult): LatencyResult => r as LatencyResult
const asFixed = (r: JobResult): FixedRateResult => r as FixedRateResult
const asIdle = (r: JobResult): IdleResult => r as IdleResult

function medianCell (results: JobResult[], f: (r: JobResult) => number | undefined): number {
  return median(results.map(f).filter((v): v is number => v !== undefined && Number.isFinite(v)))
}

function atLeast (ctx: Ctx, share: number): GoalResult | null {
  const relay = ctx.medianOf('relay')
  if (!Number.isFinite(relay)) return null
  const r = median(ctx.values) / relay
  return { text: `${r.toFixed(2)}× relay (≥ ${share})`, pass: r >= share }
}

function atMost (ctx: Ctx, factor: number): GoalResult | null {
  const relay = ctx.medianOf('relay')
  if (!Number.isFinite(relay)) return null
  const r = median(ctx.values) / relay
  return { text: `${r.toFixed(2)}× relay (≤ ${factor})`, pass: r <= factor }
}

/**
 * Issue #22: the peer, HAProxy in TCP mode validating the CONNECT (`haproxy` target), same run.
 * `higher`: at least `bound` × its median; `lower`: at most.
 */
function againstHaproxy (ctx: Ctx, bound: number, better: 'higher' | 'lower'): GoalResult | null {
  const peer = ctx.medianOf('haproxy')
  if (!Number.isFinite(peer)) return null
  const r = median(ctx.values) / peer
  return better === 'higher'
    ? { text: `${r.toFixed(2)}× HAProxy (≥ ${bound}, issue #22)`, pass: r >= bound }
    : { text: `${r.toFixed(2)}× HAProxy (≤ ${bound}, issue #22)`, pass: r <= bound }
}

/** Issues #6 and #8: a plugin on against the proxy without plugins, same run. */
function againstProxy (ctx: Ctx, share: number): GoalResult | null {
  const proxy = ctx.medianOf('proxy')
  if (!Number.isFinite(proxy)) return null
  const r = median(ctx.values) / proxy
  return { text: `${r.toFixed(2)}× proxy without plugins (≥ ${share})`, pass: r >= share }
}

/** A RelativeGoal: this row's median against another target's, same scenario, same run. */
function relativeTo (ctx: Ctx, goal: RelativeGoal, better: 'higher' | 'lower'): GoalResult | null {
  const other = ctx.medianOf(goal.target)
  if (!Number.isFinite(other)) return null
  const r = median(ctx.values) / other
  if (better === 'higher') {
    if (goal.share === undefined) return null
    return { text: `${r.toFixed(2)}× ${goal.target} (≥ ${goal.share}, issue ${goal.issue})`, pass: r >= goal.share }
  }
  if (goal.cpu === undefined) return null
  return { text: `${r.toFixed(2)}× ${goal.target} (≤ ${goal.cpu.toFixed(2)}, issue ${goal.issue})`, pass: r <= goal.cpu }
}

/** Both goals of a row in one cell, as the idle table joins its parts. */
function joinGoals (a: GoalResult | null, b: GoalResult | null): GoalResult | null {
  if (a === null || b === null) return a ?? b
  return { text: [a, b].map((p) => p.pass ? p.text : `${p.text} ${mark(false)}`).join('; '), pass: a.pass && b.pass }
}

/** CPU µs per message of every Redis process the target started (roles redis, redis-<port>). */
function redisUsPerMessage (cpu: Record<string, { usPerMessage: number } | undefined>): number | undefined {
  const roles = Object.keys(cpu).filter((role) => role === 'redis' || role.startsWith('redis-'))
  if (roles.length === 0) return undefined
  return roles.reduce((sum, role) => sum + (cpu[role]?.usPerMessage ?? 0), 0)
}

function throughputTable (qos: 0 | 1, payloadBytes: number): TableDef {
  const scenario = `throughput-q${qos}-${payloadBytes}`
  return {
    id: scenario,
    scenario,
    title: `Throughput, QoS ${qos}, ${payloadBytes >= 1024 ? `${payloadBytes / 1024} KiB` : `${payloadBytes} B`}: messages/s delivered to subscribers`,
    unit: 'msg/s',
    better: 'higher',
    value: (r) => asThroughput(r).rate,
    extras: [
      { header: 'target CPU', cell: (rs) => pct(medianCell(rs, (r) => asThroughput(r).cpu['target']?.utilisation)) },
      { header: 'upstream CPU', cell: (rs) => pct(medianCell(rs, (r) => asThroughput(r).cpu['upstream']?.utilisation)) },
      { header: 'Redis µs/msg', cell: (rs) => redisCell(rs, (r) => asThroughput(r).cpu) },
      { header: 'generator CPU', cell: (rs) => pct(medianCell(rs, (r) => asThroughput(r).generatorUtilisation)) },
      { header: 'lost', cell: (rs) => String(Math.max(...rs.map((r) => asThroughput(r).lost))) }
    ],
    goal: qos === 1 && payloadBytes === 64
      ? (ctx, goals) => goals === 'no-plugins' ? joinGoals(atLeast(ctx, 0.95), againstHaproxy(ctx, 0.95, 'higher')) : goals === 'production' ? atLeast(ctx, 0.85) : goals === 'dedupe' ? againstProxy(ctx, 0.8) : goals === 'trace' ? againstProxy(ctx, 0.7) : goals === 'trace-nomatch' ? againstProxy(ctx, 0.97) : null
      : undefined,
    relativeGoals: true
  }
}

/** The Redis processes' CPU per message, all nodes together; — without Redis. */
function redisCell (rs: JobResult[], cpu: (r: JobResult) => Record<string, { usPerMessage: number } | undefined>): string {
  const values = rs.map((r) => redisUsPerMessage(cpu(r))).filter((v): v is number => v !== undefined && Number.isFinite(v))
  return values.length === 0 ? '—' : fmt(median(values))
}

function latencyTable (qos: 0 | 1): TableDef {
  const scenario = `latency-q${qos}`
  return {
    id: scenario,
    scenario,
    title: `Latency, QoS ${qos}, 64 B, one message in flight: publish → delivery p50 (µs)`,
    unit: 'µs',
    better: 'lower',
    value: (r) => asLatency(r).p50Us,
    extras: [
      { header: 'p99 median (min–max)', cell: (rs) => `${fmt(median(rs.map((r) => asLatency(r).p99Us)))} (${range(rs.map((r) => asLatency(r).p99Us))})` },
      {
        header: 'added p50 over direct',
        cell: (rs, ctx) => {
          const direct = ctx.medianOf('mosquitto')
          return ctx.target === 'mosquitto' || !Number.isFinite(direct) ? '—' : `${fmt(median(rs.map((r) => asLatency(r).p50Us)) - direct)} µs`
        }
      }
    ],
    goal: (ctx, goals) => {
      if (goals !== 'no-plugins') return null
      const direct = ctx.medianOf('mosquitto')
      const relayAdded = ctx.medianOf('relay') - direct
      if (!Number.isFinite(relayAdded)) return null
      const added = median(ctx.values) - direct
      const r = added / relayAdded
      const vsRelay = { text: `added ${fmt(added)} µs = ${r.toFixed(2)}× relay's ${fmt(relayAdded)} µs (≤ 1.25)`, pass: r <= 1.25 }
      // Issue #22: added latency at most 1.3 × HAProxy's, over the same direct run.
      const peerAdded = ctx.medianOf('haproxy') - direct
      if (!Number.isFinite(peerAdded)) return vsRelay
      const p = added / peerAdded
      return joinGoals(vsRelay, { text: `${p.toFixed(2)}× HAProxy's ${fmt(peerAdded)} µs (≤ 1.3, issue #22)`, pass: p <= 1.3 })
    }
  }
}

const fixedRateTable = (rate: number): TableDef => ({
  id: 'fixed-rate',
  scenario: 'fixed-rate',
  title: `Fixed rate, ${rate.toLocaleString('en-US')} msg/s, QoS 1, 64 B: CPU time of the target process per message (µs)`,
  unit: 'µs/msg',
  better: 'lower',
  value: (r) => asFixed(r).cpu['target']?.usPerMessage ?? NaN,
  extras: [
    { header: 'delivered msg/s', cell: (rs) => fmt(medianCell(rs, (r) => asFixed(r).rate)) },
    { header: 'target CPU', cell: (rs) => pct(medianCell(rs, (r) => asFixed(r).cpu['target']?.utilisation)) },
    { header: 'upstream Mosquitto µs/msg', cell: (rs) => fmt(medianCell(rs, (r) => asFixed(r).cpu['upstream']?.usPerMessage)) },
    { header: 'Redis µs/msg', cell: (rs) => redisCell(rs, (r) => asFixed(r).cpu) },
    { header: 'behind', cell: (rs) => String(Math.max(...rs.map((r) => asFixed(r).behind))) }
  ],
  goal: (ctx, goals) => goals === 'no-plugins'
    ? joinGoals(atMost(ctx, 1.3), againstHaproxy(ctx, 1.3, 'lower'))
    : goals === 'production' ? joinGoals(atMost(ctx, 2), againstHaproxy(ctx, 2, 'lower')) : null,
  relativeGoals: true
})

const idleTable = (connections: number): TableDef => ({
  id: 'idle',
  scenario: 'idle',
  title: `Idle connections: ${connections.toLocaleString('en-US')} clients CONNECT and wait for CONNACK: connect rate (connections/s)`,
  unit: 'conn/s',
  better: 'higher',
  value: (r) => asIdle(r).rate,
  extras: [
    { header: 'held (worst round)', cell: (rs) => `${Math.min(...rs.map((r) => asIdle(r).held))}/${asIdle(rs[0] as JobResult).requested}` },
    { header: 'target CPU µs/conn', cell: (rs) => `${fmt(medianCell(rs, (r) => asIdle(r).cpu['target']?.usPerMessage))} (${range(rs.map((r) => asIdle(r).cpu['target']?.usPerMessage ?? NaN))})` },
    { header: 'target KiB/conn', cell: (rs) => `${fmt(medianCell(rs, (r) => asIdle(r).rss['target']?.perConnectionKiB))} (${range(rs.map((r) => asIdle(r).rss['target']?.perConnectionKiB ?? NaN))})` },
    { header: 'upstream KiB/conn', cell: (rs) => fmt(medianCell(rs, (r) => asIdle(r).rss['upstream']?.perConnectionKiB)) }
  ],
  goal: (ctx, goals) => {
    if (goals !== 'no-plugins') return null
    const rs = ctx.store['idle']?.[ctx.target] ?? []
    const held = Math.min(...rs.map((r) => asIdle(r).held))
    const requested = asIdle(rs[0] as JobResult).requested
    const kib = medianCell(rs, (r) => asIdle(r).rss['target']?.perConnectionKiB)
    // Issue 3's connect-rate target (≥ 0.8 × the relay's rate) is retired: the proxy reads the
    // CONNECT before it dials, by design. Issue 22's replacement: CPU per connection at most
    // 1.5 × the relay's.
    const cpuOf = (target: string): number => medianCell(ctx.store['idle']?.[target] ?? [], (r) => asIdle(r).cpu['target']?.usPerMessage)
    const r = cpuOf(ctx.target) / cpuOf('relay')
    const parts = [
      { text: `held ${held}/${requested}`, pass: held === requested },
      { text: `${fmt(kib)} KiB/conn (≤ 12)`, pass: kib <= 12 },
      ...(Number.isFinite(r) ? [{ text: `${r.toFixed(2)}× relay CPU/conn (≤ 1.5)`, pass: r <= 1.5 }] : [])
    ]
    return { text: parts.map((p) => p.pass ? p.text : `${p.text} ${mark(false)}`).join('; '), pass: parts.every((p) => p.pass) }
  }
})

export function tableDefs (settings: { fixedRate: number, idleConnections: number }): TableDef[] {
  return [
    throughputTable(0, 64), throughputTable(1, 64), throughputTable(0, 4096), throughputTable(1, 4096),
    latencyTable(0), latencyTable(1),
    fixedRateTable(settings.fixedRate),
    idleTable(settings.idleConnections)
  ]
}

export function buildTables (store: Store, targets: TargetInfo[], defs: TableDef[]): Table[] {
  const tables: Table[] = []
  for (const def of defs) {
    const byTarget = store[def.scenario]
    if (byTarget === undefined) continue
    const medianOf = (target: string): number => median((byTarget[target] ?? []).map(def.value))
    const rows: TableRow[] = []
    for (const target of targets) {
      const results = byTarget[target.id]
      if (results === undefined || results.length === 0) continue
      const values = results.map(def.value)
      const ctx: Ctx = { target: target.id, store, medianOf, values }
      const m = median(values)
      const direct = medianOf('mosquitto')
      const relay = medianOf('relay')
      rows.push({
        target: target.id,
        label: target.label,
        median: m,
        min: Math.min(...values),
        max: Math.max(...values),
        values,
        vsDirect: Number.isFinite(direct) ? m / direct : null,
        vsRelay: Number.isFinite(relay) ? m / relay : null,
        extras: (def.extras ?? []).map((e) => e.cell(results, ctx)),
        goal: joinGoals(
          def.goal === undefined || target.goals === undefined ? null : def.goal(ctx, target.goals),
          def.relativeGoals !== true || target.relativeGoal === undefined ? null : relativeTo(ctx, target.relativeGoal, def.better)
        )
      })
    }
    tables.push({ id: def.id, scenario: def.scenario, title: def.title, unit: def.unit, better: def.better, extraHeaders: (def.extras ?? []).map((e) => e.header), rows })
  }
  return tables
}

/** Markdown, readable in a terminal and pasted as is into docs/performance.md. */
export function renderTable (table: Table): string {
  const hasGoals = table.rows.some((r) => r.goal !== null)
  const header = ['target', `median ${table.unit}`, 'min–max', '× direct', '× relay', ...table.extraHeaders, ...(hasGoals ? ['target (issues #3, #6, #8, #20, #21, #22)'] : [])]
  const lines = [
    `### ${table.title} (${table.better} is better)`,
    '',
    `| ${header.join(' | ')} |`,
    `|${header.map((_, i) => i === 0 ? ' --- ' : ' ---: ').join('|')}|`
  ]
  for (const row of table.rows) {
    const cells = [
      row.label, fmt(row.median), `${fmt(row.min)}–${fmt(row.max)}`, ratio(row.vsDirect), ratio(row.vsRelay), ...row.extras,
      ...(hasGoals ? [row.goal === null ? '—' : `${row.goal.text} ${mark(row.goal.pass)}`] : [])
    ]
    lines.push(`| ${cells.join(' | ')} |`)
  }
  return lines.join('\n') + '\n'
}

export interface GoalLine { target: string, table: string, text: string, pass: boolean }

export function goalLines (tables: Table[]): GoalLine[] {
  return tables.flatMap((t) => t.rows.flatMap((r) => r.goal === null ? [] : [{ target: r.target, table: t.id, text: r.goal.text, pass: r.goal.pass }]))
}
