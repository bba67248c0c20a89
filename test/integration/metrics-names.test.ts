// The names /metrics gives, read from a real scrape of a proxy with every plugin that registers
// metrics: prom-client's defaults under their own names, the proxy's under mqtt_guard_, the
// Prometheus naming rules, explicit zeros for gauges at zero, build_info, health gauges.

import t from 'tap'
import { readFileSync } from 'node:fs'
import { observedProxy, namingProblems, parseExposition, valueOf } from '../helpers/metrics-scrape.js'
import net from 'node:net'
import { once } from 'node:events'
import { clientV } from '../helpers/e2e-mqtt.js'
import { pollUntil } from '../helpers/processes.js'
import { startProxy } from '../helpers/proxy.js'
import { FLAP_CONNECTS } from '../../src/observe/diagnostics.js'

const VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version

/** What Node.js dashboards (and our alerts) read from prom-client's default metrics. */
const DEFAULTS = [
  'process_cpu_user_seconds_total', 'process_cpu_system_seconds_total', 'process_cpu_seconds_total', 'process_start_time_seconds',
  'process_resident_memory_bytes', 'process_open_fds', 'process_max_fds',
  'nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_total_bytes', 'nodejs_heap_size_used_bytes',
  'nodejs_external_memory_bytes', 'nodejs_gc_duration_seconds', 'nodejs_version_info', 'nodejs_active_handles'
]

const o = await observedProxy(t)

/** A proxy's own scrape, without the admin endpoint. */
async function scrapeOf (p: { server: { metrics: { text: () => Promise<string> } } }): Promise<ReturnType<typeof parseExposition>> {
  return parseExposition(await p.server.metrics.text())
}

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
  for (const reason of ['connections', 'idle_closed', 'descriptors', 'timeout', 'viewers', 'cross_origin', 'bad_request', 'body_too_large']) {
    t.equal(valueOf(m, 'mqtt_guard_admin_refusals_total', { reason }), 0, `admin refusals (${reason}): 0`)
  }
  for (const stream of ['events', 'trace', 'plugin']) {
    t.equal(valueOf(m, 'mqtt_guard_admin_stream_dropped_total', { stream }), 0)
    t.equal(valueOf(m, 'mqtt_guard_admin_viewers_closed_total', { stream }), 0)
    t.equal(valueOf(m, 'mqtt_guard_admin_viewers', { stream }), 0)
  }
  t.ok((valueOf(m, 'mqtt_guard_admin_connections') ?? 0) >= 1, 'the scrape\'s own admin socket')
  t.equal(valueOf(m, 'mqtt_guard_max_connections'), 100_000, 'limits.maxConnections (the default)')
  t.same({ ready: valueOf(m, 'mqtt_guard_ready'), upstream: valueOf(m, 'mqtt_guard_upstream_up'), redis: valueOf(m, 'mqtt_guard_redis_up') }, { ready: 1, upstream: 1, redis: 1 })
  t.same({ info: valueOf(m, 'mqtt_guard_redis_info', { topology: 'standalone', role: 'master' }), readOnly: valueOf(m, 'mqtt_guard_redis_read_only'), failovers: valueOf(m, 'mqtt_guard_redis_failovers_total') },
    { info: 1, readOnly: 0, failovers: 0 }, 'Redis: its form and role, writable, no failover (explicit zeros)')
  t.notOk(m.has('mqtt_guard_redis_cluster_ok'), 'the Cluster gauges only on a Cluster')
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

t.test('broker refusing and Redis unreachable: upstream_up, redis_up and ready are 0', async (t) => {
  const p = await startProxy({ config: { upstream: 'mqtt://127.0.0.1:1', redis: { url: 'redis://127.0.0.1:1', keyPrefix: 'down:' } } })
  t.teardown(() => p.stop())
  const m = await scrapeOf(p)
  t.same({ ready: valueOf(m, 'mqtt_guard_ready'), upstream: valueOf(m, 'mqtt_guard_upstream_up'), redis: valueOf(m, 'mqtt_guard_redis_up') }, { ready: 0, upstream: 0, redis: 0 })
})

t.test('a broker that accepts and never answers TLS: the scrape ends after 2 s with upstream_up 0', async (t) => {
  const silent = net.createServer(() => {})
  const sockets = new Set<net.Socket>()
  silent.on('connection', (s) => { sockets.add(s) })
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  t.teardown(() => { for (const s of sockets) s.destroy(); silent.close() })
  const p = await startProxy({ config: { upstream: `mqtts://127.0.0.1:${(silent.address() as net.AddressInfo).port}` } })
  t.teardown(() => p.stop())
  const started = performance.now()
  const m = await scrapeOf(p)
  const ms = performance.now() - started
  t.ok(ms >= 1900 && ms < 5000, `answered in ${Math.round(ms)} ms, bounded by the 2 s check`)
  t.equal(valueOf(m, 'mqtt_guard_upstream_up'), 0)
  t.equal(valueOf(m, 'mqtt_guard_ready'), 0)
})

t.test(`a client ID that drops its connection ${FLAP_CONNECTS} times is one flapping client`, async (t) => {
  for (let i = 0; i < FLAP_CONNECTS; i++) {
    const c = await clientV(t, o.proxy.url, 4, { clientId: 'names-flapper' })
    const gone = once(c as unknown as NodeJS.EventEmitter, 'close')
    c.stream.destroy() // no DISCONNECT: not an end the client asked for
    await gone
  }
  // The proxy records an end when it has closed both sides: wait for the last one.
  await pollUntil('the flapping gauge', 5000, async () => valueOf(await o.scrape(), 'mqtt_guard_flapping_clients') === 1 ? true : undefined)
  t.pass('mqtt_guard_flapping_clients is 1')
})
