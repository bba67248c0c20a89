// A generation: the plugin chain, the broker side and the Redis client that connections accepted
// under one configuration run on. A reload that changes any of them starts a new generation for
// new connections; the older one keeps serving the connections it has until they close, or until
// reload.oldWorkerMaxAgeMs has passed and they are drained. What no live generation uses any
// more is then closed.

import type { Plugin } from '../plugin/api.js'
import type { PluginHost } from '../plugin/host.js'
import type { ResolvedConfig } from '../plugin/loader.js'
import type { Upstream } from '../upstream/upstream.js'
import type { SharedRedis } from '../redis/shared.js'

/** What a generation's connections hold: closed when the last generation using it is released. */
export type Part = Plugin | Upstream | SharedRedis

export interface GenerationParts {
  /** The configuration whose plugins, upstream and redis this generation runs. */
  readonly config: ResolvedConfig
  /** The plugins of config.plugins, in that order. */
  readonly plugins: readonly Plugin[]
  readonly host: PluginHost
  readonly upstream: Upstream
  readonly shared: SharedRedis | undefined
}

/** What a generation's connections need of a connection: how to be told to go. */
export interface Retirable { close: (reason: 'GUARD_ERR_SHUTTING_DOWN', detail: string) => void }

export class Generation<C extends Retirable = Retirable> implements GenerationParts {
  readonly connections = new Set<C>()
  /** When a newer generation took new connections; undefined while this one does. */
  retiredAt: number | undefined
  private timer: NodeJS.Timeout | undefined

  /** Its plugin entries are those in force: a plugin's options taken in place replace its entry. */
  config: ResolvedConfig
  readonly plugins: readonly Plugin[]
  readonly host: PluginHost
  readonly upstream: Upstream
  readonly shared: SharedRedis | undefined

  constructor (readonly id: number, parts: GenerationParts) {
    this.config = parts.config
    this.plugins = parts.plugins
    this.host = parts.host
    this.upstream = parts.upstream
    this.shared = parts.shared
  }

  /** Everything this generation holds that may need closing. */
  parts (): Part[] {
    return [...this.plugins, this.upstream, ...(this.shared === undefined ? [] : [this.shared])]
  }

  /**
   * A newer generation takes new connections. After `maxAgeMs`, the connections still here are
   * told to go (they reconnect to the newer one); `released` runs once none is left.
   */
  retire (maxAgeMs: number, released: () => void): void {
    this.retiredAt = Date.now()
    this.onEmpty = released
    if (this.connections.size === 0) {
      this.release()
      return
    }
    this.timer = setTimeout(() => {
      for (const conn of [...this.connections]) conn.close('GUARD_ERR_SHUTTING_DOWN', `configuration of an earlier reload retired after reload.oldWorkerMaxAgeMs (${maxAgeMs} ms)`)
    }, maxAgeMs)
    this.timer.unref()
  }

  /** A connection of this generation closed. */
  left (conn: C): void {
    this.connections.delete(conn)
    if (this.retiredAt !== undefined && this.connections.size === 0) this.release()
  }

  private onEmpty: (() => void) | undefined

  private release (): void {
    clearTimeout(this.timer)
    const released = this.onEmpty
    this.onEmpty = undefined
    released?.()
  }

  /** At stop: no timer may keep the process alive. */
  stop (): void {
    clearTimeout(this.timer)
    this.onEmpty = undefined
  }
}

/**
 * The generation new connections get and the older ones still serving connections: a reload
 * hands it its parts, and an older generation whose last connection closed is released (what
 * no live generation uses is closed).
 */
export class Generations<C extends Retirable> {
  current: Generation<C>
  private readonly older = new Set<Generation<C>>()

  constructor (first: GenerationParts, private readonly log: { info: (obj: object, msg: string) => void, error: (obj: object, msg: string) => void }) {
    this.current = new Generation(0, first)
  }

  /** The current one first. */
  all (): Array<Generation<C>> {
    return [this.current, ...this.older]
  }

  olderConnections (): number {
    let n = 0
    for (const g of this.older) n += g.connections.size
    return n
  }

  /**
   * A reload's parts: a new generation when the plugin chain, the broker side or Redis differ
   * (the current one retires, bounded by `maxAgeMs`); else the current one's entries in force.
   */
  take (parts: GenerationParts, maxAgeMs: number): void {
    const now = this.current
    if (parts.upstream === now.upstream && parts.shared === now.shared && parts.plugins === now.plugins) {
      now.config = parts.config
      return
    }
    this.current = new Generation(now.id + 1, parts)
    this.older.add(now)
    now.retire(maxAgeMs, () => { this.release(now) })
  }

  private release (gen: Generation<C>): void {
    this.older.delete(gen)
    const inUse = new Set(this.all().flatMap((g) => g.parts()))
    const closing = gen.parts().filter((p) => !inUse.has(p))
    void closePartsOf(closing, this.log)
    this.log.info({ generation: gen.id, closed: closing.length }, 'configuration of an earlier reload released: its last connection closed')
  }

  /** At stop: no timer stays; every part of every generation, once. */
  stop (): Part[] {
    const all = this.all()
    for (const g of all) g.stop()
    return [...new Set(all.flatMap((g) => g.parts()))]
  }
}

/** Closes parts no generation uses any more: plugins, brokers (pools, the embedded broker), Redis clients. */
export async function closePartsOf (parts: readonly Part[], log: { error: (obj: object, msg: string) => void }): Promise<void> {
  for (const part of parts) {
    try {
      if ('watch' in part) part.client.disconnect()
      else if ('dial' in part) await part.close()
      else await part.close?.()
    } catch (err) {
      log.error({ err, part: 'name' in part ? part.name : undefined }, 'closing a part of an earlier configuration failed')
    }
  }
}
