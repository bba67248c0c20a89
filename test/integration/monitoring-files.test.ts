// What deploy/ ships for monitoring holds: promtool accepts the alert rules, their unit tests
// pass, prometheus.yml is a valid config; every alert names its troubleshooting question and
// links a section that exists; the Grafana dashboard has its data-source variable, units and
// the panels the issue lists; and every metric the rules and the dashboard name is one that a
// real /metrics scrape (a proxy with every plugin) exposes, or, for the Redis Cluster's own
// gauges, one that a proxy on a Redis Cluster exposes.

import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { exposedNames, observedProxy, parseExposition } from '../helpers/metrics-scrape.js'
import { GuardMetrics } from '../../src/observe/metrics.js'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const PROMETHEUS = path.join(ROOT, 'deploy/prometheus')
const PROMTOOL = process.env.PROMTOOL ?? 'promtool'
/** Series Prometheus makes itself, not the proxy. */
const PROMETHEUS_OWN = new Set(['up'])

interface Rule { alert: string, expr: string, for?: string, labels?: Record<string, string>, annotations?: Record<string, string> }
interface Panel { type: string, title: string, datasource?: { uid?: string }, fieldConfig?: { defaults?: { unit?: string } }, targets?: Array<{ expr: string, datasource?: { uid?: string } }> }
interface Dashboard { panels: Panel[], templating: { list: Array<{ name: string, type: string, query: unknown }> } }

const rules = (parseYaml(readFileSync(path.join(PROMETHEUS, 'alerts.yml'), 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((g) => g.rules)
const dashboard = JSON.parse(readFileSync(path.join(ROOT, 'deploy/grafana/mqtt-guard.json'), 'utf8')) as Dashboard
const panels = dashboard.panels.filter((p) => p.type !== 'row')

function run (args: string[], cwd: string): Promise<{ code: number, out: string }> {
  return new Promise((resolve) => {
    execFile(PROMTOOL, args, { cwd }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, out: `${stdout}${stderr}` })
    })
  })
}

/**
 * Metric names in a PromQL expression, loosely: label matchers, ranges, strings, Grafana
 * variables and `by (...)` lists removed, then every identifier not followed by `(` (a
 * function or aggregation) and not a keyword. Histogram series keep their suffix here.
 */
function metricNames (expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\$\{?\w+\}?/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
  const keywords = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset'])
  return [...bare.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)].filter((m) => m[2] === undefined && !keywords.has(m[1] as string)).map((m) => m[1] as string)
}

