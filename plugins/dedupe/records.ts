// Where acknowledged QoS 1 messages are remembered. A record is a field, its value the digest:
//   `<client ID>\n<i|o><packet ID>`  acknowledged in that direction (i: client → broker)
//   `<client ID>\nw<digest>`         window mode: when this content was acknowledged (ms)
// A TOMBSTONE value says "this packet ID carries new data now": a non-DUP PUBLISH reused the ID,
// so an older record for it must not match.
// Without Redis, LocalRecords keeps them in this process (bounded, expiring). With Redis,
// RedisRecords keeps them for every instance: written in batches (one HSET per time bucket
// per flush, never awaited by a message), looked up (awaited) only for a DUP or in window
// mode; LocalRecords then holds only window-mode records, as a cache.

import type { Redis, Cluster } from 'ioredis'
import { redisCall } from '../../src/redis/call.js'

export const TOMBSTONE = '-'

export function recordKey (clientId: string, kind: 'i' | 'o' | 'w', id: number | string): string {
  return `${clientId}\n${kind}${id}`
}

interface Local { value: string, at: number }

/** Insertion-ordered, so the oldest records are at the front; bounded and expiring. */
export class LocalRecords {
  private readonly map = new Map<string, Local>()

  constructor (private readonly ttlMs: number, private readonly maxEntries: number, private readonly now: () => number = Date.now) {}

  set (key: string, value: string): void {
    const at = this.now()
    this.map.delete(key)
    this.map.set(key, { value, at })
    // Evict from the front: over the limit, or expired (a few per insert keeps this O(1)).
    let checked = 0
    for (const [k, e] of this.map) {
      if (this.map.size <= this.maxEntries && (at - e.at < this.ttlMs || checked >= 4)) break
      this.map.delete(k)
      checked++
    }
  }

  get (key: string): string | undefined {
    const e = this.map.get(key)
    if (e === undefined) return undefined
    if (this.now() - e.at >= this.ttlMs) {
      this.map.delete(key)
      return undefined
    }
    return e.value
  }

  get size (): number {
    return this.map.size
  }
}

export interface RedisStats { flushes: number, written: number, dropped: number, lookups: number, lookupFailures: number, /** waiting for the next batch */ queued: number }

export class RedisRecords {
  readonly stats: RedisStats = { flushes: 0, written: 0, dropped: 0, lookups: 0, lookupFailures: 0, queued: 0 }
  private readonly bucketMs: number
  private readonly buckets: number
  private pending = new Map<number, Map<string, string>>()
  private pendingCount = 0
  private timer: NodeJS.Timeout | null = null
  private expiring = -1

  constructor (
    private readonly redis: Redis | Cluster,
    private readonly prefix: string,
    private readonly ttlMs: number,
    private readonly flushMs: number,
    private readonly timeoutMs: number,
    private readonly onError: (what: string, err: unknown) => void,
    private readonly now: () => number = Date.now
  ) {
    // Four buckets per TTL: a record lives between ttlMs and ttlMs + bucketMs.
    this.bucketMs = Math.max(1000, Math.ceil(ttlMs / 4))
    this.buckets = Math.ceil(ttlMs / this.bucketMs) + 1
  }

  private key (bucket: number): string {
    return `${this.prefix}b:${bucket}`
  }

  /** Queues a record for the next batch; never waits. */
  write (field: string, value: string): void {
    const bucket = Math.floor(this.now() / this.bucketMs)
    let fields = this.pending.get(bucket)
    if (fields === undefined) {
      fields = new Map()
      this.pending.set(bucket, fields)
    }
    if (!fields.has(field)) this.stats.queued = ++this.pendingCount
    fields.set(field, value)
    if (this.pendingCount >= 1000) this.flush()
    else this.timer ??= setTimeout(() => { this.flush() }, this.flushMs)
  }

  flush (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    if (this.pendingCount === 0) return
    const batch = this.pending
    const count = this.pendingCount
    this.pending = new Map()
    this.pendingCount = 0
    this.stats.queued = 0
    // Queued commands would pile up in memory while Redis is away: drop the batch instead
    // (a later DUP is then forwarded, at-least-once is kept).
    if (this.redis.status !== 'ready') {
      this.stats.dropped += count
      this.onError('write', new Error(`redis ${this.redis.status}`))
      return
    }
    this.stats.flushes++
    const pipeline = this.redis.pipeline()
    for (const [bucket, fields] of batch) {
      const key = this.key(bucket)
      pipeline.hset(key, fields)
      if (bucket !== this.expiring) {
        pipeline.pexpireat(key, (bucket + 1) * this.bucketMs + this.ttlMs)
        this.expiring = bucket
      }
    }
    pipeline.exec().then((results) => {
      const failed = results?.find(([err]) => err !== null)
      if (failed === undefined) {
        this.stats.written += count
        return
      }
      this.stats.dropped += count
      this.expiring = -1
      this.onError('write', failed[0])
    }, (err: unknown) => {
      this.stats.dropped += count
      this.expiring = -1
      this.onError('write', err)
    })
  }

  /** The newest value of `field` in the buckets of the last ttlMs, or undefined. */
  async read (field: string): Promise<string | undefined> {
    this.stats.lookups++
    // What is still in this process's batch is newer than anything in Redis.
    const now = this.now()
    const current = Math.floor(now / this.bucketMs)
    for (let b = current; b > current - this.buckets; b--) {
      const queued = this.pending.get(b)?.get(field)
      if (queued !== undefined) return queued
    }
    try {
      const values = await redisCall(this.redis, this.timeoutMs, async (r) => {
        const pipeline = r.pipeline()
        for (let b = current; b > current - this.buckets; b--) pipeline.hget(this.key(b), field)
        return await pipeline.exec()
      })
      for (const [err, value] of values ?? []) {
        if (err !== null) throw err
        if (typeof value === 'string') return value
      }
      return undefined
    } catch (err) {
      this.stats.lookupFailures++
      this.onError('lookup', err)
      return undefined
    }
  }

  close (): void {
    this.flush()
  }
}
