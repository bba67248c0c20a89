// A proxy configured with every built-in plugin that registers metrics (auth, acl, client-id,
// dedupe, trace), Redis, and an mqtt, a ws and an mqtts listener, scraped over its admin
// endpoint; a loose parser of the Prometheus text format; and the naming rules the proxy's
// metrics follow. Shared by the metric-name, dashboard and alert-rule tests.

import path from 'node:path'
import type { Test } from 'tap'
import { startMosquitto } from './mosquitto.js'
import { startRedis } from './redis.js'
import { startProxy, type TestProxy } from './proxy.js'
import { makePki } from './certs.js'
import { tempDir } from './auth-clients.js'

export interface Sample { name: string, labels: Record<string, string>, value: number }
export interface Family { name: string, type: string, help: string, samples: Sample[] }

/** `# HELP`, `# TYPE` and sample lines into families by name (a histogram's `_bucket`, `_sum`, `_count` under its own). */
export function parseExposition (text: string): Map<string, Family> {
  const families = new Map<string, Family>()
  const family = (name: string): Family => {
    let f = families.get(name)
    if (f === undefined) families.set(name, f = { name, type: 'untyped', help: '', samples: [] })
    return f
  }
  for (const line of text.split('\n')) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line)
    if (meta !== null) {
      const f = family(meta[2] as string)
      if (meta[1] === 'TYPE') f.type = meta[3] as string
      else f.help = meta[3] as string
      continue
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line)
    if (sample === null) continue
    const name = sample[1] as string
    const labels: Record<string, string> = {}
    for (const [, k, v] of (sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k as string] = v as string
    const base = name.replace(/_(bucket|sum|count)$/, '')
    const owner = families.has(name) || families.get(base) === undefined ? name : base
    family(owner).samples.push({ name, labels, value: Number(sample[3]) })
  }
  return families
}

/** The names of a scrape: families, and each histogram's `_bucket`, `_sum` and `_count` series. */
export function exposedNames (families: Map<string, Family>): Set<string> {
  const names = new Set<string>()
  for (const f of families.values()) {
    names.add(f.name)
    if (f.type === 'histogram' || f.type === 'summary') for (const s of ['_bucket', '_sum', '_count']) names.add(f.name + s)
  }
  return names
}

const PROXY_PREFIX = 'mqtt_guard_'
/** prom-client's default metrics: their names as every Node.js dashboard knows them. */
const DEFAULT_PREFIXES = ['process_', 'nodejs_']
/** Time or size in something other than seconds and bytes. */
const NON_BASE_UNITS = /_(ms|us|ns|milliseconds|microseconds|nanoseconds|minutes|hours|days|kb|mb|gb|kilobytes|megabytes|bits|percent)(_|$)/
/** A HELP that says the value is a time (or a duration): the name must say `_seconds`. */
const MEASURES_TIME = /\b(seconds|milliseconds|duration|latency|round trips|time to|time until)\b/i

/** What is wrong with the names of a scrape, one sentence per problem; empty when nothing is. */
export function namingProblems (families: Map<string, Family>): string[] {
  const problems: string[] = []
  for (const { name, type, help, samples } of families.values()) {
    if (/mqtt_guard_.*mqtt_guard_|process_process_|nodejs_nodejs_|^mqtt_guard_(process|nodejs)_/.test(name)) problems.push(`${name}: doubled prefix`)
    const ours = name.startsWith(PROXY_PREFIX)
    if (!ours) {
      if (!DEFAULT_PREFIXES.some((p) => name.startsWith(p))) problems.push(`${name}: a proxy metric without the ${PROXY_PREFIX} prefix`)
      continue // prom-client's own names are the standard, as they are (nodejs_active_handles_total is its gauge)
    }
    if (type === 'counter' && !name.endsWith('_total')) problems.push(`${name}: a counter whose name does not end in _total`)
    if (type !== 'counter' && name.endsWith('_total')) problems.push(`${name}: a ${type} whose name ends in _total (only counters do)`)
    if (NON_BASE_UNITS.test(name)) problems.push(`${name}: not in a base unit (seconds, bytes)`)
    if ((type === 'histogram' || type === 'summary') && !/_(seconds|bytes)$/.test(name)) problems.push(`${name}: a ${type} without its unit (_seconds, _bytes) at the end`)
    if (type === 'gauge' && MEASURES_TIME.test(help) && !name.endsWith('_seconds')) problems.push(`${name}: a gauge of time without _seconds`)
    if (name.endsWith('_info') && (type !== 'gauge' || samples.some((s) => s.value !== 1))) problems.push(`${name}: an info metric is a gauge of 1`)
  }
  return problems
}

export interface ObservedProxy {
  proxy: TestProxy
  /** The admin endpoint, `http://127.0.0.1:PORT`. */
  admin: string
  /** The configured listeners' URLs: the `listener` label of their metrics. */
  listeners: string[]
  /** GET /metrics with the admin token, as Prometheus does it. */
  scrape: () => Promise<Map<string, Family>>
}

export const ADMIN_TOKEN = 'metrics-scrape-token-0123456789'
let prefixes = 0

/** Starts Mosquitto, Redis and the proxy; everything is stopped in `t`'s teardown. */
export async function observedProxy (t: Test): Promise<ObservedProxy> {
  const mosquitto = await startMosquitto()
  t.teardown(() => mosquitto.stop())
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const pki = await makePki(t)
  const cert = await pki.server(['127.0.0.1'], { days: 30 })
  const listeners = ['mqtt://127.0.0.1:0', 'ws://127.0.0.1:0/mqtt', 'mqtts://127.0.0.1:0']
  const proxy = await startProxy({
    config: {
      upstream: mosquitto.url,
      listen: [listeners[0], listeners[1], { url: listeners[2], cert: cert.cert, key: cert.key }],
      redis: { url: redis.url, keyPrefix: `scrape${process.pid}-${++prefixes}:` },
      admin: { listen: '127.0.0.1:0', token: ADMIN_TOKEN },
      allowAnonymous: true,
      plugins: [
        { name: 'auth', allowAnonymous: true, bruteForce: false },
        { name: 'acl', rules: [{ deny: 'publish', topic: 'secret/#' }, { allow: ['publish', 'subscribe', 'receive'], topic: '#' }] },
        { name: 'client-id' },
        { name: 'dedupe' },
        { name: 'trace', enabled: false, destination: path.join(await tempDir(t, 'mqtt-guard-scrape-'), 'trace.jsonl') }
      ]
    }
  })
  t.teardown(() => proxy.stop())
  const admin = `http://127.0.0.1:${proxy.server.admin?.port ?? 0}`
  const scrape = async (): Promise<Map<string, Family>> => {
    const res = await fetch(`${admin}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    if (res.status !== 200) throw new Error(`GET /metrics: ${res.status}`)
    return parseExposition(await res.text())
  }
  return { proxy, admin, listeners, scrape }
}

/** The value of the sample `name` whose labels include `labels`, or undefined. */
export function valueOf (families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const base = name.replace(/_(bucket|sum|count)$/, '')
  const samples = [...(families.get(name)?.samples ?? []), ...(base === name ? [] : families.get(base)?.samples ?? [])]
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value
}
