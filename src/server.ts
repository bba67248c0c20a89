// Owns the listeners, the admin endpoint, the live connections and the generations (plugins,
// upstream, Redis: src/reload/generation.ts) they run on, for one proxy process. start()
// resolves once every listener is bound; reload() applies a configuration read again without
// closing a connection; stop() drains and releases.

import type { Duplex } from 'node:stream'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { ListenSpec } from './config/config.js'
import { Connection } from './proxy/connection.js'
import type { PluginHost } from './plugin/host.js'
import type { ResolvedConfig } from './plugin/loader.js'
import type { Upstream } from './upstream/upstream.js'
import { BrokerPool } from './upstream/pool.js'
import { poolMetrics, type PoolMetrics } from './observe/upstream-metrics.js'
import type { ErrorCode } from './errors.js'
import type { AdminRequest, AdminResponse, Plugin, PrimaryChannel } from './plugin/api.js'
import { GuardMetrics } from './observe/metrics.js'
import { AdminServer } from './admin/endpoint.js'
import { adminTarget } from './admin/target.js'
import { readmin } from './admin/readmin.js'
import type { ConnectionView, Finding, Overview } from './views.js'
import type { Peer } from './proxy/listeners.js'
import { ListenerSet, type BoundListener } from './proxy/listener-set.js'
import { limitsPlugin } from './proxy/limits.js'
import { KickChannel } from './admin/kick.js'
import { Diagnostics } from './observe/diagnostics.js'
import type { RedisClient } from './redis/client.js'
import type { RedisStatus } from './redis/watch.js'
import { DEFAULT_KEY_PREFIX } from './config/redis.js'
import { setLevel } from './log/log.js'
import { ServerViews } from './server-views.js'
import { Generations, closePartsOf, type Generation, type GenerationParts } from './reload/generation.js'
import { describePlan, planReload, type Change, type ReloadReport } from './reload/plan.js'
import { reloadParts, startParts, type PartsContext } from './reload/parts.js'
import { OneAtATime, readAgain, refusedWhole } from './reload/read-again.js'
import type { BrokerView } from './upstream/pool.js'
import type { UpstreamsView } from './admin/endpoint.js'

export interface StartOptions {
  log: Logger
  /** Plugins made in code (tests, embedding); appended after the configured ones. */
  extraPlugins?: Plugin[]
  /**
   * Reads the configuration again for a reload (`mqtt-guard start`: the file, the variables and
   * the flags, resolved whole). Without it, a reload re-reads the files the running
   * configuration names (certificates, password and ACL files) and changes no setting.
   */
  reread?: () => Promise<ResolvedConfig>
  /** Running as a worker of `workers: N` without Redis: each plugin's channel to its state in the primary (src/cluster/). */
  primary?: ((plugin: string) => PrimaryChannel) | undefined
  /** Running as worker N (1-based): its start line says so. */
  worker?: number
}

export type { BoundListener } from './proxy/listener-set.js'

export class GuardServer {
  readonly connections = new Set<Connection>()
  readonly diagnostics = new Diagnostics()
  /** The console's overview and series, and doctor's findings (src/server-views.ts). */
  private readonly views: ServerViews
  admin: AdminServer | undefined
  /** The listeners, where they are bound, and a reload's changes to them. */
  private readonly listenerSet: ListenerSet
  /** The admin API's kicks, across instances when there is Redis (admin/kick.ts). */
  private kicks: KickChannel
  private stopping = false
  /**
   * The configuration in force: one frozen value, replaced whole by reload(). A connection is
   * handed the limits of the one in force when it is accepted; the core plugin `limits` and
   * the accept check read this at each CONNECT.
   */
  private current: ResolvedConfig
  /** The generation new connections get; `older` still serve connections accepted before a reload. */
  private readonly gens: Generations<Connection>
  private reloads = 0
  private readonly reloading = new OneAtATime()

