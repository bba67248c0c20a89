// The HTTP hook client that the auth and acl plugins share: one POST per question to a service
// that answers in EMQX 5's format, bounded in time (timeoutMs, AbortSignal), in number
// (maxConcurrent in flight, no queue), guarded by a circuit breaker, and remembered (a TTL cache
// bounded in size, deny answers for less long). Node's global fetch (undici) keeps connections
// alive. Nothing here logs, counts or returns a request's body or headers: they hold passwords
// and bearer secrets; causes are words and status codes.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { Logger } from 'pino'
import { z } from 'zod'
import { counts, expected, int, oneOf, strictOptions, text } from '../config/zod.js'
import type { Finding } from '../views.js'
import {
  BREAKER_DEFAULTS, Breaker, TtlCache, isFailure, readAnswer,
  type BreakerOptions, type FailureCause, type HookAnswer, type HookFailure
} from './http-hook-parts.js'

export { ALLOWED, isFailure, type FailureCause, type HookAnswer, type HookFailure, type HookResult } from './http-hook-parts.js'

export type OnError = 'deny' | 'allow' | 'next'

export interface HttpHookOptions {
  url: string
  timeoutMs: number
  /** How long an allow answer is reused (0: never). */
  cacheMs: number
  /** How long a deny or ignore answer is reused. */
  denyCacheMs: number
  cacheMax: number
  maxConcurrent: number
  onError: OnError
  breaker: BreakerOptions | undefined
  /** Sent as they are (a bearer secret): never logged. */
  headers: Record<string, string>
  /** JSON body: each value a template with ${placeholder}s, rendered as a string. */
  body: Record<string, string>
}

/** Largest answer read; a bigger one is a bad answer (a hook's answer is a line of JSON). */
export const MAX_ANSWER_BYTES = 64 * 1024
const PLACEHOLDER = /\$\{([a-z_]+)\}/g

function checkUrl (url: string, ctx: z.RefinementCtx): void {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    ctx.addIssue({ code: 'custom', message: `expected an http:// or https:// URL, got ${JSON.stringify(url)}` })
    return
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') ctx.addIssue({ code: 'custom', message: `expected an http:// or https:// URL, got ${parsed.protocol}` })
  // fetch refuses them, and a secret belongs in `headers`, which are never logged.
  if (parsed.username !== '' || parsed.password !== '') ctx.addIssue({ code: 'custom', message: 'a user or password in the URL is not accepted: put a secret in headers (headers: { authorization: "Bearer ..." })' })
}

/** The `http` option of a plugin, whose body may use `placeholders`; `body` defaults to `defaultBody`. */
export function httpHookSchema (placeholders: readonly string[], defaultBody: Record<string, string>): z.ZodType<HttpHookOptions> {
  const known = new Set(placeholders)
  const template = z.record(z.string(), z.string(expected('a string template')), expected('an object of field: "template with ${placeholder}"'))
  return strictOptions({
    url: text('an http:// or https:// URL').superRefine(checkUrl),
    timeoutMs: int(1).default(1000),
    cacheMs: int(0).default(60_000),
    denyCacheMs: int(0).optional(),
    cacheMax: int(1).default(100_000),
    maxConcurrent: int(1).default(64),
    onError: oneOf(['deny', 'allow', 'next']).default('deny'),
    breaker: counts(BREAKER_DEFAULTS, { failures: 1, openMs: 1 }),
    headers: z.record(z.string(), z.string(expected('a string')), expected('an object of header: value')).default({}),
    body: template.optional()
  }).superRefine((o, ctx) => {
    for (const [field, value] of Object.entries(o.body ?? {})) {
      for (const [, name] of value.matchAll(PLACEHOLDER)) {
        if (!known.has(name as string)) ctx.addIssue({ code: 'custom', path: ['body', field], message: `unknown placeholder \${${name as string}} (known: ${placeholders.map((p) => `\${${p}}`).join(', ')})` })
      }
    }
  }).transform((o) => ({
    ...o,
    // Deny answers are kept for less long by default: a user just added should not wait a minute.
    denyCacheMs: o.denyCacheMs ?? Math.min(o.cacheMs, 10_000),
    body: o.body ?? defaultBody
  }))
}