/** GitHub's anchors for the headings of a Markdown file. */
function anchors (file: string): Set<string> {
  const text = readFileSync(file, 'utf8')
  return new Set([...text.matchAll(/^#{1,6} (.+)$/gm)].map((m) => (m[1] as string).toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').trim().replace(/\s/g, '-')))
}

if (!existsSync('/usr/bin/promtool') && process.env.PROMTOOL === undefined) {
  t.fail('promtool not found: install it with `apt-get install -y prometheus` (Debian\'s package brings promtool), or set PROMTOOL')
} else {
  t.test('promtool: the rules check, their unit tests pass, the config is valid', async (t) => {
    const check = await run(['check', 'rules', 'alerts.yml'], PROMETHEUS)
    t.equal(check.code, 0, check.out)
    t.match(check.out, new RegExp(`SUCCESS: ${rules.length} rules found`))
    const tests = await run(['test', 'rules', 'alerts.test.yml'], PROMETHEUS)
    t.equal(tests.code, 0, tests.out)
    // `check config` also opens the files the config names: the token file lives in the
    // container (compose mounts it), so a copy points at a token file made here, and at the
    // real alerts.yml by its absolute path.
    const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-promtool-'))
    t.teardown(() => rm(dir, { recursive: true, force: true }))
    await writeFile(path.join(dir, 'admin-token'), 'a-token-for-promtool-0123456789\n')
    const config = readFileSync(path.join(PROMETHEUS, 'prometheus.yml'), 'utf8')
    const copy = config.replace('/etc/prometheus/admin-token', path.join(dir, 'admin-token')).replace(/^( {2}- )alerts\.yml$/m, `$1${path.join(PROMETHEUS, 'alerts.yml')}`)
    t.not(copy, config, 'the copy differs only in those two paths')
    await writeFile(path.join(dir, 'prometheus.yml'), copy)
    const valid = await run(['check', 'config', 'prometheus.yml'], dir)
    t.equal(valid.code, 0, valid.out)
    t.match(valid.out, /SUCCESS: 1 rule files found/)
    const scrape = (parseYaml(config) as { scrape_configs: Array<{ job_name: string }> }).scrape_configs.map((s) => s.job_name)
    t.ok(scrape.includes('mqtt-guard'), 'the job the rules and the dashboard select (job="mqtt-guard")')
  })
}

t.test('each alert: a for, a severity, summary and description, a runbook section that exists', async (t) => {
  const sections = anchors(path.join(ROOT, 'docs/troubleshooting.md'))
  t.ok(rules.length >= 9, `${rules.length} alerts`)
  for (const rule of rules) {
    t.match(rule.for, /^\d+[smh]$/, `${rule.alert}: for`)
    // info: an event that needs no one now (a Redis failover that the proxies followed).
    t.match(rule.labels?.severity, /^(info|warning|critical)$/, `${rule.alert}: severity`)
    t.ok((rule.annotations?.summary ?? '').length > 10, `${rule.alert}: summary`)
    t.match(rule.annotations?.description, /\?/, `${rule.alert}: the description names the guide's question`)
    const anchor = /^docs\/troubleshooting\.md#(.+)$/.exec(rule.annotations?.runbook_url ?? '')?.[1]
    t.ok(anchor !== undefined && sections.has(anchor), `${rule.alert}: ${rule.annotations?.runbook_url} is a section of docs/troubleshooting.md`)
  }
  const problems = ['refusals_total', 'flapping', 'certificate_expiry', 'redis', 'upstream_up', 'eventloop_lag', 'open_fds',
    'redis_read_only', 'redis_failovers_total', 'redis_cluster_ok', 'redis_cluster_slots_failing']
  for (const p of problems) t.ok(rules.some((r) => r.expr.includes(p)), `an alert reads ${p}`)
})

t.test('the dashboard: a data-source variable, units, the panels of the issue', async (t) => {
  const ds = dashboard.templating.list.find((v) => v.name === 'DS_PROMETHEUS')
  t.same({ type: ds?.type, query: ds?.query }, { type: 'datasource', query: 'prometheus' })
  for (const panel of panels) {
    t.equal(panel.datasource?.uid, '${DS_PROMETHEUS}', `${panel.title}: the variable's data source`)
    t.ok((panel.targets ?? []).length > 0 && panel.targets?.every((q) => q.datasource?.uid === '${DS_PROMETHEUS}'), `${panel.title}: queries on it`)
    t.ok((panel.fieldConfig?.defaults?.unit ?? '') !== '', `${panel.title}: unit ${panel.fieldConfig?.defaults?.unit}`)
  }
  const wanted = [/^Connections$/, /connect rate.*refusals by code/i, /PUBLISH in and out/, /denials by plugin/i, /duplicates removed/i, /round trips per leg/i,
    /redis errors/i, /upstream/i, /event-loop lag/i, /certificate expiry/i, /redis role, read-only and cluster state/i, /redis failovers/i]
  for (const title of wanted) t.ok(panels.some((p) => title.test(p.title)), `a panel ${String(title)}`)
})

t.test('every metric the rules and the dashboard name is exposed by /metrics', async (t) => {
  const o = await observedProxy(t)
  const exposed = exposedNames(await o.scrape())
  // The scraped proxy's Redis is standalone, which has no Cluster gauges: those come from the
  // same metrics built for a Cluster, as src/server.ts builds them (redisTopology). Their
  // values on a real Cluster are test/integration/redis-cluster.test.ts's.
  const onCluster = new GuardMetrics({ listeners: [], connectionsByListener: () => new Map(), health: async () => ({ ready: true, checks: {} }), redisTopology: 'cluster', flappingClients: () => 0, maxConnections: () => 0 })
  const clusterOnly = [...exposedNames(parseExposition(await onCluster.text()))].filter((name) => !exposed.has(name))
  for (const name of clusterOnly) exposed.add(name)
  const used = new Map<string, string>()
  for (const rule of rules) for (const name of metricNames(rule.expr)) used.set(name, `alert ${rule.alert}`)
  for (const panel of panels) for (const q of panel.targets ?? []) for (const name of metricNames(q.expr)) used.set(name, `panel ${panel.title}`)
  for (const v of dashboard.templating.list) {
    const q = typeof v.query === 'object' && v.query !== null ? (v.query as { query?: string }).query : undefined
    const metric = /label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(q ?? '')?.[1]
    if (metric !== undefined) used.set(metric, `variable ${v.name}`)
  }
  t.ok(used.size >= 20, `${used.size} names used`)
  for (const [name, where] of used) {
    if (PROMETHEUS_OWN.has(name)) continue
    t.ok(exposed.has(name), `${name} (${where}) is exposed`)
  }
})

t.test('the PromQL name reader', async (t) => {
  t.same(metricNames('histogram_quantile(0.95, sum by (le, leg) (rate(mqtt_guard_round_trip_seconds_bucket{leg="broker",x=~"a|b"}[5m]))) > 0.5'), ['mqtt_guard_round_trip_seconds_bucket'])
  t.same(metricNames('process_open_fds{job="mqtt-guard"} / process_max_fds > 0.8 or up == 0'), ['process_open_fds', 'process_max_fds', 'up'])
  t.same(metricNames('sum by (instance) (rate(mqtt_guard_connects_total{instance=~"$instance"}[$__rate_interval])) < 14 * 86400'), ['mqtt_guard_connects_total'])
})
