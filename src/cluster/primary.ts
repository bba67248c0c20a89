// The primary of `workers: N`: forks N workers (node:cluster) that share the listeners, replaces
// a worker that dies (logged and counted; its clients reconnect to the others), serves the one
// admin endpoint for all of them (src/cluster/group.ts), and carries out reloads: a new worker
// count forks workers or retires some (a retired worker takes no new connections and serves its
// own until they close, or until reload.oldWorkerMaxAgeMs, then drains); everything else each
// worker applies itself.

import cluster, { type Worker } from 'node:cluster'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import type { ResolvedConfig } from '../plugin/loader.js'
import { AdminServer } from '../admin/endpoint.js'
import { readmin } from '../admin/readmin.js'
import type { ReloadReport, Change } from '../reload/plan.js'
import { OneAtATime, readAgain, refusedWhole } from '../reload/read-again.js'
import { RELOADS_HELP } from '../observe/metrics.js'
import { Peer, type Port } from './ipc.js'
import { groupTarget } from './group.js'
import { mergeReports } from './merge.js'
import { SharedState } from './shared-state.js'

export interface Member {
  readonly index: number
  readonly worker: Worker
  readonly peer: Peer
  state: 'starting' | 'serving' | 'retiring'
  readonly startedAt: number
}

/** A worker that dies this soon after it started is crash-looping: wait before the next. */
const QUICK_DEATH_MS = 5000
const MAX_BACKOFF_MS = 30_000

export class Primary {
  readonly instanceId = randomBytes(8).toString('hex')
  readonly members = new Map<number, Member>()
  readonly registry = new Registry()
  private readonly restarts: Counter<'reason'>
  /** The same series the workers count: aggregated as the most, this one counts every reload. */
  private readonly reloadsCounted: Counter<'result'>
  private admin: AdminServer | undefined
  private stopping = false
  private reloads = 0
  private readonly reloading = new OneAtATime()
  private backoffMs = 0
  private readonly state: SharedState

  constructor (private config: ResolvedConfig, private readonly log: Logger, private readonly reread: () => Promise<ResolvedConfig>) {
    const registers = [this.registry]
    this.restarts = new Counter({ name: 'mqtt_guard_worker_restarts_total', help: 'Workers that died and were replaced (workers >= 2), by how: exit code or signal', labelNames: ['reason'], registers })
    this.reloadsCounted = new Counter({ name: 'mqtt_guard_reloads_total', help: RELOADS_HELP, labelNames: ['result'], registers, aggregator: 'max' })
    for (const result of ['applied', 'partial', 'refused']) this.reloadsCounted.inc({ result }, 0)
    const members = this.members
    new Gauge({
      name: 'mqtt_guard_workers',
      help: 'Worker processes by state: serving (take new connections), retiring (a reload lowered workers: serving only their own connections), starting',
      labelNames: ['state'],
      registers,
      collect () {
        for (const state of ['serving', 'retiring', 'starting'] as const) this.set({ state }, [...members.values()].filter((m) => m.state === state).length)
      }
    })
    this.state = new SharedState(log)
    this.state.configure(config)
  }

  /** Forks the workers and waits until each listens; then the admin endpoint. */
  async start (): Promise<void> {
    cluster.on('exit', (worker, code, signal) => { this.exited(worker, code, signal) })
    try {
      await Promise.all(Array.from({ length: this.config.workers }, async (_, i) => await this.fork(i)))
    } catch (err) {
      await this.stop()
      throw err
    }
    if (this.config.admin !== undefined) this.admin = await AdminServer.start(this.config.admin, groupTarget(this), this.log)
    const first = [...this.members.values()][0]
    this.log.info({
      workers: this.members.size,
      listen: first === undefined ? [] : this.listenersOf(first),
      admin: this.admin === undefined ? undefined : `${this.admin.host}:${this.admin.port}`
    }, 'mqtt-guard listening')
  }

  private readonly listening = new Map<number, string[]>()
  listenersOf (member: Member): string[] { return this.listening.get(member.worker.id) ?? [] }

  /** Workers taking new connections. */
  serving (): Member[] {
    return [...this.members.values()].filter((m) => m.state === 'serving')
  }

  /** Workers with connections: serving and retiring. */
  live (): Member[] {
    return [...this.members.values()].filter((m) => m.state !== 'starting')
  }

  private async fork (index: number): Promise<Member> {
    const worker = cluster.fork({ MQTT_GUARD_WORKER_INDEX: String(index) })
    const peer = new Peer(worker as unknown as Port, `primary → worker ${index + 1}`)
    // A message to a worker that is exiting fails (the channel closed): its exit is handled below.
    worker.on('error', (err) => { this.log.debug({ worker: index + 1, err: err.message }, 'worker channel error') })
    const member: Member = { index, worker, peer, state: 'starting', startedAt: Date.now() }
    this.members.set(worker.id, member)
    this.state.attach(peer)
    return await new Promise<Member>((resolve, reject) => {
      const off = peer.on('ready', (data: { listeners: Array<{ host: string, port: number }> }) => {
        off()
        worker.removeListener('exit', early)
        this.listening.set(worker.id, data.listeners.map((l) => `${l.host}:${l.port}`))
        member.state = 'serving'
        resolve(member)
      })
      const early = (code: number | null, signal: string | null): void => {
        off()
        reject(new Error(`worker ${index + 1} exited before it listened (${signal ?? `code ${String(code)}`}); its log above says why`))
      }
      worker.once('exit', early)
    })
  }

