// Prometheus metrics (prom-client), one Registry per proxy process. The packet path only bumps
// plain numbers in typed arrays; prom-client's objects are filled from them when /metrics is
// scraped, so a metric costs nothing per packet beyond an array increment. Names: prom-client's
// defaults as every Node.js dashboard knows them (`process_*`, `nodejs_*`), the proxy's own
// under `mqtt_guard_`, Prometheus' rules (base units in the name, `_total` on counters).

import { readFileSync } from 'node:fs'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { FRAME_TYPE } from '../wire/codec.js'
import { FLAP_CONNECTS, WINDOW_MS } from './diagnostics.js'
import type { RedisStatus } from '../redis/watch.js'
import type { RedisTopology } from '../config/config.js'

const TYPE_NAMES: string[] = []
for (const [name, type] of Object.entries(FRAME_TYPE)) TYPE_NAMES[type] = name

export type Leg = 'client' | 'broker'

/** Round trips are seconds: a LAN leg is well under a millisecond, a bad one several seconds. */
const RTT_BUCKETS = [0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** A scrape must not hang on a broker that drops SYNs: past this, the upstream counts as down. */
const HEALTH_TIMEOUT_MS = 2000

/** package.json's version, read once: dist/src/observe/metrics.js and src/observe/metrics.ts are both two levels down. */
const VERSION = ((): string => {
  try {
    return String((JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown }).version ?? 'unknown')
  } catch {
    return 'unknown'
  }
})()

/** What the gauges read from the live proxy at scrape time (never on the packet path). */
export interface MetricSources {
  /** The configured listeners: each has its connections gauge and connects counter, also at zero. */
  listeners: readonly string[]
  connectionsByListener: () => Map<string, number>
  /** The readiness checks, as /readyz gives them: `upstream`, `redis` (when configured), `listening`. */
  health: () => Promise<{ ready: boolean, checks: Record<string, boolean | string>, redis?: RedisStatus }>
  /** The configured Redis form: its gauges exist only with Redis (the Cluster's only on a Cluster). */
  redisTopology?: RedisTopology | undefined
  /** Client IDs that doctor would call flapping now. */
  flappingClients: () => number
  maxConnections: () => number
}

const NO_SOURCES: MetricSources = {
  listeners: [],
  connectionsByListener: () => new Map(),
  health: async () => ({ ready: false, checks: {} }),
  flappingClients: () => 0,
  maxConnections: () => 0
}

/** mqtt_guard_reloads_total's help: the same text in one process, a worker and a primary. */
export const RELOADS_HELP = 'Reloads (SIGHUP, POST /reload, mqtt-guard reload), by result: applied, partial (some changes refused, the rest applied), refused (the configuration did not validate; nothing changed)'

export class GuardMetrics {
  readonly registry = new Registry()
  /** [direction 0 in / 1 out][type 0..15], packets and bytes. */
  private readonly packets = new Float64Array(32)
  private readonly bytes = new Float64Array(32)
  /** CONNECTs per listener, counted in a plain map (a labelled inc() per CONNECT costs more). */
  readonly connects = new Map<string, number>()
  readonly refusals: Counter<'code' | 'reason_code'>
  readonly verdicts: Counter<'plugin' | 'action'>
  readonly redisErrors: Counter<'source'>
  readonly roundTrip: Histogram<'leg'>
  readonly dial: Histogram
  readonly certExpiry: Gauge<'listener' | 'subject'>
  readonly throttled: Counter
  readonly rehomes: Counter
  readonly reloads: Counter<'result'>
  private readonly health: { ready: Gauge, upstream: Gauge, redis: Gauge }
  private readonly redisGauges: RedisGauges | undefined