/** The request body for `values`: every template rendered, a missing value as "". */
export function renderBody (body: Record<string, string>, values: Record<string, string | undefined>): string {
  const out: Record<string, string> = {}
  for (const [field, value] of Object.entries(body)) out[field] = value.replace(PLACEHOLDER, (_m, name: string) => values[name] ?? '')
  return JSON.stringify(out)
}

interface HookMetrics {
  requests: Counter<'result'>
  cache: Counter<'outcome'>
  duration: Histogram
  circuit: Gauge
}

function metric<T> (registry: Registry, name: string, make: () => T): T {
  // A reconfigured plugin makes a new hook on the same registry: the metric is registered once.
  return (registry.getSingleMetric(name) as T | undefined) ?? make()
}

function hookMetrics (registry: Registry, prefix: string): HookMetrics {
  const registers = [registry]
  return {
    requests: metric(registry, `${prefix}_requests_total`, () => new Counter({
      name: `${prefix}_requests_total`, help: 'HTTP hook questions by result: allow, deny, ignore, or why no answer came (timeout, unreachable, bad_status, bad_answer; circuit_open and in_flight_limit were not sent)', labelNames: ['result'], registers
    })),
    cache: metric(registry, `${prefix}_cache_lookups_total`, () => new Counter({
      name: `${prefix}_cache_lookups_total`, help: 'HTTP hook answers looked up in the cache: hit or miss', labelNames: ['outcome'], registers
    })),
    duration: metric(registry, `${prefix}_request_duration_seconds`, () => new Histogram({
      name: `${prefix}_request_duration_seconds`, help: 'HTTP hook requests, from sending to the answer read (or the failure)', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers
    })),
    circuit: metric(registry, `${prefix}_circuit_state`, () => new Gauge({
      name: `${prefix}_circuit_state`, help: 'HTTP hook circuit breaker: 0 closed, 1 half-open (one probe), 2 open (answered by onError)', registers
    }))
  }
}

const CIRCUIT = { closed: 0, 'half-open': 1, open: 2 } as const

/** Thrown by readCapped past its bound; the answer is not read further. */
export class AnswerTooLarge extends Error {}

/** A response's body as text, read only up to `maxBytes` (an IdP or hook cannot fill the memory). */
export async function readCapped (response: Response, maxBytes = MAX_ANSWER_BYTES): Promise<string> {
  if (response.body === null) return ''
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength
    if (size > maxBytes) throw new AnswerTooLarge()
    chunks.push(Buffer.from(chunk))
  }
  return Buffer.concat(chunks).toString('utf8')
}

function fetchFailure (err: unknown, timeoutMs: number): HookFailure {
  const e = err as Error & { cause?: { code?: string, message?: string } }
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return { cause: 'timeout', detail: `no answer within ${timeoutMs} ms` }
  if (err instanceof AnswerTooLarge) return { cause: 'bad_answer', detail: `answer larger than ${MAX_ANSWER_BYTES} bytes` }
  // undici's cause names the socket error (ECONNREFUSED 127.0.0.1:8080), never the request.
  return { cause: 'unreachable', detail: (e.cause?.code ?? e.cause?.message ?? e.message).slice(0, 120) }
}

/** Where the hook is, for logs and findings: the URL without its query (which may hold a token). */
export function hookTarget (url: string): string {
  const u = new URL(url)
  return `${u.origin}${u.pathname}`
}

/** What `doctor` is told: outcomes of the last minutes. */
const WINDOW_MS = 10 * 60_000
const RECENT = 500

interface Outcome { at: number, result: string, ms: number, detail?: string }

