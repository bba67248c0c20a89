// What the primary of `workers: N` keeps for the plugins when there is no Redis: the state one
// process would keep in memory (client-id leases and flapping counters), held once for every
// worker, asked over IPC (batched by ipc.ts). A plugin's primary side is named by its
// definition (`PluginDefinition.primary`); workers reach it through `PluginContext.primary`.

import type { Logger } from 'pino'
import type { PrimaryChannel, PrimarySide } from '../plugin/api.js'
import type { ResolvedConfig } from '../plugin/loader.js'
import type { Peer } from './ipc.js'

/** A worker's channels to its plugins' sides in the primary (PluginContext.primary). */
export function primaryChannels (peer: Peer): (plugin: string) => PrimaryChannel {
  return (plugin) => ({
    call: async (method, ...args) => await peer.call('state', plugin, method, args),
    on: (event, listener) => peer.on(`state:${plugin}:${event}`, listener)
  })
}

export class SharedState {
  private readonly peers = new Set<Peer>()
  private readonly sides = new Map<string, PrimarySide>()
  /** Each worker's instance ID, told at its start: what it held is freed when it ends. */
  private readonly instances = new Map<Peer, string>()

  constructor (private readonly log: Logger) {}

  /**
   * The sides the configuration's plugins keep here: without Redis only (with Redis, Redis is
   * the shared state, as across instances). A side made before is kept, with its state, across
   * reloads; new options reach it at the next start.
   */
  configure (config: ResolvedConfig): void {
    if (config.redis !== undefined) return
    for (const entry of config.plugins) {
      const make = entry.definition.primary
      const name = entry.definition.name
      if (make === undefined || this.sides.has(name)) continue
      this.sides.set(name, make(entry.validated as never, (event, data) => { this.broadcast(`state:${name}:${event}`, data) }))
      this.log.debug({ plugin: name }, 'the primary keeps this plugin\'s state for every worker')
    }
  }

  /** The worker's calls to `state` reach the plugins' sides. */
  attach (peer: Peer): void {
    this.peers.add(peer)
    peer.on('instance', (id: string) => { this.instances.set(peer, id) })
    peer.handle('state', async (plugin: string, method: string, args: unknown[]) => {
      const fn = this.sides.get(plugin)?.[method]
      if (fn === undefined) throw new Error(`the primary keeps no state ${plugin}.${method}`)
      return await (fn as (...a: unknown[]) => unknown)(...args)
    })
  }

  /** A worker ended: what its connections held is freed. */
  detach (peer: Peer): void {
    this.peers.delete(peer)
    const id = this.instances.get(peer)
    this.instances.delete(peer)
    if (id === undefined) return
    for (const side of this.sides.values()) side.workerGone?.(id)
  }

  /** Tells every worker. */
  broadcast (name: string, data: unknown): void {
    for (const peer of this.peers) peer.tell(name, data)
  }
}