  constructor (private readonly sources: MetricSources = NO_SOURCES) {
    const registers = [this.registry]
    // No prefix: `process_cpu_user_seconds_total`, `nodejs_eventloop_lag_p99_seconds`, as
    // prom-client names them. A Registry of our own keeps two proxies in one process apart.
    collectDefaultMetrics({ register: this.registry })
    for (const listener of sources.listeners) this.connects.set(listener, 0)
    this.packetCounters()
    this.liveGauges()
    this.refusals = new Counter({
      name: 'mqtt_guard_refusals_total',
      help: 'Connections refused with a CONNACK code: code is the GUARD_ERR_* code or broker, reason_code the MQTT 5 reason code or 3.1.1 return code sent',
      labelNames: ['code', 'reason_code'],
      registers
    })
    this.verdicts = new Counter({ name: 'mqtt_guard_plugin_verdicts_total', help: 'Plugin decisions other than continue, by plugin and action', labelNames: ['plugin', 'action'], registers })
    this.redisErrors = new Counter({ name: 'mqtt_guard_redis_errors_total', help: 'Redis errors, by where they happened', labelNames: ['source'], registers })
    this.roundTrip = new Histogram({
      name: 'mqtt_guard_round_trip_seconds',
      help: 'Sampled round trips: broker leg (proxy → broker → proxy: QoS 1 PUBLISH to PUBACK, PINGREQ to PINGRESP), client leg (QoS 1 delivery to PUBACK)',
      labelNames: ['leg'],
      buckets: RTT_BUCKETS,
      registers
    })
    for (const leg of ['client', 'broker'] as const) this.roundTrip.zero({ leg })
    this.dial = new Histogram({ name: 'mqtt_guard_upstream_dial_seconds', help: 'Time to open the connection to the broker', buckets: RTT_BUCKETS, registers })
    this.rehomes = new Counter({ name: 'mqtt_guard_upstream_rehomes_total', help: 'Connections moved to another broker without closing the client (several brokers, failover: rehome)', registers })
    // workers: N counts a reload in each worker and in the primary: the most, not the sum.
    this.reloads = new Counter({ name: 'mqtt_guard_reloads_total', help: RELOADS_HELP, labelNames: ['result'], registers, aggregator: 'max' })
    for (const result of ['applied', 'partial', 'refused']) this.reloads.inc({ result }, 0)
    this.throttled = new Counter({ name: 'mqtt_guard_publish_throttled_total', help: 'PUBLISH packets held back by limits.maxPublishesPerSecond until their token', registers })
    this.certExpiry = new Gauge({ name: 'mqtt_guard_tls_certificate_expiry_seconds', help: 'Seconds until a listener certificate expires', labelNames: ['listener', 'subject'], registers, aggregator: 'min' })
    this.health = {
      ready: new Gauge({ name: 'mqtt_guard_ready', help: '1 when /readyz says ready (listening, broker reachable, Redis connected when configured), 0 otherwise and while draining', registers, aggregator: 'min' }),
      upstream: new Gauge({ name: 'mqtt_guard_upstream_up', help: '1 when a connection to the broker could be opened at the last scrape (embedded: the broker is running), 0 otherwise', registers, aggregator: 'min' }),
      redis: new Gauge({ name: 'mqtt_guard_redis_up', help: '1 when the proxy\'s Redis connection is ready, 0 otherwise; absent without Redis', registers, aggregator: 'min' })
    }
    this.redisGauges = sources.redisTopology === undefined ? undefined : redisGauges(this.registry, sources.redisTopology)
    new Gauge({ name: 'mqtt_guard_build_info', help: 'Always 1: the proxy\'s version and the Node.js version that runs it', labelNames: ['version', 'node_version'], registers, aggregator: 'first' })
      .set({ version: VERSION, node_version: process.versions.node }, 1)
  }

  /** Packets and bytes by type and direction; zero for every packet type, so rate() has a series from the start. */
  private packetCounters (): void {
    const { packets, bytes, registry } = this
    const fill = (counter: Counter<'type' | 'direction'>, values: Float64Array): void => {
      counter.reset()
      for (let i = 0; i < 32; i++) {
        const value = values[i] as number
        // Type 0 is reserved: shown only when something sent it.
        if (i % 16 !== 0 || value > 0) counter.inc({ direction: i < 16 ? 'in' : 'out', type: TYPE_NAMES[i % 16] ?? 'reserved' }, value)
      }
    }
    new Counter({
      name: 'mqtt_guard_packets_total', help: 'MQTT packets by type and direction (in: client → broker)', labelNames: ['type', 'direction'], registers: [registry],
      collect () { fill(this, packets) }
    })
    new Counter({
      name: 'mqtt_guard_bytes_total', help: 'Bytes of MQTT packets by type and direction', labelNames: ['type', 'direction'], registers: [registry],
      collect () { fill(this, bytes) }
    })
  }

  /** Gauges and counters read from the live proxy when scraped. */
  private liveGauges (): void {
    const { sources, connects, registry } = this
    const registers = [registry]
    new Gauge({
      name: 'mqtt_guard_connections', help: 'Open client connections by listener (0 for a configured listener without any)', labelNames: ['listener'], registers,
      collect () {
        this.reset()
        for (const listener of sources.listeners) this.set({ listener }, 0)
        for (const [listener, n] of sources.connectionsByListener()) this.set({ listener }, n)
      }
    })
    new Counter({
      name: 'mqtt_guard_connects_total', help: 'CONNECT packets received, by listener', labelNames: ['listener'], registers,
      collect () {
        this.reset()
        for (const [listener, n] of connects) this.inc({ listener }, n)
      }
    })
    new Gauge({
      name: 'mqtt_guard_max_connections', help: 'limits.maxConnections: connections past it are refused (SIGHUP may change it)', registers,
      collect () { this.set(sources.maxConnections()) }
    })
    new Gauge({
      name: 'mqtt_guard_flapping_clients', help: `Client IDs that connected ${FLAP_CONNECTS} or more times in the last ${WINDOW_MS / 60_000} minutes, most ends not asked for by the client (doctor: flapping-client)`,
      registers,
      collect () { this.set(sources.flappingClients()) }
    })
  }

