// The brute-force counters shared through Redis, so a fleet of proxies blocks together:
// `<prefix>bf:{<key>}:n` counts failures in a fixed window (PEXPIRE windowMs at the first),
// `<prefix>bf:{<key>}:block` holds the block's end (ms since epoch) and expires with it.
// Used besides the in-memory counters; when Redis fails, the in-memory ones still decide.

import type { Redis, Cluster } from 'ioredis'
import type { Logger } from 'pino'
import type { Block, BruteForceOptions, FailureResult } from './brute-force.js'
import { redisCall } from '../../src/redis/call.js'

// KEYS[1] count, KEYS[2] block; ARGV windowMs, maxFailures, until, blockMs.
// Returns the failure count that started a block, or 0.
const FAIL_SCRIPT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n >= tonumber(ARGV[2]) and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  redis.call('DEL', KEYS[1])
  return n
end
return 0`

const WARN_EVERY_MS = 10_000

export class SharedBruteForce {
  private lastWarn = 0

  constructor (
    private readonly redis: Redis | Cluster,
    private readonly prefix: string,
    private readonly options: BruteForceOptions,
    private readonly log: Logger,
    private readonly timeoutMs: number
  ) {}

  // The hash tag keeps both keys of one counter in one Redis Cluster slot.
  private keys (key: string): [string, string] {
    const tag = `${this.prefix}bf:{${encodeURIComponent(key)}}`
    return [`${tag}:n`, `${tag}:block`]
  }

  private async timed<T> (work: (redis: Redis | Cluster) => Promise<T>): Promise<T> {
    return await redisCall(this.redis, this.timeoutMs, work)
  }

  private failedRedis (err: unknown): void {
    const now = Date.now()
    if (now - this.lastWarn < WARN_EVERY_MS) return
    this.lastWarn = now
    this.log.warn({ err: (err as Error).message }, 'brute force: redis unavailable, counting in this process only')
  }

  async blocked (keys: string[]): Promise<Block | undefined> {
    try {
      for (const key of keys) {
        const until = Number(await this.timed(async (r) => await r.get(this.keys(key)[1])))
        if (until > Date.now()) return { key, until }
      }
    } catch (err) {
      this.failedRedis(err)
    }
    return undefined
  }

  async failed (keys: string[]): Promise<FailureResult> {
    const result: FailureResult = { blocked: [] }
    const { windowMs, maxFailures, blockMs } = this.options
    try {
      for (const key of keys) {
        const until = Date.now() + blockMs
        const n = await this.timed(async (r) => await r.eval(FAIL_SCRIPT, 2, ...this.keys(key), windowMs, maxFailures, until, blockMs))
        if (typeof n === 'number' && n > 0) result.blocked.push({ key, failures: n, until })
      }
    } catch (err) {
      this.failedRedis(err)
    }
    return result
  }

  async succeeded (key: string): Promise<void> {
    try {
      await this.timed(async (r) => await r.del(this.keys(key)[0]))
    } catch (err) {
      this.failedRedis(err)
    }
  }
}
