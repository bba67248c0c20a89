// Owns the listeners, the upstream, the plugins, the admin endpoint and the live connections of
// one proxy process. start() resolves once every listener is bound; stop() drains and releases.

import type { Duplex } from 'node:stream'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { ListenSpec } from './config/config.js'
import { changedLimits } from './config/limits.js'
import { Connection } from './proxy/connection.js'
import { PluginHost } from './plugin/host.js'
import { loadPlugins, type ResolvedConfig } from './plugin/loader.js'
import { reconfigurePlugins } from './plugin/reconfigure.js'
import { embeddedUpstream, tcpUpstream, type Upstream } from './upstream/upstream.js'
import { createEmbeddedBroker } from './upstream/embedded.js'
import { brokerPool } from './upstream/pool-start.js'
import { BrokerPool } from './upstream/pool.js'
import { poolMetrics, type PoolMetrics } from './observe/upstream-metrics.js'
import { poolFindings } from './observe/upstream-findings.js'
import type { ErrorCode } from './errors.js'
import type { AdminRequest, AdminResponse, Plugin } from './plugin/api.js'
import { GuardMetrics } from './observe/metrics.js'
import { certificateExpiry, connectCount, roundTripLegs } from './observe/readings.js'
import { AdminServer } from './admin/endpoint.js'
import type { ConnectionView, Finding, Overview } from './views.js'
import { Listener, type Peer } from './proxy/listeners.js'
import { limitsPlugin } from './proxy/limits.js'
import { KickChannel } from './admin/kick.js'
import { Diagnostics, meanMs } from './observe/diagnostics.js'
import { SeriesRecorder, type Counters } from './observe/series.js'
import { FRAME_TYPE } from './wire/codec.js'
import type { RedisClient } from './redis/client.js'
import type { RedisStatus, RedisWatch } from './redis/watch.js'
import { openSharedRedis } from './redis/shared.js'
import { DEFAULT_KEY_PREFIX, describeRedis } from './config/redis.js'

export interface StartOptions {
  log: Logger
  /** Plugins made in code (tests, embedding); appended after the configured ones. */
  extraPlugins?: Plugin[]
}

export interface BoundListener { spec: ListenSpec, host: string, port: number }

export class GuardServer {
  readonly connections = new Set<Connection>()
  readonly listeners: BoundListener[] = []
  readonly diagnostics = new Diagnostics()
  /** The console's charts: one point a second for the last hour, recorded always. */
  private readonly series = new SeriesRecorder(async () => await this.counters()).start()
  admin: AdminServer | undefined
  private readonly servers: Listener[] = []
  /** The admin API's kicks, across instances when there is Redis (admin/kick.ts). */
  private readonly kicks: KickChannel
  private stopping = false
  /**
   * The configuration in force: one frozen value, replaced whole by reload(). A connection is
   * handed the limits of the one in force when it is accepted; the core plugin `limits` and
   * the accept check read this at each CONNECT.
   */
  private current: ResolvedConfig

  private constructor (
    readonly instanceId: string,
    config: ResolvedConfig,
    readonly log: Logger,
    readonly host: PluginHost,
    readonly upstream: Upstream,
    readonly redis: RedisClient | undefined,
    /** What /healthz, /readyz, /metrics and doctor say of Redis (undefined without Redis). */
    private readonly redisWatch: RedisWatch | undefined,
    readonly metrics: GuardMetrics,
    /** The plugins of config.plugins, in that order (what SIGHUP may reconfigure). */
    private readonly configured: Plugin[]
  ) {
    this.current = config
    this.kicks = new KickChannel(this.connections, redis, config.redis?.keyPrefix ?? DEFAULT_KEY_PREFIX, instanceId, log)
  }

  /** The configuration in force (frozen; a reload replaces it whole). */
  get config (): ResolvedConfig {
    return this.current
  }