export interface HttpHookContext {
  readonly log: Logger
  readonly metrics: Registry
  /** `mqtt_guard_auth_http`: the metrics' names start with it. */
  readonly metricPrefix: string
  /** `auth` or `acl`: findings' IDs and words. */
  readonly name: string
  readonly now?: () => number
}

export class HttpHook {
  readonly target: string
  private readonly cache: TtlCache<HookAnswer>
  private readonly breaker: Breaker
  private readonly inFlight = new Map<string, Promise<HookAnswer | HookFailure>>()
  private readonly metrics: HookMetrics
  private readonly headers: Record<string, string>
  private readonly recent: Outcome[] = []
  private readonly now: () => number
  /** The cache counter's two series, bound once: a lookup is on the packet path (acl). */
  private readonly hits: { inc: () => void }
  private readonly misses: { inc: () => void }

  constructor (readonly options: HttpHookOptions, private readonly ctx: HttpHookContext) {
    this.now = ctx.now ?? Date.now
    this.target = hookTarget(options.url)
    this.cache = new TtlCache(options.cacheMax, this.now)
    this.breaker = new Breaker(options.breaker, this.now)
    this.metrics = hookMetrics(ctx.metrics, ctx.metricPrefix)
    this.metrics.circuit.set(0)
    this.hits = this.metrics.cache.labels({ outcome: 'hit' })
    this.misses = this.metrics.cache.labels({ outcome: 'miss' })
    this.headers = { 'content-type': 'application/json', accept: 'application/json', ...options.headers }
  }

  /** A cached answer, synchronously (the hot path): counted as a hit, or a miss. */
  cached (key: string): HookAnswer | undefined {
    const answer = this.cache.get(key)
    if (answer === undefined) this.misses.inc()
    else this.hits.inc()
    return answer
  }

  /** A cached answer even if it expired since `cached` said it was there; not counted. */
  peek (key: string): HookAnswer | undefined {
    return this.cache.peek(key)
  }

  /**
   * Asks the service (callers looked in the cache first). The same question already in flight
   * is joined. Over maxConcurrent, or with the circuit open, it fails at once: no queue.
   */
  async ask (key: string, body: string): Promise<HookAnswer | HookFailure> {
    const joined = this.inFlight.get(key)
    if (joined !== undefined) return await joined
    if (this.inFlight.size >= this.options.maxConcurrent) return this.skipped('in_flight_limit', `${this.options.maxConcurrent} requests in flight (maxConcurrent)`)
    if (!this.breaker.allow()) return this.skipped('circuit_open', `circuit open after ${this.breaker.consecutiveFailures} failures in a row`)
    this.metrics.circuit.set(CIRCUIT[this.breaker.state])
    const pending = this.send(body).then((answer) => {
      if (!isFailure(answer)) this.cache.set(key, answer, answer.result === 'allow' ? this.options.cacheMs : this.options.denyCacheMs)
      return answer
    }).finally(() => { this.inFlight.delete(key) })
    this.inFlight.set(key, pending)
    return await pending
  }

  private skipped (cause: FailureCause, detail: string): HookFailure {
    this.metrics.requests.inc({ result: cause })
    this.remember({ at: this.now(), result: cause, ms: 0, detail })
    return { cause, detail }
  }

  private async send (body: string): Promise<HookAnswer | HookFailure> {
    const started = performance.now()
    let answer: HookAnswer | HookFailure
    try {
      const response = await fetch(this.options.url, {
        method: 'POST', headers: this.headers, body, redirect: 'manual', signal: AbortSignal.timeout(this.options.timeoutMs)
      })
      // Read every answer (4xx and 5xx too): an unread body holds the kept-alive connection.
      const text = await readCapped(response)
      answer = readAnswer(response.status, response.headers.get('content-type'), text)
    } catch (err) {
      answer = fetchFailure(err, this.options.timeoutMs)
    }
    const ms = performance.now() - started
    this.metrics.duration.observe(ms / 1000)
    this.settle(answer, ms)
    return answer
  }