  /**
   * The readiness checks, once per scrape: one connection to the broker, as /readyz makes. One
   * collect() per gauge would make three; prom-client has no shared collect, so text() does it.
   */
  private async refreshHealth (): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<undefined>((resolve) => { timer = setTimeout(() => { resolve(undefined) }, HEALTH_TIMEOUT_MS) })
    const health = await Promise.race([this.sources.health().catch(() => undefined), late]).finally(() => { clearTimeout(timer) })
    const checks = health?.checks ?? { upstream: false }
    this.health.ready.set(health?.ready === true ? 1 : 0)
    this.health.upstream.set(checks.upstream === true ? 1 : 0)
    if (health?.redis !== undefined) this.health.redis.set(health.redis.up ? 1 : 0)
    else if ('redis' in checks) this.health.redis.set(checks.redis === true ? 1 : 0)
    // No answer within the scrape's bound: Redis counts as down, as the upstream does.
    if (this.redisGauges !== undefined) fillRedis(this.redisGauges, health?.redis)
  }

  /** Hot path: one frame seen in `direction` (0 in, 1 out). */
  frame (direction: 0 | 1, type: number, size: number): void {
    const i = direction * 16 + type
    this.packets[i] = (this.packets[i] as number) + 1
    this.bytes[i] = (this.bytes[i] as number) + size
  }

  /** Packets of one type seen so far in a direction (0 in, 1 out). */
  packetCount (direction: 0 | 1, type: number): number {
    return this.packets[direction * 16 + type] as number
  }

  async text (): Promise<string> {
    await this.refreshHealth()
    return await this.registry.metrics()
  }

  /** The metrics as a worker sends them to its primary for /metrics (workers >= 2). */
  async json (): Promise<unknown> {
    await this.refreshHealth()
    return await this.registry.getMetricsAsJSON()
  }

  get contentType (): string {
    return this.registry.contentType
  }
}

interface RedisGauges {
  info: Gauge<'topology' | 'role'>
  readOnly: Gauge
  failovers: Counter
  clusterOk: Gauge | undefined
  slotsFailing: Gauge | undefined
  topology: RedisTopology
  seenFailovers: number
}

/** The Redis gauges, at their idle values from the start (so increase() sees the first failover). */
function redisGauges (registry: Registry, topology: RedisTopology): RedisGauges {
  const registers = [registry]
  const cluster = topology === 'cluster'
  const gauges: RedisGauges = {
    info: new Gauge({ name: 'mqtt_guard_redis_info', help: 'Always 1: the configured Redis form (standalone, sentinel, cluster) and the role of the server the proxy writes to (master, replica, unknown while unreachable)', labelNames: ['topology', 'role'], registers, aggregator: 'max' }),
    readOnly: new Gauge({ name: 'mqtt_guard_redis_read_only', help: '1 when Redis refuses the proxy\'s writes: ROLE says replica, or a READONLY reply came in the last minute', registers, aggregator: 'max' }),
    failovers: new Counter({ name: 'mqtt_guard_redis_failovers_total', help: 'Primaries that changed under the proxy: its connection moved to another address (Sentinel switch, DNS), or a Cluster\'s slot map gained a primary', registers, aggregator: 'max' }),
    clusterOk: cluster ? new Gauge({ name: 'mqtt_guard_redis_cluster_ok', help: '1 when CLUSTER INFO says cluster_state:ok, 0 when fail or unanswered (Cluster form only)', registers, aggregator: 'min' }) : undefined,
    slotsFailing: cluster ? new Gauge({ name: 'mqtt_guard_redis_cluster_slots_failing', help: 'Slots whose primary is suspected (pfail) or agreed down (fail), per CLUSTER INFO (Cluster form only)', registers, aggregator: 'max' }) : undefined,
    topology,
    seenFailovers: 0
  }
  fillRedis(gauges, undefined)
  gauges.failovers.inc(0)
  return gauges
}

function fillRedis (g: RedisGauges, status: RedisStatus | undefined): void {
  g.info.reset()
  g.info.set({ topology: g.topology, role: status?.role ?? 'unknown' }, 1)
  g.readOnly.set(status?.readOnly === true ? 1 : 0)
  if (status !== undefined && status.failovers > g.seenFailovers) {
    g.failovers.inc(status.failovers - g.seenFailovers)
    g.seenFailovers = status.failovers
  }
  g.clusterOk?.set(status?.cluster?.state === 'ok' ? 1 : 0)
  g.slotsFailing?.set((status?.cluster?.slotsPfail ?? 0) + (status?.cluster?.slotsFail ?? 0))
}

/**
 * A counter a plugin fills from its own stats at scrape time: `read()` gives label value →
 * total, zeros included (so rate() and increase() see the first event). Registered once per
 * registry; a second instance of the plugin adds its totals.
 */
export function statsCounter (registry: Registry, name: string, help: string, label: string, read: () => Record<string, number>): void {
  const existing = registry.getSingleMetric(name) as (Counter<string> & { sources?: Array<() => Record<string, number>> }) | undefined
  if (existing?.sources !== undefined) {
    existing.sources.push(read)
    return
  }
  const sources = [read]
  const counter = new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect () {
      this.reset()
      for (const source of sources) {
        for (const [value, n] of Object.entries(source())) this.inc({ [label]: value }, n)
      }
    }
  })
  Object.assign(counter, { sources })
}
