// What the admin endpoint and doctor read of one proxy process, computed from its metrics, its
// live connections and its plugins: the console's overview and time series, and the findings.
// Kept apart from src/server.ts, which owns the things these read.

import type { Logger } from 'pino'
import type { PluginHost } from './plugin/host.js'
import type { ResolvedConfig } from './plugin/loader.js'
import type { Upstream } from './upstream/upstream.js'
import { BrokerPool } from './upstream/pool.js'
import { poolFindings } from './observe/upstream-findings.js'
import type { GuardMetrics } from './observe/metrics.js'
import { certificateExpiry, connectCount, roundTripLegs } from './observe/readings.js'
import type { ConnectionView, Finding, Overview } from './views.js'
import { type Diagnostics, meanMs } from './observe/diagnostics.js'
import { SeriesRecorder, type Counters } from './observe/series.js'
import { FRAME_TYPE } from './wire/codec.js'
import type { RedisStatus } from './redis/watch.js'
import { describeRedis } from './config/redis.js'

/** What a view needs of a connection. */
export interface Viewable { readonly state: string, view: () => ConnectionView }

export interface ViewsDeps {
  readonly instanceId: string
  readonly metrics: GuardMetrics
  readonly diagnostics: Diagnostics
  readonly log: Logger
  connections: () => Iterable<Viewable>
  /** The plugin chain and broker side new connections get, and the configuration in force. */
  host: () => PluginHost
  upstream: () => Upstream
  config: () => ResolvedConfig
  readiness: () => Promise<{ ready: boolean, checks: Record<string, boolean | string>, redis?: RedisStatus }>
}

export class ServerViews {
  /** The console's charts: one point a second for the last hour, recorded always. */
  private readonly series = new SeriesRecorder(async () => await this.counters()).start()

  constructor (private readonly deps: ViewsDeps) {}

  /** The console's overview, read from the metrics and the live connections. */
  async overview (): Promise<Overview> {
    const upstream = this.deps.upstream()
    const legs = await roundTripLegs(this.deps.metrics)
    // Figures only plugins count (dedupe's duplicates), zero without such a plugin.
    const counted = this.deps.host().overview()
    return {
      at: new Date().toISOString(),
      instance: this.deps.instanceId,
      connections: this.liveConnections().length,
      series: this.series.window(),
      connects: connectCount(this.deps.metrics),
      refusals: (await this.deps.metrics.refusals.get()).values.map((v) => ({ code: String(v.labels.code), reasonCode: String(v.labels.reason_code), count: v.value })),
      rates: { in: this.series.latest('publishIn'), out: this.series.latest('publishOut') },
      verdicts: (await this.deps.metrics.verdicts.get()).values.map((v) => ({ plugin: String(v.labels.plugin), action: String(v.labels.action), count: v.value })),
      duplicatesRemoved: counted.duplicatesRemoved ?? { in: 0, out: 0 },
      roundTrips: { client: meanMs(legs.client), broker: meanMs(legs.broker) },
      health: (await this.deps.readiness()).checks,
      certificates: (await certificateExpiry(this.deps.metrics)).map((c) => ({ listener: c.listener, subject: c.subject, days: Math.floor(c.seconds / 86_400) })),
      brokers: upstream instanceof BrokerPool
        ? upstream.view().brokers.map((b) => ({ url: b.url, state: b.drainingSince !== undefined ? 'draining' : b.state, connections: b.connections, lastError: b.lastError }))
        : []
    }
  }

  /** What the time series records each second: counters the core keeps anyway. */
  private async counters (): Promise<Counters> {
    const refusals = new Map<string, number>()
    for (const v of (await this.deps.metrics.refusals.get()).values) {
      const code = String(v.labels.code)
      refusals.set(code, (refusals.get(code) ?? 0) + v.value)
    }
    return {
      connections: this.liveConnections().length,
      connects: connectCount(this.deps.metrics),
      refusals,
      publishIn: this.deps.metrics.packetCount(0, FRAME_TYPE.publish),
      publishOut: this.deps.metrics.packetCount(1, FRAME_TYPE.publish),
      roundTrips: await roundTripLegs(this.deps.metrics)
    }
  }

  /** Connections that got their CONNACK and are still open. */
  private liveConnections (): Viewable[] {
    return [...this.deps.connections()].filter((c) => c.state === 'relaying')
  }

  /** Findings for `mqtt-guard doctor`: what was recorded, and the live state read now. */
  async diagnose (): Promise<{ instance: string, at: string, findings: Finding[] }> {
    const upstream = this.deps.upstream()
    const config = this.deps.config()
    const legs = await roundTripLegs(this.deps.metrics)
    const plugins: Finding[] = []
    for (const plugin of this.deps.host().plugins) {
      try {
        plugins.push(...plugin.diagnose?.() ?? [])
      } catch (err) {
        this.deps.log.error({ plugin: plugin.name, err }, 'plugin diagnose failed')
      }
    }
    if (upstream instanceof BrokerPool) plugins.push(...poolFindings(upstream.view()))
    const readiness = await this.deps.readiness()
    const redis = readiness.redis === undefined || config.redis === undefined ? undefined : { status: readiness.redis, where: describeRedis(config.redis) }
    const findings = this.deps.diagnostics.report({
      connections: this.liveConnections().map((c) => c.view()),
      maxConnections: config.limits.maxConnections,
      checks: readiness.checks,
      ...(redis === undefined ? {} : { redis }),
      roundTrips: legs,
      certificates: await certificateExpiry(this.deps.metrics),
      plugins
    })
    // Several brokers: the pool's own findings say which broker and why; the generic one repeats it.
    const shown = upstream instanceof BrokerPool ? findings.filter((f) => f.id !== 'upstream-unhealthy') : findings
    return { instance: this.deps.instanceId, at: new Date().toISOString(), findings: shown }
  }

  close (): void {
    this.series.close()
  }
}
