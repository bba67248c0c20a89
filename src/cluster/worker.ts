// A worker: one whole proxy (GuardServer with the configured plugins) on the listeners the
// primary shares, with no admin endpoint of its own. It answers the primary's calls (what the
// admin endpoint shows, kicks, reloads) and ends when the primary says so, or drains when the
// primary is gone.

import type { ResolvedConfig } from '../plugin/loader.js'
import type { StartOptions } from '../server.js'
import { Peer, type Port } from './ipc.js'
import { primaryChannels } from './shared-state.js'

/** The settings that are the primary's: a worker never serves the admin endpoint itself. */
export function asWorker (config: ResolvedConfig): ResolvedConfig {
  return Object.freeze({ ...config, admin: undefined })
}

/** Runs until the primary says stop (or goes away); resolves when this worker has drained. */
export async function runWorker (config: ResolvedConfig, options: Pick<StartOptions, 'log' | 'reread'> & { index: number }): Promise<void> {
  const { log } = options
  const primary = new Peer(process as unknown as Port, `worker ${options.index} → primary`)
  const { GuardServer } = await import('../server.js')
  const reread = options.reread
  const server = await GuardServer.start(asWorker(config), {
    log,
    primary: primaryChannels(primary),
    worker: options.index + 1,
    ...(reread === undefined ? {} : { reread: async () => asWorker(await reread()) })
  })
  let retiring = false
  const ended = new Promise<void>((resolve) => {
    const stop = (): void => { server.stop().then(resolve, (err: unknown) => { log.error({ err }, 'error while stopping'); resolve() }) }
    primary.handle('stop', () => { stop() })
    // A worker the primary retires (fewer workers after a reload) takes no new connections and
    // ends when its last one closes, or when the primary says stop (reload.oldWorkerMaxAgeMs).
    primary.handle('retire', async () => {
      retiring = true
      await server.stopAccepting()
      const check = (): void => { if (server.connections.size === 0) stop() }
      check()
      server.onIdle(check)
    })
    // The primary died: nobody supervises this process, and its listeners go with it.
    process.once('disconnect', () => {
      log.warn('the primary went away: this worker drains and exits')
      primary.close('the primary went away')
      stop()
    })
  })
  primary
    .handle('connections', () => server.connectionViews())
    .handle('kick', async (clientId: string) => await server.kick(clientId))
    .handle('readiness', async () => await server.readiness())
    .handle('redis', async () => await server.redisStatus())
    .handle('overview', async () => await server.overview())
    .handle('diagnose', async () => await server.diagnose())
    .handle('client', (clientId: string) => ({ connections: server.connectionViews().filter((c) => c.clientId === clientId), history: server.diagnostics.history(clientId) }))
    .handle('metrics', async () => await server.metrics.json())
    .handle('plugins', async (req: { method: string, path: string, query: string, body: unknown }) => {
      const res = await server.pluginAdmin({ ...req, query: new URLSearchParams(req.query) })
      // A live feed cannot cross the channel: the primary answers those itself.
      return res === undefined ? undefined : { status: res.status, body: res.body, events: res.events !== undefined }
    })
    .handle('reload', async () => await server.reloadFromSource('primary'))
    .handle('upstreams', () => server.upstreamsView())
    .handle('drain', (index: number, rate: number | undefined) => server.drain(index, rate))
    .handle('state', () => ({ connections: server.connections.size, retiring }))
  primary.tell('instance', server.instanceId)
  primary.tell('ready', { listeners: server.listeners.map((l) => ({ url: l.spec.url, host: l.host, port: l.port })) })
  // The terminal's Ctrl-C and a service manager's signals reach the whole process group: the
  // primary decides, and tells its workers.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => {})
  await ended
  primary.close('stopped')
  // The IPC channel keeps a worker alive: closing it lets the process end by itself, once what
  // it still writes (the last log lines) is out.
  if (process.connected) process.disconnect()
  setTimeout(() => { process.exit(0) }, 2000).unref()
}
