// Users kept in Redis, shared by a fleet of proxies: one hash per user at
// `<keyPrefix>user:<name>` with field `password` (a hash in any format password-file.ts reads)
// and optional `groups` (comma-separated). Answers are cached briefly, misses included.

import type { Redis, Cluster } from 'ioredis'
import { parseHash, type PasswordHash } from './password-file.js'
import { redisCall } from '../../src/redis/call.js'

export interface RedisUsersOptions {
  /** How long an answer (found or not) is reused. 0 = ask Redis every time. */
  cacheMs: number
}

export const REDIS_USERS_DEFAULTS: RedisUsersOptions = { cacheMs: 5000 }

export interface RedisUser { hash: PasswordHash, groups: string[] }

/** `unavailable`: Redis did not answer, or the user's record is broken; nobody gets in on it. */
export type Lookup = { found: true, user: RedisUser } | { found: false } | { unavailable: string }

const MAX_CACHED = 10_000

export class RedisUsers {
  private readonly cache = new Map<string, { at: number, lookup: Lookup }>()

  constructor (
    private readonly redis: Redis | Cluster,
    private readonly keyPrefix: string,
    private readonly options: RedisUsersOptions,
    private readonly timeoutMs: number
  ) {}

  key (name: string): string {
    return `${this.keyPrefix}user:${name}`
  }

  async lookup (name: string): Promise<Lookup> {
    const now = Date.now()
    const cached = this.cache.get(name)
    if (cached !== undefined && now - cached.at < this.options.cacheMs) return cached.lookup
    const lookup = await this.fetch(name)
    if (!('unavailable' in lookup) && this.options.cacheMs > 0) {
      if (this.cache.size >= MAX_CACHED) this.cache.clear()
      this.cache.set(name, { at: now, lookup })
    }
    return lookup
  }

  private async fetch (name: string): Promise<Lookup> {
    let record: Record<string, string>
    try {
      record = await redisCall(this.redis, this.timeoutMs, async (r) => await r.hgetall(this.key(name)))
    } catch (err) {
      return { unavailable: `redis: ${(err as Error).message}` }
    }
    const password = record['password']
    if (password === undefined) return { found: false }
    try {
      const groups = (record['groups'] ?? '').split(',').map((g) => g.trim()).filter((g) => g !== '')
      return { found: true, user: { hash: parseHash(password), groups } }
    } catch (err) {
      return { unavailable: `redis record ${this.key(name)}: ${(err as Error).message}` }
    }
  }

  clear (): void {
    this.cache.clear()
  }
}