  private constructor (
    readonly instanceId: string,
    config: ResolvedConfig,
    readonly log: Logger,
    first: GenerationParts,
    readonly metrics: GuardMetrics,
    private readonly parts: PartsContext,
    private readonly reread: (() => Promise<ResolvedConfig>) | undefined,
    /** A worker of `workers: N`: the worker count is its primary's to change. */
    private readonly isWorker = false
  ) {
    this.current = config
    this.gens = new Generations(first, log)
    this.kicks = new KickChannel(this.connections, first.shared?.client, config.redis?.keyPrefix ?? DEFAULT_KEY_PREFIX, instanceId, log)
    this.listenerSet = new ListenerSet((stream, peer, spec) => { this.accept(stream, peer, spec) }, log, metrics, () => this.current.limits.connectTimeoutMs)
    this.views = new ServerViews({
      instanceId,
      metrics,
      diagnostics: this.diagnostics,
      log,
      connections: () => this.connections,
      host: () => this.host,
      upstream: () => this.upstream,
      config: () => this.current,
      readiness: async () => await this.readiness()
    })
  }

  /** The configuration in force (frozen; a reload replaces it whole). */
  get config (): ResolvedConfig {
    return this.current
  }

  /** The plugin chain new connections get. */
  get host (): PluginHost { return this.gen.host }
  /** The broker side new connections get. */
  get upstream (): Upstream { return this.gen.upstream }
  /** The shared Redis client new connections' plugins use; undefined without Redis. */
  get redis (): RedisClient | undefined { return this.gen.shared?.client }

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
    let poolSeries: PoolMetrics | undefined
    const ctx: PartsContext = {
      log,
      instanceId: randomBytes(8).toString('hex'),
      metrics,
      // The limits come first: a CONNECT they refuse costs no other plugin anything.
      first: [limitsPlugin(() => inForce().limits)],
      last: options.extraPlugins ?? [],
      retap: () => { for (const c of made.server?.connections ?? []) c.retap() },
      connack: (url, seconds) => { poolSeries?.connack.observe({ broker: url }, seconds) },
      primary: options.primary,
      worker: options.worker
    }
    const first = await startParts(config, ctx)
    const server = new GuardServer(ctx.instanceId, config, log, first, metrics, ctx, options.reread, options.worker !== undefined)
    made.server = server
    // Registered once; it reads every live generation's pool (a reload may add one).
    const pools = (): BrokerPool[] => server.generations().map((g) => g.upstream).filter((u): u is BrokerPool => u instanceof BrokerPool)
    if (first.upstream instanceof BrokerPool || options.reread !== undefined) poolSeries = poolMetrics(metrics.registry, pools)
    try {
      for (const spec of config.listen) await server.listen(spec)
      if (config.admin !== undefined) server.admin = await AdminServer.start(config.admin, adminTarget(server), log)
      server.kicks.listen()
    } catch (err) {
      await server.stop()
      throw err
    }
    log.info({
      listen: server.listeners.map((l) => `${l.host}:${l.port}`),
      admin: server.admin === undefined ? undefined : `${server.admin.host}:${server.admin.port}`,
      upstream: first.upstream.description,
      plugins: first.plugins.map((p) => p.name)
    }, options.worker === undefined ? 'mqtt-guard listening' : 'worker listening')
    return server
  }

  /** The generation new connections get, then the older ones still serving connections. */
  generations (): Array<Generation<Connection>> {
    return this.gens.all()
  }

  /** The generation new connections get. */
  private get gen (): Generation<Connection> { return this.gens.current }

  /** Where each listener is bound (port 0 resolved). */
  get listeners (): BoundListener[] { return this.listenerSet.bound }

  private async listen (spec: ListenSpec): Promise<void> {
    await this.listenerSet.listen(spec)
  }

  private accept (stream: Duplex, peer: Peer, spec: ListenSpec): void {
    // The connection keeps these for its life: its per-packet reads are of a frozen object.
    const limits = this.current.limits
    const gen = this.gen
    let refuse: ErrorCode | undefined
    if (this.stopping) refuse = 'GUARD_ERR_SHUTTING_DOWN'
    else if (this.connections.size >= limits.maxConnections) refuse = 'GUARD_ERR_MAX_CONNECTIONS'
    const conn = new Connection(stream, peer, {
      host: gen.host,
      upstream: gen.upstream,
      limits,
      log: this.log,
      metrics: this.metrics,
      listener: spec.url,
      refuse,
      onRefusedPublish: (c, topic, plugin) => { this.diagnostics.refusedPublish(c.clientId, topic, plugin) },
      onClosed: (c, info) => {
        this.connections.delete(c)
        if (this.connections.size === 0) for (const idle of this.idle) idle()
        gen.left(c)
        this.diagnostics.closed({ clientId: c.clientId, address: c.address, keepalive: c.keepalive, admitted: c.accepted, identified: c.identified }, info)
        gen.host.onClose(c, info)
      }
    })
    this.connections.add(conn)
    gen.connections.add(conn)
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
    if (this.redis === undefined || this.gen.shared === undefined) return undefined
    return await this.gen.shared.watch.status(this.redis)
  }

  /** The console's overview, read from the metrics and the live connections. */
  async overview (): Promise<Overview> { return await this.views.overview() }

  /** Findings for `mqtt-guard doctor`: what was recorded, and the live state read now. */
  async diagnose (): Promise<{ instance: string, at: string, findings: Finding[] }> { return await this.views.diagnose() }

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

  private readonly idle = new Set<() => void>()
  /** Called each time the last open connection closes (a retiring worker ends then). */
  onIdle (listener: () => void): void { this.idle.add(listener) }

  /** A retiring worker: no listener accepts any more; open connections go on. */
  async stopAccepting (): Promise<void> {
    this.listenerSet.stopAccepting()
  }

  /** The brokers new connections go to, as GET /upstreams shows them. */
  upstreamsView (): UpstreamsView {
    const upstream = this.upstream
    if (upstream instanceof BrokerPool) return { kind: 'pool', ...upstream.view() }
    return { kind: this.config.upstream.kind === 'embedded' ? 'embedded' : 'mqtt', description: upstream.description }
  }

  /** Starts (rate a second) or ends a drain of broker `index` of the pool; undefined: no such broker. */
  drain (index: number, rate: number | undefined): BrokerView | undefined {
    const upstream = this.upstream
    if (!(upstream instanceof BrokerPool)) return undefined
    return rate === undefined ? upstream.undrain(index) : upstream.drainBroker(index, rate)
  }

  /** Closes the client ID's connections here; with Redis, every other instance closes its own. */
  async kick (clientId: string): Promise<{ closedHere: number, announced: boolean }> {
    return await this.kicks.kick(clientId)
  }

  /**
   * Reads the configuration again (StartOptions.reread) and applies it: SIGHUP, POST /reload and
   * `mqtt-guard reload`. A configuration that does not resolve is refused whole: the answer
   * names its error and nothing changes (the running proxy goes on as it was).
   */
  async reloadFromSource (source: string): Promise<ReloadReport> {
    return await this.reloading.run(async () => {
      if (this.reread === undefined) return await this.applyConfig(undefined, source)
      const next = await readAgain(this.reread, this.log, source)
      if ('refused' in next) {
        this.metrics.reloads.inc({ result: 'refused' })
        return refusedWhole(next.refused, ++this.reloads, source, this.gen.id, this.gens.olderConnections())
      }
      return await this.applyConfig(next, source)
    })
  }

  /**
   * Applies `next` (resolved whole, as start takes it); without it, re-reads only the files the
   * running configuration names (certificates, password and ACL files). Nothing closes a
   * connection: each setting reaches connections as its Change says (src/reload/plan.ts).
   */
  async reload (next?: ResolvedConfig, source = 'code'): Promise<ReloadReport> {
    return await this.reloading.run(async () => await this.applyConfig(next, source))
  }

  private async applyConfig (next: ResolvedConfig | undefined, source: string): Promise<ReloadReport> {
    this.log.info({ source }, 'reloading')
    this.listenerSet.reload()
    await this.gen.host.reload(this.log)
    const changed: Change[] = []
    const refused: Change[] = []
    if (next !== undefined && !this.stopping) {
      const now = this.current
      const plan = planReload(now, this.gen.plugins, next)
      changed.push(...describePlan(plan, now, next))
      if (plan.logLevel) setLevel(this.log, next.log.level)
      const { parts, inForce, refused: partsRefused } = await reloadParts(this.gen, next, plan, this.parts)
      refused.push(...partsRefused)
      // What this reload replaces is bounded by the age it sets (lowering it applies at once).
      const maxAge = next.reload.oldWorkerMaxAgeMs
      this.gens.take(parts, maxAge)
      const listen = await this.listenerSet.change(now.listen, plan.listen.removed, plan.listen.added, maxAge, () => this.connections, changed, refused)
      const moved = await readmin(this.admin, now.admin, next.admin, () => adminTarget(this), this.log, changed, refused)
      this.admin = moved.server
      const admin = moved.spec
      if (next.workers !== now.workers && !this.isWorker) {
        refused.push({
          setting: 'workers',
          what: `${now.workers} → ${next.workers}`,
          reach: 'refused',
          detail: 'this process was started with workers: 1 and has no primary to fork or retire workers; a proxy started with workers >= 2 (or auto) changes its count by reload. Restart to change it here'
        })
      }
      if (this.kicks.redis !== this.redis) {
        this.kicks.close()
        this.kicks = new KickChannel(this.connections, this.redis, inForce.redis?.keyPrefix ?? DEFAULT_KEY_PREFIX, this.instanceId, this.log)
        this.kicks.listen()
      }
      // One assignment: a connection accepted from here on gets the new settings.
      this.current = Object.freeze({ ...next, ...inForce, listen, admin, workers: this.isWorker ? next.workers : now.workers })
    }
    const shown = changed.filter((c) => !refused.some((r) => c.setting === r.setting || (r.setting === 'plugins' && c.setting.startsWith('plugins'))))
    const report: ReloadReport = { at: new Date().toISOString(), reload: ++this.reloads, source, applied: true, changed: shown, refused, generation: this.gen.id, olderConnections: this.gens.olderConnections() }
    this.metrics.reloads.inc({ result: refused.length > 0 ? 'partial' : 'applied' })
    const fields = { source, changed: shown.map((c) => `${c.setting}: ${c.what} (${c.reach})`), refused: refused.map((c) => `${c.setting}: ${c.detail ?? c.what}`), generation: report.generation }
    if (refused.length > 0) this.log.warn(fields, 'reloaded, with changes refused')
    else this.log.info(fields, 'reloaded')
    return report
  }

  /**
   * SIGTERM: readiness turns false, listeners stop accepting, every connection is closed (MQTT 5
   * clients get DISCONNECT 0x8B), and their sockets get up to limits.drainTimeoutMs to flush.
   */
  async stop (): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    const closed = this.listenerSet.close()
    const draining = [...this.connections]
    for (const conn of draining) conn.close('GUARD_ERR_SHUTTING_DOWN', 'proxy shutting down')
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, this.config.limits.drainTimeoutMs) })
    await Promise.race([closed, timeout])
    clearTimeout(timer)
    // Closed connections leave the set at once; their sockets may still be flushing.
    for (const conn of draining) conn.destroy()
    // Every part once, the plugins in reverse order (as PluginHost.close), the core's around them.
    const parts = this.gens.stop()
    await closePartsOf([...this.parts.last].reverse(), this.log)
    await closePartsOf(parts.reverse(), this.log)
    await closePartsOf([...this.parts.first].reverse(), this.log)
    await this.admin?.close()
    this.views.close()
    this.kicks.close()
    this.log.info('mqtt-guard stopped')
  }
}

function countByListener (connections: Set<Connection>): Map<string, number> {
  const counts = new Map<string, number>()
  for (const c of connections) counts.set(c.listener, (counts.get(c.listener) ?? 0) + 1)
  return counts
}