  /** `config` as resolveConfig (src/plugin/loader.ts) made it: nothing is validated here. */
  static async start (config: ResolvedConfig, options: StartOptions): Promise<GuardServer> {
    const log = options.log
    // The gauges read the server made below, when scraped.
    const made: { server?: GuardServer } = {}
    const inForce = (): ResolvedConfig => made.server?.config ?? config
    const metrics = new GuardMetrics({
      listeners: config.listen.map((spec) => spec.url),
      connectionsByListener: () => made.server === undefined ? new Map() : countByListener(made.server.connections),
      health: async () => await (made.server?.readiness() ?? { ready: false, checks: {} }),
      flappingClients: () => made.server?.diagnostics.flappingClients() ?? 0,
      redisTopology: config.redis?.topology,
      maxConnections: () => inForce().limits.maxConnections
    })
    const shared = config.redis === undefined ? undefined : openSharedRedis(config.redis, log, (n) => { metrics.redisErrors.inc({ source: 'connection' }, n) })
    const redis = shared?.client
    const watch = shared?.watch
    const instanceId = randomBytes(8).toString('hex')
    let plugins: Plugin[] = []
    let upstream: Upstream
    let poolSeries: PoolMetrics | undefined
    try {
      plugins = await loadPlugins(config.plugins, {
        configDir: config.configDir, log, redis, redisKeyPrefix: config.redis?.keyPrefix ?? DEFAULT_KEY_PREFIX, instanceId, metrics: metrics.registry,
        retap: () => { for (const c of made.server?.connections ?? []) c.retap() }
      })
      upstream = config.upstream.kind === 'embedded'
        ? embeddedUpstream(await createEmbeddedBroker(config.redis, log))
        : config.upstream.kind === 'pool'
          ? brokerPool(config.upstream, instanceId, log, (url, seconds) => { poolSeries?.connack.observe({ broker: url }, seconds) })
          : tcpUpstream(config.upstream)
      if (upstream instanceof BrokerPool) {
        const pool = upstream
        poolSeries = poolMetrics(metrics.registry, () => pool.view())
      }
    } catch (err) {
      // Nothing may keep the process alive after a failed start.
      await new PluginHost(plugins).close().catch(() => {})
      redis?.disconnect()
      throw err
    }
    // The limits come first: a CONNECT they refuse costs no other plugin anything.
    const host = new PluginHost([limitsPlugin(() => inForce().limits), ...plugins, ...(options.extraPlugins ?? [])])
    const server = new GuardServer(instanceId, config, log, host, upstream, redis, watch, metrics, plugins)
    made.server = server
    try {
      for (const spec of config.listen) await server.listen(spec)
      if (config.admin !== undefined) {
        server.admin = await AdminServer.start(config.admin, {
          metrics,
          readiness: async () => await server.readiness(),
          redis: async () => await server.redisStatus(),
          connections: () => server.connectionViews(),
          kick: async (id) => await server.kick(id),
          diagnostics: async () => await server.diagnose(),
          overview: async () => await server.overview(),
          client: (id) => ({ clientId: id, connections: server.connectionViews().filter((c) => c.clientId === id), history: server.diagnostics.history(id) }),
          plugins: async (req) => await server.pluginAdmin(req),
          openConnections: () => server.connections.size,
          drain: (index, rate) => upstream instanceof BrokerPool ? (rate === undefined ? upstream.undrain(index) : upstream.drainBroker(index, rate)) : undefined,
          upstreams: () => upstream instanceof BrokerPool ? { kind: 'pool', ...upstream.view() } : { kind: config.upstream.kind === 'embedded' ? 'embedded' : 'mqtt', description: upstream.description }
        }, log)
      }
      server.kicks.listen()
    } catch (err) {
      await server.stop()
      throw err
    }
    log.info({
      listen: server.listeners.map((l) => `${l.host}:${l.port}`),
      admin: server.admin === undefined ? undefined : `${server.admin.host}:${server.admin.port}`,
      upstream: upstream.description,
      plugins: plugins.map((p) => p.name)
    }, 'mqtt-guard listening')
    return server
  }

  private async listen (spec: ListenSpec): Promise<void> {
    const listener = new Listener(spec, (stream, peer) => { this.accept(stream, peer, spec) }, this.log, this.metrics, this.config.limits.connectTimeoutMs)
    this.servers.push(listener)
    const { host, port } = await listener.listen()
    this.listeners.push({ spec, host, port })
  }

  private accept (stream: Duplex, peer: Peer, spec: ListenSpec): void {
    // The connection keeps these for its life: its per-packet reads are of a frozen object.
    const limits = this.current.limits
    let refuse: ErrorCode | undefined
    if (this.stopping) refuse = 'GUARD_ERR_SHUTTING_DOWN'
    else if (this.connections.size >= limits.maxConnections) refuse = 'GUARD_ERR_MAX_CONNECTIONS'
    const conn = new Connection(stream, peer, {
      host: this.host,
      upstream: this.upstream,
      limits,
      log: this.log,
      metrics: this.metrics,
      listener: spec.url,
      refuse,
      onRefusedPublish: (c, topic, plugin) => { this.diagnostics.refusedPublish(c.clientId, topic, plugin) },
      onClosed: (c, info) => {
        this.connections.delete(c)
        this.diagnostics.closed({ clientId: c.clientId, address: c.address, keepalive: c.keepalive, admitted: c.accepted, identified: c.identified }, info)
        this.host.onClose(c, info)
      }
    })
    this.connections.add(conn)
  }

