// trace: per-packet traces of both legs of the connections a trace covers. A trace comes from
// the config (`enabled`, `filters`) or is started at run time through the admin API
// (`POST /traces`, `GET /traces`, `DELETE /traces/{id}`), on every instance at once when
// Redis is configured. A connection no trace covers gets no tap: its packets cost nothing.

import { randomBytes } from 'node:crypto'
import type { Redis, Cluster } from 'ioredis'
import { definePlugin, type AdminRequest, type AdminResponse, type ConnectionInfo, type PacketTap, type PluginContext } from '../../src/plugin/api.js'
import { isGuardError } from '../../src/errors.js'
import { compileFilters, type CompiledFilters } from './filters.js'
import { checkTraceOptions, traceOptions, validateFilters, type TraceFilters, type TraceOptions } from './options.js'
import { TraceSink } from './sink.js'
import { ConnectionTrace, type TraceCounters } from './tap.js'
import { statsCounter } from '../../src/observe/metrics.js'
import { subscribeChannel } from '../../src/redis/call.js'
import { tracesToPcapng } from './pcapng.js'
import type { TraceLine } from './format.js'

export interface TraceSpec { id: string, filters: TraceFilters, startedAt: string, until: string | undefined }

interface Active { spec: TraceSpec, compiled: CompiledFilters, timer: NodeJS.Timeout | undefined }

const DEFAULT_FOR_MS = 600_000

/** `10m`, `90s`, `2h`, or milliseconds as a number; above `maxMs` (maxDurationMs) is an error. */
export function parseDuration (raw: unknown, maxMs: number): number | undefined {
  if (raw === undefined) return undefined
  let ms: number
  if (typeof raw === 'number' && Number.isInteger(raw) && raw > 0) {
    ms = raw
  } else {
    const m = typeof raw === 'string' ? /^(\d+)(ms|s|m|h)$/.exec(raw) : null
    if (m === null) throw new Error(`for: expected a duration like 90s, 10m or 2h, got ${JSON.stringify(raw)}`)
    ms = Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h']
  }
  if (ms > maxMs) throw new Error(`for: at most ${maxMs / 1000} s (the trace plugin's maxDurationMs), got ${JSON.stringify(raw)}`)
  return ms
}

/** An ID from the path, or undefined when its percent-encoding is malformed. */
function pathId (raw: string): string | undefined {
  try {
    return decodeURIComponent(raw)
  } catch {
    return undefined
  }
}

/**
 * `workers: N`: each worker writes a file of its own (`traces.jsonl` → `traces.w2.jsonl`), since
 * several processes rotating one file would lose lines; stdout is shared, a line at a time.
 */
export function workerFile (destination: string, worker: number | undefined): string {
  if (worker === undefined || destination === 'stdout') return destination
  const dot = destination.lastIndexOf('.')
  const slash = destination.lastIndexOf('/')
  return dot > slash + 1 ? `${destination.slice(0, dot)}.w${worker}${destination.slice(dot)}` : `${destination}.w${worker}`
}

export class Tracing {
  private readonly active = new Map<string, Active>()
  private sink: TraceSink
  private options: TraceOptions
  private readonly counters: TraceCounters & { droppedByBacklog: number } = { lines: 0, droppedByRate: 0, droppedByBacklog: 0 }
  private subscriber: Redis | Cluster | undefined
  /** Consoles watching a trace live, by trace ID. */
  private readonly watchers = new Map<string, Set<(text: string) => void>>()

  constructor (private readonly ctx: PluginContext<TraceOptions>) {
    const o = ctx.options
    this.options = o
    this.sink = new TraceSink(workerFile(o.destination, ctx.worker), o.rotateBytes, o.keepFiles)
    if (o.enabled) this.add({ id: 'config', filters: o.filters, startedAt: new Date().toISOString(), until: undefined })
    const { counters } = this
    statsCounter(ctx.metrics, 'mqtt_guard_trace_lines_total', 'Trace lines: written, or dropped (over maxLinesPerSecond for a connection, or the destination fell behind)', 'outcome',
      () => ({ written: counters.lines - counters.droppedByBacklog - this.sink.dropped, rate_limited: counters.droppedByRate, backlog: counters.droppedByBacklog + this.sink.dropped }))
  }

  private get channel (): string { return `${this.ctx.keyPrefix}control` }
  private get registry (): string { return `${this.ctx.keyPrefix}active` }

  /** Joins the other instances: their running traces, and what they start and stop from now on. */
  async start (): Promise<void> {
    const redis = this.ctx.redis
    if (redis === undefined) return
    this.subscriber = subscribeChannel(redis, this.channel, (message) => { this.onControl(message) })
    try {
      const running = await redis.hgetall(this.registry)
      for (const json of Object.values(running)) this.apply(JSON.parse(json) as TraceSpec)
    } catch (err) {
      this.ctx.log.warn({ err: (err as Error).message }, 'trace: cannot read the running traces from Redis')
    }
  }

