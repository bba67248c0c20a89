// Where acknowledged QoS 1 messages are remembered. A record key is `<client ID>\n<field>`:
//   field `<i|o><packet ID>`  acknowledged in that direction (i: client → broker), value the digest
//   field `w<digest>`         window mode: when this content was acknowledged (ms)
// A TOMBSTONE value says "this packet ID carries new data now": a non-DUP PUBLISH reused the ID,
// so an older record for it must not match.
// Without Redis, LocalRecords keeps them in this process (bounded, expiring). With Redis,
// RedisRecords keeps them for every instance, as fields of one hash per shard and time bucket,
// `<prefix>b:{s:<shard>}:<bucket>`, the shard a hash of the client ID (shardOf). The hash tag
// puts every bucket of a shard, so every record of a client, in one Redis Cluster slot: a
// lookup is one pipeline to one node; a flush is one pipeline on one server, and on a Cluster
// plain commands that auto-pipelining sends as one write per node.
// Records are written in batches (one HSET per shard and bucket per flush, never awaited by a
// message) and looked up (awaited) only for a DUP or in window mode; LocalRecords then holds
// only window-mode records, as a cache.

import type { Redis, Cluster } from 'ioredis'
import { redisCall } from '../../src/redis/call.js'
import { hashTag } from '../../src/redis/hash-tag.js'

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

/**
 * How many shards the records are spread over. Few enough that a busy flush stays a few
 * commands (one per shard and bucket, not one per client); enough to spread the records over
 * the primaries of a Cluster. It is part of the key names: changing it is a key layout change.
 */
export const SHARDS = 16

/** The shard of a client's records: FNV-1a (32 bits) of the client ID's UTF-16 code units. */
export function shardOf (clientId: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < clientId.length; i++) h = Math.imul(h ^ clientId.charCodeAt(i), 0x01000193)
  return (h >>> 0) % SHARDS
}

export interface RedisStats { flushes: number, written: number, dropped: number, lookups: number, lookupFailures: number, /** waiting for the next batch */ queued: number }

/** A batch: by shard, by bucket, field → value. */
type Batch = Map<number, Map<number, Map<string, string>>>

export class RedisRecords {
  readonly stats: RedisStats = { flushes: 0, written: 0, dropped: 0, lookups: 0, lookupFailures: 0, queued: 0 }
  private readonly bucketMs: number
  private readonly buckets: number
  private pending: Batch = new Map()
  private pendingCount = 0
  private timer: NodeJS.Timeout | null = null
  /** Per shard, the bucket whose expiry is set (so PEXPIREAT goes once per bucket). */
  private readonly expiring = new Array<number>(SHARDS).fill(-1)

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

  /** `<prefix>b:{s:<shard>}:<bucket>`. */
  key (shard: number, bucket: number): string {
    return `${this.prefix}b:${hashTag('s', String(shard))}:${bucket}`
  }

  /** Queues a record for the next batch; never waits. */
  write (field: string, value: string): void {
    const bucket = Math.floor(this.now() / this.bucketMs)
    const shard = shardOf(clientOf(field))
    let buckets = this.pending.get(shard)
    if (buckets === undefined) this.pending.set(shard, buckets = new Map())
    let fields = buckets.get(bucket)
    if (fields === undefined) buckets.set(bucket, fields = new Map())
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
    if (this.redis.isCluster) this.sendEach(batch)
    else this.sendPipelined(batch)
  }

  /** Calls `write` for each HSET of the group and the PEXPIREAT a new bucket needs; its count. */
  private commands (group: Batch, write: (key: string, fields: Map<string, string>, expireAt: number | undefined) => void): number {
    let count = 0
    for (const [shard, buckets] of group) {
      for (const [bucket, fields] of buckets) {
        count += fields.size
        const fresh = bucket !== this.expiring[shard]
        if (fresh) this.expiring[shard] = bucket
        write(this.key(shard, bucket), fields, fresh ? (bucket + 1) * this.bucketMs + this.ttlMs : undefined)
      }
    }
    return count
  }

  private failed (shards: Iterable<number>, count: number, err: unknown): void {
    this.stats.dropped += count
    for (const shard of shards) this.expiring[shard] = -1
    this.onError('write', err)
  }

  /** One server (or Sentinel's primary): the whole batch in one pipeline, one write. */
  private sendPipelined (batch: Batch): void {
    const pipeline = this.redis.pipeline()
    const count = this.commands(batch, (key, fields, expireAt) => {
      pipeline.hset(key, fields)
      if (expireAt !== undefined) pipeline.pexpireat(key, expireAt)
    })
    pipeline.exec().then((results) => {
      const error = results?.find(([err]) => err !== null)
      if (error === undefined) this.stats.written += count
      else this.failed(batch.keys(), count, error[0])
    }, (err: unknown) => { this.failed(batch.keys(), count, err) })
  }

  /**
   * A Cluster: an explicit ioredis pipeline must stay in one slot, so it would be one write per
   * shard (up to 16 per flush, measured at about 14 µs of proxy CPU per message). Sent as plain
   * commands instead, the Cluster client's auto-pipelining (src/redis/client.ts) puts all that
   * are due for one node into one write per event-loop turn. Accounted per shard.
   */
  private sendEach (batch: Batch): void {
    for (const [shard, buckets] of batch) {
      const calls: Array<Promise<unknown>> = []
      const count = this.commands(new Map([[shard, buckets]]), (key, fields, expireAt) => {
        calls.push(this.redis.hset(key, fields))
        if (expireAt !== undefined) calls.push(this.redis.pexpireat(key, expireAt))
      })
      Promise.all(calls).then(() => { this.stats.written += count }, (err: unknown) => { this.failed([shard], count, err) })
    }
  }

  /** The newest value of `field` in the buckets of the last ttlMs, or undefined. */
  async read (field: string): Promise<string | undefined> {
    this.stats.lookups++
    // What is still in this process's batch is newer than anything in Redis.
    const now = this.now()
    const current = Math.floor(now / this.bucketMs)
    const shard = shardOf(clientOf(field))
    const queued = this.pending.get(shard)
    for (let b = current; b > current - this.buckets; b--) {
      const value = queued?.get(b)?.get(field)
      if (value !== undefined) return value
    }
    try {
      const values = await redisCall(this.redis, this.timeoutMs, async (r) => {
        const pipeline = r.pipeline()
        for (let b = current; b > current - this.buckets; b--) pipeline.hget(this.key(shard, b), field)
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

/** The client ID of a record key (recordKey()): up to its last newline, as no field holds one. */
function clientOf (recordKey: string): string {
  return recordKey.slice(0, recordKey.lastIndexOf('\n'))
}
