// The identity provider's keys from its JWKS URL, fetched and cached. One fetch at a time
// (concurrent CONNECTs share it), each bounded by a timeout. A cached JWKS is used for
// `cacheMs`; an unknown `kid` (key rotation) or a failed fetch fetches again at most once per
// `cooldownMs`, so a flood of tokens with made-up kids cannot hammer the IdP. A stale JWKS
// stays in use while fetching fails.

import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose'
import { performance } from 'node:perf_hooks'
import { AnswerTooLarge, readCapped } from '../../src/plugin/http-hook.js'

export interface JwksSettings { url: string, cacheMs: number, cooldownMs: number, timeoutMs: number }

/** Counted for the metric and for doctor. */
export interface JwksStats { fetches: { ok: number, failed: number } }

/** What doctor reads: the last fetch and how it went. */
export interface LastFetch { at: number, ms: number, ok: boolean, problem: string | undefined }

const MAX_BYTES = 1 << 20

/** Why a JWKS answer is not a usable key set, in words (never more than the IdP said). */
function parseJwks (status: number, type: string, body: string): JSONWebKeySet | string {
  if (status < 200 || status > 299) return `HTTP ${status}`
  let parsed: unknown
  try {
    parsed = JSON.parse(body)
  } catch {
    return `not JSON (content-type ${type === '' ? 'none' : type})`
  }
  const keys = (parsed as { keys?: unknown } | null)?.keys
  if (!Array.isArray(keys)) return 'JSON without a "keys" list'
  return parsed as JSONWebKeySet
}

export class JwksCache {
  private getKey: JWTVerifyGetKey | undefined
  private fetchedAt = 0
  /** When the last fetch started, for the cooldown. */
  private triedAt = -Infinity
  private inFlight: Promise<void> | undefined
  last: LastFetch | undefined

  constructor (private readonly settings: JwksSettings, private readonly stats: JwksStats, private readonly now: () => number = Date.now) {}

  /** Keys to verify with, or why there are none (no fetch has succeeded yet). */
  async keys (): Promise<JWTVerifyGetKey | { unavailable: string }> {
    if (this.getKey === undefined) await this.refresh()
    // A stale set is used while its successor is fetched: a slow IdP does not slow CONNECTs.
    else if (this.now() - this.fetchedAt >= this.settings.cacheMs) void this.refresh()
    return this.getKey ?? { unavailable: this.last?.problem ?? 'JWKS not fetched' }
  }

  /** Fetches at start, so the first clients do not wait for it. */
  prefetch (): void {
    void this.refresh()
  }

  /** A token named a key the cached set lacks: fetch again, unless one was tried within the cooldown. Returns whether the set changed. */
  async unknownKey (): Promise<boolean> {
    const before = this.getKey
    await this.refresh()
    return this.getKey !== before
  }

  /** One fetch at a time, and none within the cooldown of the last attempt (failed or not). */
  private async refresh (): Promise<void> {
    if (this.inFlight !== undefined) return await this.inFlight
    if (this.now() - this.triedAt < this.settings.cooldownMs) return
    this.triedAt = this.now()
    this.inFlight = this.fetch().finally(() => { this.inFlight = undefined })
    await this.inFlight
  }

  private async fetch (): Promise<void> {
    const start = performance.now()
    const problem = await this.load()
    const ms = Math.round(performance.now() - start)
    this.last = { at: this.now(), ms, ok: problem === undefined, problem }
    if (problem === undefined) this.stats.fetches.ok++
    else this.stats.fetches.failed++
  }

  /** Fetches and installs the set; returns the problem, or undefined when it worked. */
  private async load (): Promise<string | undefined> {
    try {
      const res = await fetch(this.settings.url, { signal: AbortSignal.timeout(this.settings.timeoutMs), headers: { accept: 'application/json' }, redirect: 'follow' })
      const body = await readCapped(res, MAX_BYTES)
      const jwks = parseJwks(res.status, res.headers.get('content-type') ?? '', body)
      if (typeof jwks === 'string') return jwks
      this.getKey = createLocalJWKSet(jwks)
      this.fetchedAt = this.now()
      return undefined
    } catch (err) {
      if (err instanceof AnswerTooLarge) return `answer over ${MAX_BYTES} bytes`
      const e = err as Error & { cause?: { code?: string } }
      if (e.name === 'TimeoutError' || e.name === 'AbortError') return `no answer within ${this.settings.timeoutMs} ms`
      return `${e.cause?.code ?? e.name}: ${e.message}`
    }
  }
}