  /** A connection several traces cover is traced once, under the newest (a console's, say). */
  tap (conn: ConnectionInfo): PacketTap | undefined {
    for (const { spec, compiled } of [...this.active.values()].reverse()) {
      if (compiled.connection(conn)) return new ConnectionTrace(conn, { id: spec.id, filters: compiled }, this.options, this.output(spec.id), this.ctx.instanceId, this.counters)
    }
    return undefined
  }

  /** Where a trace's lines go: the sink, and the consoles watching that trace live (if any). */
  private output (id: string): Pick<TraceSink, 'writeText'> {
    return {
      writeText: (text) => {
        this.sink.writeText(text)
        const watchers = this.watchers.get(id)
        if (watchers === undefined) return
        const line = text.trimEnd() // once, not once per viewer
        for (const w of watchers) w(line)
      }
    }
  }

  /** Calls `onLine` with each line of trace `id` this instance writes (no newline), until the returned stop. */
  watch (id: string, onLine: (text: string) => void): () => void {
    let set = this.watchers.get(id)
    if (set === undefined) this.watchers.set(id, set = new Set())
    set.add(onLine)
    return () => {
      set.delete(onLine)
      if (set.size === 0) this.watchers.delete(id)
    }
  }

  /** Adds a trace here (no announcement); false if it already ended. */
  private apply (spec: TraceSpec): boolean {
    const left = spec.until === undefined ? undefined : Date.parse(spec.until) - Date.now()
    if (left !== undefined && left <= 0) return false
    // Whatever another instance (or whoever writes to Redis) says, no longer than this one allows.
    const latest = Date.now() + this.options.maxDurationMs
    const until = left === undefined || Number.isNaN(left) || left > this.options.maxDurationMs ? new Date(latest).toISOString() : spec.until
    this.add({ ...spec, until })
    return true
  }

  private add (spec: TraceSpec): void {
    this.remove(spec.id)
    const left = spec.until === undefined ? undefined : Date.parse(spec.until) - Date.now()
    const timer = left === undefined ? undefined : setTimeout(() => { this.stop(spec.id) }, left)
    timer?.unref()
    this.active.set(spec.id, { spec, compiled: compileFilters(spec.filters), timer })
    this.ctx.log.info({ trace: spec.id, filters: spec.filters, until: spec.until }, 'trace started')
    this.ctx.retap()
  }

  private remove (id: string): boolean {
    const a = this.active.get(id)
    if (a === undefined) return false
    clearTimeout(a.timer)
    this.active.delete(id)
    return true
  }

  /** Starts a trace on every instance; returns its spec. Throws on bad filters. */
  async begin (rawFilters: unknown, rawFor: unknown, id?: string): Promise<TraceSpec> {
    const filters = validateFilters(rawFilters)
    const forMs = parseDuration(rawFor, this.options.maxDurationMs) ?? Math.min(DEFAULT_FOR_MS, this.options.maxDurationMs)
    const spec: TraceSpec = { id: id ?? randomBytes(4).toString('hex'), filters, startedAt: new Date().toISOString(), until: new Date(Date.now() + forMs).toISOString() }
    this.add(spec)
    await this.announce({ op: 'start', spec }, async (r) => { await r.hset(this.registry, spec.id, JSON.stringify(spec)) })
    return spec
  }

  stop (id: string): boolean {
    const removed = this.remove(id)
    if (removed) {
      this.ctx.log.info({ trace: id }, 'trace stopped')
      this.ctx.retap()
    }
    return removed
  }

  async end (id: string): Promise<boolean> {
    const here = this.stop(id)
    const told = await this.announce({ op: 'stop', id }, async (r) => { await r.hdel(this.registry, id) })
    return here || told
  }

  list (): TraceSpec[] {
    return [...this.active.values()].map((a) => a.spec)
  }

  private async announce (message: { op: 'start', spec: TraceSpec } | { op: 'stop', id: string }, store: (r: Redis | Cluster) => Promise<void>): Promise<boolean> {
    const redis = this.ctx.redis
    if (redis === undefined || redis.status !== 'ready') return false
    try {
      await store(redis)
      await redis.publish(this.channel, JSON.stringify({ ...message, from: this.ctx.instanceId }))
      return true
    } catch (err) {
      this.ctx.log.warn({ err: (err as Error).message }, 'trace: could not tell the other instances')
      return false
    }
  }

