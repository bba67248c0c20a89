// What the workers answer, made into one answer for the admin endpoint: counts summed, lists
// joined, a time series added up second by second, health judged over every worker (ready only
// when each one is). Pure functions over JSON the workers sent.

import type { ClientEnd, Finding, Overview, Series } from '../views.js'
import type { ReloadReport } from '../reload/plan.js'

type Readiness = { ready: boolean, checks: Record<string, boolean | string> }

/** Ready when every worker is; a check is true only when true on each (else the first other value). */
export function mergeReadiness (answers: readonly Readiness[], expected: number): Readiness & { checks: Record<string, boolean | string> } {
  const checks: Record<string, boolean | string> = {}
  for (const a of answers) {
    for (const [k, v] of Object.entries(a.checks)) {
      if (!(k in checks) || checks[k] === true) checks[k] = v
    }
  }
  checks.workers = `${answers.filter((a) => a.ready).length}/${expected} ready`
  return { ready: answers.length === expected && answers.length > 0 && answers.every((a) => a.ready), checks }
}

function addColumns (into: number[], from: number[], at: number[], index: Map<number, number>): void {
  for (const [i, t] of at.entries()) {
    const j = index.get(t)
    if (j !== undefined) into[j] = (into[j] ?? 0) + (from[i] ?? 0)
  }
}

/** Each second's points added up over the workers; a round trip is the mean of those that have one. */
export function mergeSeries (all: readonly Series[]): Series {
  const times = [...new Set(all.flatMap((s) => s.t))].sort((a, b) => a - b)
  const index = new Map(times.map((t, i) => [t, i]))
  const zeros = (): number[] => times.map(() => 0)
  const out: Series = { ...(all[0] ?? {}), t: times, connections: zeros(), connects: zeros(), refusals: zeros(), publishIn: zeros(), publishOut: zeros(), rttClient: times.map(() => null), rttBroker: times.map(() => null), refusalsByCode: {} } as Series
  const rtt = { rttClient: times.map(() => [0, 0]), rttBroker: times.map(() => [0, 0]) }
  for (const s of all) {
    for (const key of ['connections', 'connects', 'refusals', 'publishIn', 'publishOut'] as const) addColumns(out[key], s[key], s.t, index)
    for (const [code, column] of Object.entries(s.refusalsByCode ?? {})) addColumns(out.refusalsByCode[code] ??= zeros(), column, s.t, index)
    for (const key of ['rttClient', 'rttBroker'] as const) {
      for (const [i, t] of s.t.entries()) {
        const v = s[key][i]
        const j = index.get(t)
        if (v === null || v === undefined || j === undefined) continue
        const acc = rtt[key][j] as number[]
        acc[0] = (acc[0] ?? 0) + v
        acc[1] = (acc[1] ?? 0) + 1
      }
    }
  }
  for (const key of ['rttClient', 'rttBroker'] as const) out[key] = rtt[key].map(([sum = 0, n = 0]) => n === 0 ? null : sum / n)
  return out
}

function sumBy<T> (lists: ReadonlyArray<readonly T[]>, key: (item: T) => string, count: (item: T) => number, make: (item: T, n: number) => T): T[] {
  const seen = new Map<string, { item: T, n: number }>()
  for (const list of lists) {
    for (const item of list) {
      const k = key(item)
      const before = seen.get(k)
      seen.set(k, { item: before?.item ?? item, n: (before?.n ?? 0) + count(item) })
    }
  }
  return [...seen.values()].map(({ item, n }) => make(item, n))
}

const mean = (values: Array<number | null>): number | null => {
  const known = values.filter((v): v is number => v !== null)
  return known.length === 0 ? null : known.reduce((a, b) => a + b, 0) / known.length
}

/** The console's overview of every worker: `instance` is the primary's, health the merged readiness. */
export function mergeOverview (all: readonly Overview[], instance: string, health: Record<string, boolean | string>): Overview {
  const first = all[0]
  return {
    at: new Date().toISOString(),
    instance,
    connections: all.reduce((n, o) => n + o.connections, 0),
    series: mergeSeries(all.map((o) => o.series)),
    connects: all.reduce((n, o) => n + o.connects, 0),
    refusals: sumBy(all.map((o) => o.refusals), (r) => `${r.code}\0${r.reasonCode}`, (r) => r.count, (r, count) => ({ ...r, count })),
    rates: { in: all.reduce((n, o) => n + o.rates.in, 0), out: all.reduce((n, o) => n + o.rates.out, 0) },
    verdicts: sumBy(all.map((o) => o.verdicts), (v) => `${v.plugin}\0${v.action}`, (v) => v.count, (v, count) => ({ ...v, count })),
    duplicatesRemoved: { in: all.reduce((n, o) => n + o.duplicatesRemoved.in, 0), out: all.reduce((n, o) => n + o.duplicatesRemoved.out, 0) },
    roundTrips: { client: mean(all.map((o) => o.roundTrips.client)), broker: mean(all.map((o) => o.roundTrips.broker)) },
    health,
    certificates: first?.certificates ?? [],
    brokers: sumBy(all.map((o) => o.brokers), (b) => b.url, (b) => b.connections, (b, connections) => ({ ...b, connections }))
  }
}

/** One finding per id: the first worker's, with the evidence of the others that saw it too. */
export function mergeFindings (all: ReadonlyArray<readonly Finding[]>): Finding[] {
  const byId = new Map<string, Finding>()
  const rank = { error: 0, warning: 1, info: 2 }
  for (const [worker, list] of all.entries()) {
    for (const f of list) {
      const before = byId.get(f.id)
      if (before === undefined) {
        byId.set(f.id, all.length > 1 ? { ...f, evidence: f.evidence.map((e) => `worker ${worker + 1}: ${e}`) } : f)
        continue
      }
      byId.set(f.id, { ...before, severity: rank[f.severity] < rank[before.severity] ? f.severity : before.severity, evidence: [...before.evidence, ...f.evidence.map((e) => `worker ${worker + 1}: ${e}`)] })
    }
  }
  return [...byId.values()]
}

/** A client's recent ends from every worker, newest first. */
export function mergeHistory (all: ReadonlyArray<readonly ClientEnd[]>): ClientEnd[] {
  return all.flat().sort((a, b) => Date.parse(b.at) - Date.parse(a.at))
}

/**
 * The workers' answers to one reload, and the primary's own changes (workers, admin): the
 * changes as the first worker saw them (each worker read the same file), every refusal once.
 */
export function mergeReports (all: readonly ReloadReport[], own: Pick<ReloadReport, 'changed' | 'refused'>, reload: number, source: string): ReloadReport {
  const refused = [...own.refused]
  for (const r of all.flatMap((a) => a.refused)) {
    if (!refused.some((x) => x.setting === r.setting && x.detail === r.detail)) refused.push(r)
  }
  return {
    at: new Date().toISOString(),
    reload,
    source,
    applied: all.every((a) => a.applied),
    changed: [...own.changed, ...(all[0]?.changed ?? [])],
    refused,
    generation: Math.max(0, ...all.map((a) => a.generation)),
    olderConnections: all.reduce((n, a) => n + a.olderConnections, 0)
  }
}
