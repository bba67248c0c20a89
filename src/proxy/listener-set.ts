// The listeners of one proxy process: bound at start, changed by a reload (a removed one stops
// accepting while its connections go on, for reload.oldWorkerMaxAgeMs at most; an added one
// listens; one that cannot bind is refused and the one it was to replace listens again),
// re-reading their certificates, and closed at stop.

import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { ListenSpec } from '../config/config.js'
import type { GuardMetrics } from '../observe/metrics.js'
import type { Change } from '../reload/plan.js'
import { Listener, type Peer } from './listeners.js'

export interface BoundListener { spec: ListenSpec, host: string, port: number }

/** What a removed listener's connections are told when their time is up. */
interface Closable { readonly listener: string, close: (reason: 'GUARD_ERR_SHUTTING_DOWN', detail: string) => void }

export class ListenerSet {
  /** Where each listens: the bound address and port (port 0 resolved). */
  readonly bound: BoundListener[] = []
  private readonly servers: Listener[] = []
  private readonly timers = new Set<NodeJS.Timeout>()

  constructor (
    private readonly onAccept: (stream: Duplex, peer: Peer, spec: ListenSpec) => void,
    private readonly log: Logger,
    private readonly metrics: GuardMetrics,
    private readonly connectTimeoutMs: () => number
  ) {}

  async listen (spec: ListenSpec): Promise<void> {
    const listener = new Listener(spec, (stream, peer) => { this.onAccept(stream, peer, spec) }, this.log, this.metrics, this.connectTimeoutMs())
    const { host, port } = await listener.listen()
    this.servers.push(listener)
    this.bound.push({ spec, host, port })
  }

  /** Certificates read again (a reload). */
  reload (): void {
    for (const listener of this.servers) listener.reload()
  }

  /** A retiring worker: none accepts any more; open connections go on. */
  stopAccepting (): void {
    for (const listener of this.servers) listener.retire()
    this.servers.length = 0
    this.bound.length = 0
  }

  /**
   * A reload's listeners: `removed` stop accepting (their connections, from `connections`, are
   * told to go after `maxAge`), `added` listen. Returns the specs in force.
   */
  async change (now: readonly ListenSpec[], removed: readonly ListenSpec[], added: readonly ListenSpec[], maxAge: number, connections: () => Iterable<Closable>, changed: Change[], refused: Change[]): Promise<readonly ListenSpec[]> {
    const inForce = [...now]
    const retired: Listener[] = []
    for (const spec of removed) {
      const i = this.servers.findIndex((l) => l.spec === spec)
      const listener = this.servers[i]
      if (listener === undefined) continue
      listener.retire()
      this.servers.splice(i, 1)
      this.bound.splice(this.bound.findIndex((l) => l.spec === spec), 1)
      inForce.splice(inForce.indexOf(spec), 1)
      retired.push(listener)
    }
    for (const spec of added) {
      try {
        await this.listen(spec)
        inForce.push(spec)
        changed.push({ setting: 'listen', what: `added ${spec.url}`, reach: 'now' })
      } catch (err) {
        refused.push({ setting: 'listen', what: `add ${spec.url}`, reach: 'refused', detail: (err as Error).message })
        // The listener it was to replace (same address) takes connections again.
        const before = retired.find((l) => l.spec.host === spec.host && l.spec.port === spec.port)
        if (before !== undefined) {
          retired.splice(retired.indexOf(before), 1)
          await this.listen(before.spec).then(() => { inForce.push(before.spec) }, (again: Error) => { this.log.error({ listener: before.spec.url, err: again.message }, 'listener not restored') })
        }
      }
    }
    if (retired.length === 0 && inForce.length === now.length) return now
    for (const listener of retired) {
      const url = listener.spec.url
      changed.push({ setting: 'listen', what: `removed ${url}`, reach: 'new connections', detail: `its open connections go on, for reload.oldWorkerMaxAgeMs (${maxAge} ms) at most` })
      const timer = setTimeout(() => {
        this.timers.delete(timer)
        if (this.bound.some((l) => l.spec.url === url)) return
        for (const c of [...connections()]) if (c.listener === url) c.close('GUARD_ERR_SHUTTING_DOWN', `listener ${url} removed by a reload, and reload.oldWorkerMaxAgeMs (${maxAge} ms) passed`)
      }, maxAge)
      timer.unref()
      this.timers.add(timer)
    }
    return Object.freeze(inForce)
  }

  /** Stop: every listener closes (resolves when their sockets are gone); no timer stays. */
  async close (): Promise<void> {
    for (const t of this.timers) clearTimeout(t)
    await Promise.all(this.servers.map(async (s) => { await s.close() }))
  }
}