  private settle (answer: HookAnswer | HookFailure, ms: number): void {
    const failed = isFailure(answer)
    this.metrics.requests.inc({ result: failed ? answer.cause : answer.result })
    this.remember({ at: this.now(), result: failed ? answer.cause : answer.result, ms, ...(failed ? { detail: answer.detail } : {}) })
    const fields = { plugin: this.ctx.name, hook: this.target }
    if (failed && this.breaker.failedOnce()) {
      this.ctx.log.warn({ ...fields, failures: this.breaker.consecutiveFailures, openMs: this.options.breaker?.openMs, cause: answer.cause, detail: answer.detail, onError: this.options.onError }, 'http hook: circuit opened')
    } else if (!failed && this.breaker.succeeded()) {
      this.ctx.log.info(fields, 'http hook: circuit closed')
    }
    this.metrics.circuit.set(CIRCUIT[this.breaker.state])
  }

  private remember (outcome: Outcome): void {
    if (this.recent.length >= RECENT) this.recent.shift()
    this.recent.push(outcome)
  }

  get circuit (): 'closed' | 'open' | 'half-open' {
    return this.breaker.state
  }

  /** SIGHUP: answers are asked again. */
  clear (): void {
    this.cache.clear()
  }

  /** `doctor`: a service that failed or was slow in the last minutes. */
  diagnose (): Finding[] {
    const now = this.now()
    const rows = this.recent.filter((o) => now - o.at <= WINDOW_MS)
    const failures = rows.filter((o) => o.detail !== undefined)
    const sent = rows.filter((o) => o.result !== 'circuit_open' && o.result !== 'in_flight_limit')
    const findings: Finding[] = []
    const what = `${this.ctx.name} HTTP hook ${this.target}`
    if (failures.length > 0 || this.breaker.state !== 'closed') {
      const byCause = new Map<string, number>()
      for (const f of failures) byCause.set(f.result, (byCause.get(f.result) ?? 0) + 1)
      const last = failures.at(-1)
      findings.push({
        id: `${this.ctx.name}-http-failing`,
        severity: this.breaker.state !== 'closed' || failures.length * 2 >= rows.length ? 'error' : 'warning',
        summary: `${what}: ${failures.length} of ${rows.length} questions got no answer in the last ${WINDOW_MS / 60_000} minutes (circuit ${this.breaker.state})`,
        evidence: [
          `by cause: ${[...byCause].map(([c, n]) => `${c} ${n}`).join(', ')}`,
          ...(last === undefined ? [] : [`last: ${last.result}: ${last.detail ?? ''} at ${new Date(last.at).toISOString()}`]),
          `onError: ${this.options.onError}, timeoutMs: ${this.options.timeoutMs}, maxConcurrent: ${this.options.maxConcurrent}`
        ],
        fix: `check that ${this.target} is up and answers within timeoutMs with JSON {"result": ...}; until then clients are answered by onError (${this.options.onError})`
      })
    }
    const slow = sent.filter((o) => o.ms * 2 > this.options.timeoutMs)
    if (sent.length > 0 && slow.length * 10 >= sent.length) {
      const max = Math.max(...sent.map((o) => o.ms))
      findings.push({
        id: `${this.ctx.name}-http-slow`,
        severity: 'warning',
        summary: `${what} is slow: ${slow.length} of ${sent.length} answers took more than half of timeoutMs (${this.options.timeoutMs} ms)`,
        evidence: [`slowest: ${Math.round(max)} ms`, `mean: ${Math.round(sent.reduce((n, o) => n + o.ms, 0) / sent.length)} ms`],
        fix: 'make the service faster or raise cacheMs (fewer questions); raise timeoutMs only if the clients can wait that long at CONNECT'
      })
    }
    return findings
  }
}
