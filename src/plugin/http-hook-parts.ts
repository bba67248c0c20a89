// The small parts of the HTTP hook client (http-hook.ts), apart so each can be tested alone:
// a TTL cache bounded in size, the circuit breaker, and the reading of a hook's answer
// (EMQX 5's HTTP authentication and authorization format) into a result or a clear cause.

/** A map whose entries expire; at most `max` entries (the oldest inserted goes first). */
export class TtlCache<V> {
  private readonly entries = new Map<string, { value: V, expires: number }>()

  constructor (private readonly max: number, private readonly now: () => number = Date.now) {}

  get size (): number {
    return this.entries.size
  }

  /** The value while it is fresh; an expired entry is removed. */
  get (key: string): V | undefined {
    const entry = this.entries.get(key)
    if (entry === undefined) return undefined
    if (entry.expires > this.now()) return entry.value
    this.entries.delete(key)
    return undefined
  }

  /** The value even if it expired a moment ago (a decision the caller just checked was fresh). */
  peek (key: string): V | undefined {
    return this.entries.get(key)?.value
  }

  set (key: string, value: V, ttlMs: number): void {
    if (ttlMs <= 0) return
    // Delete first: a key set again moves to the end, so eviction stays oldest-first.
    this.entries.delete(key)
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value as string)
    this.entries.set(key, { value, expires: this.now() + ttlMs })
  }

  clear (): void {
    this.entries.clear()
  }
}

export type CircuitState = 'closed' | 'open' | 'half-open'

export interface BreakerOptions {
  /** Consecutive failures that open the circuit. */
  failures: number
  /** How long it stays open before one request may try again (half-open). */
  openMs: number
}

export const BREAKER_DEFAULTS: BreakerOptions = { failures: 5, openMs: 10_000 }

/**
 * Closed: every request goes out. After `failures` failures in a row it opens: nothing goes out
 * and callers answer by onError at once (a dead service costs nothing per CONNECT). After
 * `openMs` one request (the probe) goes out, half-open: its success closes, its failure opens again.
 */
export class Breaker {
  state: CircuitState = 'closed'
  private failed = 0
  private openedAt = 0
  private probing = false

  constructor (private readonly options: BreakerOptions | undefined, private readonly now: () => number = Date.now) {}

  /** May a request go out now? A true in half-open makes the caller the probe. */
  allow (): boolean {
    if (this.options === undefined || this.state === 'closed') return true
    if (this.state === 'open') {
      if (this.now() - this.openedAt < this.options.openMs) return false
      this.state = 'half-open'
      this.probing = false
    }
    if (this.probing) return false
    this.probing = true
    return true
  }

  /** Returns true when this success closed the circuit. */
  succeeded (): boolean {
    this.failed = 0
    this.probing = false
    if (this.state === 'closed') return false
    this.state = 'closed'
    return true
  }

  /** Returns true when this failure opened the circuit. */
  failedOnce (): boolean {
    this.failed++
    this.probing = false
    if (this.options === undefined) return false
    if (this.state === 'half-open' || (this.state === 'closed' && this.failed >= this.options.failures)) {
      this.state = 'open'
      this.openedAt = this.now()
      return true
    }
    return false
  }

  get consecutiveFailures (): number {
    return this.failed
  }
}

export type HookResult = 'allow' | 'deny' | 'ignore'

export interface HookAnswer {
  readonly result: HookResult
  /** EMQX's `is_superuser` (authentication only; false when absent). */
  readonly superuser: boolean
}

/** Why a hook gave no answer: each is a label of the requests metric and a log field. */
export type FailureCause = 'timeout' | 'unreachable' | 'bad_status' | 'bad_answer' | 'circuit_open' | 'in_flight_limit'

export interface HookFailure {
  readonly cause: FailureCause
  /** Readable, without secrets: `status 500`, `not JSON (content-type text/html)`. */
  readonly detail: string
}

export const ALLOWED: HookAnswer = { result: 'allow', superuser: false }
const IGNORED: HookAnswer = { result: 'ignore', superuser: false }
const RESULTS = new Set<string>(['allow', 'deny', 'ignore'])

/**
 * A hook's HTTP answer, read as EMQX 5 reads it: 204 allows; 200 (any 2xx) carries
 * `{"result": "allow"|"deny"|"ignore", "is_superuser": bool}` (no result: ignore); 4xx is
 * ignore (EMQX ignores the body). 5xx, 3xx, a body that is not JSON or an unknown result are
 * failures, answered by onError.
 */
export function readAnswer (status: number, contentType: string | null, body: string): HookAnswer | HookFailure {
  if (status === 204) return ALLOWED
  if (status >= 400 && status < 500) return IGNORED
  if (status < 200 || status >= 300) return { cause: 'bad_status', detail: `status ${status}` }
  if (contentType !== null && !/json/i.test(contentType)) return { cause: 'bad_answer', detail: `not JSON (content-type ${contentType.split(';')[0] ?? ''})` }
  let parsed: unknown
  try {
    parsed = JSON.parse(body)
  } catch {
    return { cause: 'bad_answer', detail: `not JSON (${body.length} bytes that do not parse)` }
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return { cause: 'bad_answer', detail: 'not a JSON object' }
  const { result, is_superuser: superuser } = parsed as Record<string, unknown>
  if (result === undefined) return IGNORED
  if (typeof result !== 'string' || !RESULTS.has(result)) return { cause: 'bad_answer', detail: `result ${JSON.stringify(result).slice(0, 40)} (expected allow, deny or ignore)` }
  if (superuser !== undefined && typeof superuser !== 'boolean' && superuser !== 'true' && superuser !== 'false') {
    return { cause: 'bad_answer', detail: 'is_superuser is not true or false' }
  }
  return { result: result as HookResult, superuser: superuser === true || superuser === 'true' }
}

export function isFailure (answer: HookAnswer | HookFailure): answer is HookFailure {
  return 'cause' in answer
}
