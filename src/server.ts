// Owns the listeners, the upstream, the plugins and the live connections of one proxy
// process. start() resolves once every listener is bound; stop() drains and releases all.

import net from 'node:net'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { Redis } from 'ioredis'
import type { GuardConfig, ListenSpec } from './config.js'
import { Connection } from './connection.js'
import { PluginHost } from './plugin-host.js'
import { loadPlugins } from './plugin-loader.js'
import { embeddedUpstream, tcpUpstream, type Upstream } from './upstream.js'
import { createEmbeddedBroker } from './embedded.js'
import type { ErrorCode } from './errors.js'
import type { Plugin } from './plugin-api.js'

export interface StartOptions {
  log: Logger
  /** Plugins made in code (tests, embedding); appended after the configured ones. */
  extraPlugins?: Plugin[]
}

export interface BoundListener { spec: ListenSpec, host: string, port: number }

export class GuardServer {
  readonly connections = new Set<Connection>()
  readonly listeners: BoundListener[] = []
  private readonly servers: net.Server[] = []
  private stopping = false

  private constructor (
    readonly instanceId: string,
    readonly config: GuardConfig,
    readonly log: Logger,
    readonly host: PluginHost,
    readonly upstream: Upstream,
    readonly redis: Redis | undefined
  ) {}

  static async start (config: GuardConfig, options: StartOptions): Promise<GuardServer> {
    const log = options.log
    const redis = config.redis === undefined ? undefined : new Redis(config.redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: true })
    redis?.on('error', (err: NodeJS.ErrnoException) => { log.warn({ err: err.code ?? err.message }, 'redis error') })
    const instanceId = randomBytes(8).toString('hex')
    let plugins: Plugin[] = []
    let upstream: Upstream
    try {
      plugins = await loadPlugins(config.plugins, {
        configDir: config.configDir, log, redis, redisKeyPrefix: config.redis?.keyPrefix ?? 'mqtt-guard:', instanceId
      })
      upstream = config.upstream.kind === 'embedded'
        ? embeddedUpstream(await createEmbeddedBroker(config.redis, log))
        : tcpUpstream(config.upstream)
    } catch (err) {
      // Nothing may keep the process alive after a failed start.
      await new PluginHost(plugins).close().catch(() => {})
      redis?.disconnect()
      throw err
    }
    const server = new GuardServer(instanceId, config, log, new PluginHost([...plugins, ...(options.extraPlugins ?? [])]), upstream, redis)
    try {
      for (const spec of config.listen) await server.listen(spec)
    } catch (err) {
      await server.stop()
      throw err
    }
    log.info({ listen: server.listeners.map((l) => `${l.host}:${l.port}`), upstream: upstream.description, plugins: plugins.map((p) => p.name) }, 'mqtt-guard listening')
    return server
  }

  private async listen (spec: ListenSpec): Promise<void> {
    const server = net.createServer({ noDelay: true }, (socket) => { this.accept(socket, spec) })
    server.on('error', (err) => { this.log.error({ err }, 'listener error') })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host: spec.host, port: spec.port }, () => { server.removeListener('error', reject); resolve() })
    })
    const address = server.address() as net.AddressInfo
    this.servers.push(server)
    this.listeners.push({ spec, host: address.address, port: address.port })
  }

  private accept (socket: net.Socket, spec: ListenSpec): void {
    let refuse: ErrorCode | undefined
    if (this.stopping) refuse = 'GUARD_ERR_SHUTTING_DOWN'
    else if (this.connections.size >= this.config.limits.maxConnections) refuse = 'GUARD_ERR_MAX_CONNECTIONS'
    const conn = new Connection(socket, { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 }, {
      host: this.host,
      upstream: this.upstream,
      limits: this.config.limits,
      log: this.log,
      listener: spec.url,
      refuse,
      onClosed: (c, info) => {
        this.connections.delete(c)
        this.host.onClose(c, info)
      }
    })
    this.connections.add(conn)
  }

  /** SIGHUP: plugins re-read their files; settings that need a restart are named in the log. */
  async reload (): Promise<void> {
    this.log.info('reloading')
    await this.host.reload(this.log)
  }

  /** Stops accepting, closes every connection (MQTT 5: DISCONNECT 0x8B), releases all. */
  async stop (): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    // server.close() resolves once every accepted socket has closed; connections give their
    // sockets a short grace to flush, then destroy them, so this is bounded.
    const closed = this.servers.map((s) => new Promise<void>((resolve) => { s.close(() => { resolve() }) }))
    for (const conn of [...this.connections]) conn.close('GUARD_ERR_SHUTTING_DOWN', 'proxy shutting down')
    await Promise.all(closed)
    await this.host.close()
    await this.upstream.close()
    this.redis?.disconnect()
    this.log.info('mqtt-guard stopped')
  }
}