  // ---- what the admin endpoint sees ----------------------------------------------------------

  /**
   * Ready when listening, the broker answers and, with Redis, Redis is usable: connected,
   * answering, not read-only, and on a Cluster every slot served (a Cluster client stays
   * `ready` through a failover, so its own status cannot say so). `redis` says why.
   */
  async readiness (): Promise<{ ready: boolean, checks: Record<string, boolean | string>, redis?: RedisStatus }> {
    const [upstream, redis] = await Promise.all([this.upstream.check(), this.redisStatus()])
    const checks: Record<string, boolean | string> = { listening: !this.stopping && this.listeners.length > 0, upstream }
    if (redis !== undefined) checks.redis = redis.up && !redis.readOnly
    if (this.stopping) checks.draining = true
    const ready = checks.listening === true && checks.upstream === true && checks.redis !== false
    return redis === undefined ? { ready, checks } : { ready, checks, redis }
  }

  /** Redis as /healthz, /metrics and doctor show it; undefined without Redis. */
  async redisStatus (): Promise<RedisStatus | undefined> {
    if (this.redis === undefined || this.redisWatch === undefined) return undefined
    return await this.redisWatch.status(this.redis)
  }

  /** The console's overview, read from the metrics and the live connections. */
  async overview (): Promise<Overview> {
    const legs = await roundTripLegs(this.metrics)
    // Figures only plugins count (dedupe's duplicates), zero without such a plugin.
    const counted = this.host.overview()
    return {
      at: new Date().toISOString(),
      instance: this.instanceId,
      connections: this.liveConnections().length,
      series: this.series.window(),
      connects: connectCount(this.metrics),
      refusals: (await this.metrics.refusals.get()).values.map((v) => ({ code: String(v.labels.code), reasonCode: String(v.labels.reason_code), count: v.value })),
      rates: { in: this.series.latest('publishIn'), out: this.series.latest('publishOut') },
      verdicts: (await this.metrics.verdicts.get()).values.map((v) => ({ plugin: String(v.labels.plugin), action: String(v.labels.action), count: v.value })),
      duplicatesRemoved: counted.duplicatesRemoved ?? { in: 0, out: 0 },
      roundTrips: { client: meanMs(legs.client), broker: meanMs(legs.broker) },
      health: (await this.readiness()).checks,
      certificates: (await certificateExpiry(this.metrics)).map((c) => ({ listener: c.listener, subject: c.subject, days: Math.floor(c.seconds / 86_400) })),
      brokers: this.upstream instanceof BrokerPool
        ? this.upstream.view().brokers.map((b) => ({ url: b.url, state: b.drainingSince !== undefined ? 'draining' : b.state, connections: b.connections, lastError: b.lastError }))
        : []
    }
  }

  /** What the time series records each second: counters the core keeps anyway. */
  private async counters (): Promise<Counters> {
    const refusals = new Map<string, number>()
    for (const v of (await this.metrics.refusals.get()).values) {
      const code = String(v.labels.code)
      refusals.set(code, (refusals.get(code) ?? 0) + v.value)
    }
    return {
      connections: this.liveConnections().length,
      connects: connectCount(this.metrics),
      refusals,
      publishIn: this.metrics.packetCount(0, FRAME_TYPE.publish),
      publishOut: this.metrics.packetCount(1, FRAME_TYPE.publish),
      roundTrips: await roundTripLegs(this.metrics)
    }
  }

  /** Connections that got their CONNACK and are still open. */
  private liveConnections (): Connection[] {
    return [...this.connections].filter((c) => c.state === 'relaying')
  }