  private onControl (message: string): void {
    try {
      const m = JSON.parse(message) as { op?: string, spec?: TraceSpec, id?: string, from?: string }
      if (m.from === this.ctx.instanceId) return
      if (m.op === 'start' && m.spec !== undefined) this.apply({ ...m.spec, filters: validateFilters(m.spec.filters) })
      if (m.op === 'stop' && typeof m.id === 'string') this.stop(m.id)
    } catch (err) {
      this.ctx.log.warn({ err: (err as Error).message }, 'trace: bad control message ignored')
    }
  }

  async admin (req: AdminRequest): Promise<AdminResponse | undefined> {
    if (req.path === '/traces' && req.method === 'GET') return { status: 200, body: this.list() }
    if (req.path === '/traces' && req.method === 'POST') {
      const body = (req.body ?? {}) as { filters?: unknown, for?: unknown, id?: unknown }
      const unknown = typeof body === 'object' && body !== null && !Array.isArray(body) ? Object.keys(body).find((k) => k !== 'filters' && k !== 'for' && k !== 'id') : 'body'
      if (unknown !== undefined) return { status: 400, body: { error: `${unknown}: unknown (expected a body { filters, for }; payloads follow the plugin's payload option)` } }
      // `id`: one trace under one ID in every worker of a `workers: N` proxy (the primary picks it).
      if (body.id !== undefined && (typeof body.id !== 'string' || !/^[0-9a-f]{8}$/.test(body.id))) return { status: 400, body: { error: 'id: expected 8 hex digits (or no id: one is chosen)' } }
      try {
        return { status: 201, body: await this.begin(body.filters, body.for, body.id) }
      } catch (err) {
        return { status: 400, body: { error: isGuardError(err) || err instanceof Error ? err.message : String(err) } }
      }
    }
    const live = /^\/traces\/([^/]+)\/live$/.exec(req.path)
    if (live !== null && req.method === 'GET') {
      const id = pathId(live[1] as string)
      if (id === undefined) return { status: 400, body: { error: 'trace ID: malformed percent-encoding' } }
      if (!this.active.has(id)) return { status: 404, body: { error: `no trace ${id}` } }
      return { status: 200, body: undefined, events: (send) => this.watch(id, (line) => { send('line', line) }) }
    }
    if (req.path === '/traces/pcapng' && req.method === 'POST') {
      const lines = (req.body as { lines?: unknown } | undefined)?.lines
      if (!Array.isArray(lines)) return { status: 400, body: { error: 'expected {"lines": [trace lines]}' } }
      const out = tracesToPcapng(lines as TraceLine[])
      return { status: 200, body: { pcapng: out.pcapng.toString('base64'), packets: out.packets, skipped: out.skipped } }
    }
    const one = /^\/traces\/([^/]+)$/.exec(req.path)
    if (one !== null && req.method === 'DELETE') {
      const id = pathId(one[1] as string)
      if (id === undefined) return { status: 400, body: { error: 'trace ID: malformed percent-encoding' } }
      return await this.end(id) ? { status: 200, body: { id, stopped: true } } : { status: 404, body: { error: `no trace ${id}` } }
    }
    return undefined
  }

  /** SIGHUP with new options: a new destination, payload mode, filters of the config trace… */
  async reconfigure (next: TraceOptions): Promise<void> {
    const old = this.options
    this.options = next
    if (next.destination !== old.destination || next.rotateBytes !== old.rotateBytes || next.keepFiles !== old.keepFiles) {
      const previous = this.sink
      this.counters.droppedByBacklog += previous.dropped
      this.sink = new TraceSink(workerFile(next.destination, this.ctx.worker), next.rotateBytes, next.keepFiles)
      await previous.close()
    }
    if (this.remove('config')) this.ctx.log.info({ trace: 'config' }, 'trace stopped')
    // add() asks every connection for its tap again, with the new options.
    if (next.enabled) this.add({ id: 'config', filters: next.filters, startedAt: new Date().toISOString(), until: undefined })
    else this.ctx.retap()
  }

  async close (): Promise<void> {
    for (const id of [...this.active.keys()]) this.remove(id)
    this.subscriber?.disconnect()
    await this.sink.close()
  }
}

export default definePlugin<TraceOptions>({
  name: 'trace',
  options: traceOptions,
  validate: checkTraceOptions,
  async create (ctx) {
    const tracing = new Tracing(ctx)
    await tracing.start()
    return {
      name: 'trace',
      tap: (conn: ConnectionInfo) => tracing.tap(conn),
      admin: async (req: AdminRequest) => await tracing.admin(req),
      reconfigure: async (options: unknown) => { await tracing.reconfigure(options as TraceOptions) },
      close: async () => { await tracing.close() }
    }
  }
})
