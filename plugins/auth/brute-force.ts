// Brute-force guard: failed logins are counted per address and per user name in a fixed
// window; a key that reaches maxFailures is blocked for blockMs, and its attempts are refused
// without verifying any hash. In memory, per proxy process (not shared through Redis).

export interface BruteForceOptions {
  maxFailures: number
  windowMs: number
  blockMs: number
  /** Upper bound on tracked keys, so random user names cannot grow memory without end. */
  maxKeys: number
}

export const BRUTE_FORCE_DEFAULTS: BruteForceOptions = { maxFailures: 5, windowMs: 60_000, blockMs: 300_000, maxKeys: 100_000 }

interface Entry { windowStart: number, failures: number, blockedUntil: number }

export interface Block { key: string, until: number }

/** What a failure led to: a new block (with the evidence) or nothing. */
export interface FailureResult { blocked: Array<{ key: string, failures: number, until: number }> }

export class BruteForce {
  private readonly entries = new Map<string, Entry>()

  constructor (private readonly options: BruteForceOptions, private readonly now: () => number = Date.now) {}

  /** The first of the keys (e.g. `address:1.2.3.4`, `user:bob`) that is blocked now. */
  blocked (keys: string[]): Block | undefined {
    const now = this.now()
    for (const key of keys) {
      const entry = this.entries.get(key)
      if (entry !== undefined && entry.blockedUntil > now) return { key, until: entry.blockedUntil }
    }
    return undefined
  }

  failed (keys: string[]): FailureResult {
    const now = this.now()
    const result: FailureResult = { blocked: [] }
    for (const key of keys) {
      let entry = this.entries.get(key)
      if (entry === undefined || now - entry.windowStart >= this.options.windowMs) {
        entry = { windowStart: now, failures: 0, blockedUntil: entry?.blockedUntil ?? 0 }
        this.set(key, entry)
      }
      entry.failures++
      if (entry.failures >= this.options.maxFailures && entry.blockedUntil <= now) {
        entry.blockedUntil = now + this.options.blockMs
        result.blocked.push({ key, failures: entry.failures, until: entry.blockedUntil })
        // A block starts a fresh window: after it ends, maxFailures more are needed.
        entry.windowStart = entry.blockedUntil
        entry.failures = 0
      }
    }
    return result
  }

  /** A successful login clears its user name's count (not the address's). */
  succeeded (key: string): void {
    const entry = this.entries.get(key)
    if (entry !== undefined && entry.blockedUntil <= this.now()) this.entries.delete(key)
  }

  private set (key: string, entry: Entry): void {
    this.entries.delete(key)
    this.entries.set(key, entry)
    if (this.entries.size <= this.options.maxKeys) return
    const now = this.now()
    for (const [k, e] of this.entries) {
      if (e.blockedUntil <= now && now - e.windowStart >= this.options.windowMs) this.entries.delete(k)
    }
    // Still too many: forget the oldest (Map keeps insertion order).
    for (const k of this.entries.keys()) {
      if (this.entries.size <= this.options.maxKeys) break
      this.entries.delete(k)
    }
  }

  get size (): number {
    return this.entries.size
  }
}