  /** Findings for `mqtt-guard doctor`: what was recorded, and the live state read now. */
  async diagnose (): Promise<{ instance: string, at: string, findings: Finding[] }> {
    const legs = await roundTripLegs(this.metrics)
    const plugins: Finding[] = []
    for (const plugin of this.host.plugins) {
      try {
        plugins.push(...plugin.diagnose?.() ?? [])
      } catch (err) {
        this.log.error({ plugin: plugin.name, err }, 'plugin diagnose failed')
      }
    }
    if (this.upstream instanceof BrokerPool) plugins.push(...poolFindings(this.upstream.view()))
    const readiness = await this.readiness()
    const redis = readiness.redis === undefined || this.config.redis === undefined ? undefined : { status: readiness.redis, where: describeRedis(this.config.redis) }
    const findings = this.diagnostics.report({
      connections: this.liveConnections().map((c) => c.view()),
      maxConnections: this.config.limits.maxConnections,
      checks: readiness.checks,
      ...(redis === undefined ? {} : { redis }),
      roundTrips: legs,
      certificates: await certificateExpiry(this.metrics),
      plugins
    })
    // Several brokers: the pool's own findings say which broker and why; the generic one repeats it.
    const shown = this.upstream instanceof BrokerPool ? findings.filter((f) => f.id !== 'upstream-unhealthy') : findings
    return { instance: this.instanceId, at: new Date().toISOString(), findings: shown }
  }

  connectionViews (): ConnectionView[] {
    return [...this.connections].map((c) => {
      const view = c.view()
      const refused = this.diagnostics.lastRefusal(c.clientId)
      return refused === undefined ? view : { ...view, lastRefusal: refused }
    })
  }

  /** The first plugin that answers an admin request the core does not know. */
  async pluginAdmin (req: AdminRequest): Promise<AdminResponse | undefined> {
    for (const plugin of this.host.plugins) {
      const res = await plugin.admin?.(req)
      if (res !== undefined) return res
    }
    return undefined
  }

  /** Closes the client ID's connections here; with Redis, every other instance closes its own. */
  async kick (clientId: string): Promise<{ closedHere: number, announced: boolean }> {
    return await this.kicks.kick(clientId)
  }

  /**
   * SIGHUP: plugins re-read their files, TLS listeners their certificates, and `next` (the
   * config file resolved again, whole) is handed down: its limits, and the options of plugins
   * that take new ones, are in force from here; what only a restart can change is named, and
   * the config in force keeps the running value of it (so the next reload names it again).
   */
  async reload (next?: ResolvedConfig): Promise<void> {
    this.log.info('reloading')
    for (const listener of this.servers) listener.reload()
    if (next !== undefined) {
      const now = this.current
      const changed = changedLimits(now.limits, next.limits)
      const restart: string[] = (['listen', 'upstream', 'redis', 'admin', 'log'] as const).filter((k) => JSON.stringify(withoutFunctions(next[k])) !== JSON.stringify(withoutFunctions(now[k])))
      const plugins = await reconfigurePlugins(this.configured, now.plugins, next.plugins, restart, this.log)
      // One assignment: a connection accepted from here on gets the new limits, one accepted
      // before keeps the ones it was given.
      this.current = Object.freeze({ ...now, limits: next.limits, plugins })
      if (changed.length > 0) this.log.info({ limits: changed }, 'limits reloaded')
      if (restart.length > 0) this.log.warn({ settings: restart }, 'these settings changed in the file and take effect only after a restart')
    }
    await this.host.reload(this.log)
  }

  /**
   * SIGTERM: readiness turns false, listeners stop accepting, every connection is closed (MQTT 5
   * clients get DISCONNECT 0x8B), and their sockets get up to limits.drainTimeoutMs to flush.
   */
  async stop (): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    const closed = this.servers.map(async (s) => { await s.close() })
    const draining = [...this.connections]
    for (const conn of draining) conn.close('GUARD_ERR_SHUTTING_DOWN', 'proxy shutting down')
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, this.config.limits.drainTimeoutMs) })
    await Promise.race([Promise.all(closed), timeout])
    clearTimeout(timer)
    // Closed connections leave the set at once; their sockets may still be flushing.
    for (const conn of draining) conn.destroy()
    await this.host.close()
    await this.upstream.close()
    await this.admin?.close()
    this.series.close()
    this.kicks.close()
    this.redis?.disconnect()
    this.log.info('mqtt-guard stopped')
  }
}

/** Config values compared as JSON: functions (compiled trust lists) are not settings. */
function withoutFunctions (value: unknown): unknown {
  return JSON.parse(JSON.stringify(value ?? null, (_k, v: unknown) => typeof v === 'function' ? undefined : v)) as unknown
}

function countByListener (connections: Set<Connection>): Map<string, number> {
  const counts = new Map<string, number>()
  for (const c of connections) counts.set(c.listener, (counts.get(c.listener) ?? 0) + 1)
  return counts
}