  private exited (worker: Worker, code: number | null, signal: string | null): void {
    const member = this.members.get(worker.id)
    if (member === undefined) return
    this.members.delete(worker.id)
    this.listening.delete(worker.id)
    member.peer.close('the worker exited')
    this.state.detach(member.peer)
    if (this.stopping || member.state === 'retiring') {
      this.log.info({ worker: member.index + 1, code, signal }, 'worker ended')
      return
    }
    if (member.state === 'starting') return // start() or the replacement below reports it
    const reason = signal ?? `code ${String(code)}`
    this.restarts.inc({ reason })
    const lived = Date.now() - member.startedAt
    this.backoffMs = lived < QUICK_DEATH_MS ? Math.min(MAX_BACKOFF_MS, Math.max(500, this.backoffMs * 2)) : 0
    this.log.error({ worker: member.index + 1, workerPid: worker.process.pid, reason, livedMs: lived, nextInMs: this.backoffMs }, 'worker died: a new one replaces it; its clients reconnect to the other workers')
    const again = (): void => {
      if (this.stopping) return
      this.fork(member.index).then(
        () => { this.log.info({ worker: member.index + 1 }, 'worker replaced') },
        (err: Error) => { this.log.error({ worker: member.index + 1, err: err.message }, 'replacement worker failed to start; trying again'); setTimeout(again, Math.max(1000, this.backoffMs)).unref() })
    }
    setTimeout(again, this.backoffMs).unref()
  }

  /** SIGHUP, POST /reload: the file again; the worker count here, the rest in each worker. */
  async reload (source: string): Promise<ReloadReport> {
    return await this.reloading.run(async () => await this.applyReload(source))
  }

  private async applyReload (source: string): Promise<ReloadReport> {
    const reload = ++this.reloads
    const next = await readAgain(this.reread, this.log, source)
    if ('refused' in next) {
      this.reloadsCounted.inc({ result: 'refused' })
      return refusedWhole(next.refused, reload, source, 0, 0)
    }
    const changed: Change[] = []
    const refused: Change[] = []
    // The workers that stay read the file and apply it; new ones read it when they start.
    const reports = await Promise.all(this.serving().map(async (m) => await m.peer.call<ReloadReport>('reload').catch((err: Error) => {
      refused.push({ setting: `worker ${m.index + 1}`, what: 'reload', reach: 'refused', detail: err.message })
      return undefined
    })))
    const now = this.config
    this.state.configure(next)
    if (next.workers !== now.workers) await this.resize(next, changed, refused)
    const admin = await readmin(this.admin, now.admin, next.admin, () => groupTarget(this), this.log, changed, refused)
    this.admin = admin.server
    this.config = Object.freeze({ ...next, admin: admin.spec })
    const report = mergeReports(reports.filter((r): r is ReloadReport => r !== undefined), { changed, refused }, reload, source)
    const fields = { source, changed: report.changed.map((c) => `${c.setting}: ${c.what} (${c.reach})`), refused: report.refused.map((c) => `${c.setting}: ${c.detail ?? c.what}`) }
    this.reloadsCounted.inc({ result: !report.applied ? 'refused' : report.refused.length > 0 ? 'partial' : 'applied' })
    if (report.refused.length > 0) this.log.warn(fields, 'reloaded, with changes refused')
    else this.log.info(fields, 'reloaded')
    return report
  }

  /** More workers: forked now (they read the new file). Fewer: the newest retire. */
  private async resize (next: ResolvedConfig, changed: Change[], refused: Change[]): Promise<void> {
    const serving = this.serving().sort((a, b) => a.index - b.index)
    const want = next.workers
    if (want > serving.length) {
      const used = new Set(serving.map((m) => m.index))
      const free = Array.from({ length: want * 2 }, (_, i) => i).filter((i) => !used.has(i)).slice(0, want - serving.length)
      const results = await Promise.allSettled(free.map(async (i) => await this.fork(i)))
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
      if (failed.length > 0) refused.push({ setting: 'workers', what: `${failed.length} of ${free.length} new workers`, reach: 'refused', detail: String((failed[0]?.reason as Error).message) })
      changed.push({ setting: 'workers', what: `${serving.length} → ${serving.length + free.length - failed.length}`, reach: 'new connections', detail: 'the new workers take their share of new connections' })
      return
    }
    const retiring = serving.slice(want)
    const maxAge = next.reload.oldWorkerMaxAgeMs
    for (const m of retiring) {
      m.state = 'retiring'
      m.peer.call('retire').catch(() => {})
      // After reload.oldWorkerMaxAgeMs its clients are told to go, and reconnect to the others.
      setTimeout(() => { if (this.members.has(m.worker.id)) m.peer.call('stop').catch(() => {}) }, maxAge).unref()
    }
    changed.push({ setting: 'workers', what: `${serving.length} → ${want}`, reach: 'new connections', detail: `${retiring.length} worker(s) take no new connections and serve theirs until they close, for reload.oldWorkerMaxAgeMs (${maxAge} ms) at most` })
  }

  /** SIGTERM: every worker drains (as one process would), then the admin endpoint closes. */
  async stop (): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    const members = [...this.members.values()]
    const gone = members.map(async (m) => await new Promise<void>((resolve) => {
      if (m.worker.isDead()) return resolve()
      m.worker.once('exit', () => { resolve() })
      m.peer.call('stop').catch(() => {})
    }))
    let timer: NodeJS.Timeout | undefined
    const limit = new Promise<void>((resolve) => { timer = setTimeout(resolve, this.config.limits.drainTimeoutMs + 5000) })
    await Promise.race([Promise.all(gone), limit])
    clearTimeout(timer)
    for (const m of members) if (!m.worker.isDead()) m.worker.process.kill('SIGKILL')
    await this.admin?.close()
    this.log.info('mqtt-guard stopped')
  }
}
