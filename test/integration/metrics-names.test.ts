// The names /metrics gives, read from a real scrape of a proxy with every plugin that registers
// metrics: prom-client's defaults under their own names, the proxy's under mqtt_guard_, the
// Prometheus naming rules, explicit zeros for gauges at zero, build_info, health gauges.

import t from 'tap'
import { readFileSync } from 'node:fs'
import { observedProxy, namingProblems, valueOf } from '../helpers/metrics-scrape.js'
import { clientV } from '../helpers/e2e-mqtt.js'

const VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version

/** What Node.js dashboards (and our alerts) read from prom-client's default metrics. */
const DEFAULTS = [
  'process_cpu_user_seconds_total', 'process_cpu_system_seconds_total', 'process_cpu_seconds_total', 'process_start_time_seconds',
  'process_resident_memory_bytes', 'process_open_fds', 'process_max_fds',
  'nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_total_bytes', 'nodejs_heap_size_used_bytes',
  'nodejs_external_memory_bytes', 'nodejs_gc_duration_seconds', 'nodejs_version_info', 'nodejs_active_handles'
]

const o = await observedProxy(t)

t.test('every name follows the rules, defaults under prom-client\'s names', async (t) => {
  const families = await o.scrape()
  t.same(namingProblems(families), [], 'no doubled or missing prefix, _total on counters only, base units')
  for (const name of DEFAULTS) t.ok(families.has(name), `${name} exposed`)
  for (const name of ['mqtt_guard_client_id_events_total', 'mqtt_guard_dedupe_removed_total', 'mqtt_guard_dedupe_redis_failures_total', 'mqtt_guard_trace_lines_total']) {
    t.equal(families.get(name)?.type, 'counter', `${name}: the plugin's counter`)
  }
})

t.test('at idle: zeros for every listener, leg and plugin event; health and build info', async (t) => {
  const m = await o.scrape()
  for (const listener of o.listeners) {
    t.equal(valueOf(m, 'mqtt_guard_connections', { listener }), 0, `connections of ${listener}: 0, not absent`)
    t.equal(valueOf(m, 'mqtt_guard_connects_total', { listener }), 0, `connects of ${listener}: 0`)
  }
  for (const leg of ['client', 'broker']) t.equal(valueOf(m, 'mqtt_guard_round_trip_seconds_count', { leg }), 0, `${leg} leg: a zero histogram`)
  t.equal(valueOf(m, 'mqtt_guard_packets_total', { type: 'publish', direction: 'in' }), 0)
  t.equal(valueOf(m, 'mqtt_guard_dedupe_removed_total', { direction: 'in' }), 0)
  t.equal(valueOf(m, 'mqtt_guard_client_id_events_total', { event: 'bans' }), 0)
  t.equal(valueOf(m, 'mqtt_guard_trace_lines_total', { outcome: 'written' }), 0)
  t.equal(valueOf(m, 'mqtt_guard_redis_errors_total', { source: 'connection' }), 0)
  t.equal(valueOf(m, 'mqtt_guard_flapping_clients'), 0)
  t.equal(valueOf(m, 'mqtt_guard_max_connections'), 100_000, 'limits.maxConnections (the default)')
  t.same({ ready: valueOf(m, 'mqtt_guard_ready'), upstream: valueOf(m, 'mqtt_guard_upstream_up'), redis: valueOf(m, 'mqtt_guard_redis_up') }, { ready: 1, upstream: 1, redis: 1 })
  t.equal(valueOf(m, 'mqtt_guard_build_info', { version: VERSION, node_version: process.versions.node }), 1, 'build info: package.json version, Node.js version')
  const days = (valueOf(m, 'mqtt_guard_tls_certificate_expiry_seconds', { listener: 'mqtts://127.0.0.1:0' }) ?? 0) / 86_400
  t.ok(days > 29 && days <= 30, `the mqtts listener's certificate: ${days.toFixed(2)} days left`)
})

t.test('a client on one listener: that listener counts it, the others stay at zero', async (t) => {
  const [first, ...others] = o.listeners
  await clientV(t, o.proxy.url, 5, { clientId: 'names-one' })
  // Its CONNACK came back, so the proxy holds the connection: no waiting needed.
  const m = await o.scrape()
  t.equal(valueOf(m, 'mqtt_guard_connections', { listener: first as string }), 1)
  t.equal(valueOf(m, 'mqtt_guard_connects_total', { listener: first as string }), 1)
  for (const listener of others) t.equal(valueOf(m, 'mqtt_guard_connections', { listener }), 0, `${listener}: still 0`)
  t.equal(valueOf(m, 'mqtt_guard_client_id_events_total', { event: 'admitted' }), 1, 'client-id admitted it')
})
