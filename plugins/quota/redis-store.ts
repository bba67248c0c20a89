// The quota's shared state in Redis. Keys, under the plugin's prefix, each with the hash tag of
// the user name it belongs to (src/redis/hash-tag.ts), so each script touches one Cluster slot:
//   use:{user:<name>}:<window>  hash { m, b }: messages and payload bytes every instance sent
//                               in that one-second window; PEXPIRE 5 s
//   conns:{user:<name>}         sorted set: owner (`<instance>:<connection>`) → the lease's end
//                               (ms since epoch); PEXPIRE leaseMs, renewed every leaseMs / 3
// docs/design.md "Redis key layout" has the whole list.

import type { Redis, Cluster } from 'ioredis'
import { redisCall } from '../../src/redis/call.js'
import { hashTag } from '../../src/redis/hash-tag.js'
import type { Admit, ConnectionStore } from './connections.js'
import type { Counts, SharedUsage, UseEntry, UseTotals } from './usage.js'

const USE_TTL_MS = 5000
const BATCH = 500

// KEYS: this window's counter, the one before. ARGV: 1 messages, 2 bytes, 3 TTL.
const USE = `
if tonumber(ARGV[1]) > 0 then redis.call('HINCRBY', KEYS[1], 'm', ARGV[1]) end
if tonumber(ARGV[2]) > 0 then redis.call('HINCRBY', KEYS[1], 'b', ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local cur = redis.call('HMGET', KEYS[1], 'm', 'b')
local prev = redis.call('HMGET', KEYS[2], 'm', 'b')
return { tonumber(cur[1]) or 0, tonumber(cur[2]) or 0, tonumber(prev[1]) or 0, tonumber(prev[2]) or 0 }
`

// KEYS: the user's leases. ARGV: 1 now, 2 leaseMs, 3 owner, 4 max. Expired leases (an instance
// that died) are dropped first; an owner already there (a retry) is not counted twice.
const ADMIT = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then n = n - 1 end
if n >= tonumber(ARGV[4]) then return { 0, n } end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return { 1, n + 1 }
`

// KEYS: the user's leases. ARGV: 1 the leases' new end, 2 leaseMs, 3… owners. A lease that is
// gone (Redis restarted empty) is written again.
const RENEW = `
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`

// KEYS: the user's leases. ARGV: 1 owner.
const RELEASE = `
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
`

type Script = (...keysThenArgs: Array<string | number>) => Promise<unknown>
/** Each with its key count fixed, so the first argument is the first key (ioredis auto-pipelines a Cluster's calls by it). */
const SCRIPTS = { quotaUse: [USE, 2], quotaAdmit: [ADMIT, 1], quotaRenew: [RENEW, 1], quotaRelease: [RELEASE, 1] } as const
type ScriptName = keyof typeof SCRIPTS

/** A user name's counter of one window: `<prefix>use:{user:<name>}:<window>`. */
export function useKey (prefix: string, user: string, window: number): string {
  return `${prefix}use:${hashTag('user', user)}:${window}`
}

/** A user name's connection leases: `<prefix>conns:{user:<name>}`. */
export function connsKey (prefix: string, user: string): string {
  return `${prefix}conns:${hashTag('user', user)}`
}

export class RedisQuotaStore implements SharedUsage, ConnectionStore {
  constructor (
    private readonly redis: Redis | Cluster,
    private readonly prefix: string,
    private readonly leaseMs: () => number,
    private readonly timeoutMs: () => number,
    private readonly now: () => number = Date.now
  ) {
    for (const [name, [lua, keys]] of Object.entries(SCRIPTS)) redis.defineCommand(name, { lua, numberOfKeys: keys })
  }

  private async call (name: ScriptName, ...keysThenArgs: Array<string | number>): Promise<unknown> {
    return await (this.redis as unknown as Record<string, Script>)[name]?.(...keysThenArgs)
  }

  /** One call per user name, sent together in batches (one server: back to back; a Cluster: pipelined per node). */
  async add (entries: UseEntry[]): Promise<UseTotals[]> {
    const out: UseTotals[] = []
    for (let i = 0; i < entries.length; i += BATCH) {
      const batch = entries.slice(i, i + BATCH)
      const replies = await redisCall(this.redis, this.timeoutMs(), async () => await Promise.all(batch.map(async (e) =>
        await this.call('quotaUse', useKey(this.prefix, e.key, e.window), useKey(this.prefix, e.key, e.window - 1), e.m, e.b, USE_TTL_MS))))
      for (const r of replies) {
        const n = (Array.isArray(r) ? r : []).map(Number)
        out.push({ cur: [n[0] ?? 0, n[1] ?? 0] as Counts, prev: [n[2] ?? 0, n[3] ?? 0] as Counts })
      }
    }
    return out
  }

  async admit (user: string, owner: string, max: number): Promise<Admit> {
    const reply = await redisCall(this.redis, this.timeoutMs(), async () => await this.call('quotaAdmit', connsKey(this.prefix, user), this.now(), this.leaseMs(), owner, max))
    const [ok, count] = (Array.isArray(reply) ? reply : []).map(Number)
    return { ok: ok === 1, count: count ?? 0 }
  }

  async release (user: string, owner: string): Promise<void> {
    await redisCall(this.redis, this.timeoutMs(), async () => await this.call('quotaRelease', connsKey(this.prefix, user), owner))
  }

  async renew (leases: Map<string, string[]>): Promise<void> {
    const until = this.now() + this.leaseMs()
    const all = [...leases]
    for (let i = 0; i < all.length; i += BATCH) {
      const batch = all.slice(i, i + BATCH)
      await redisCall(this.redis, this.timeoutMs(), async () => await Promise.all(batch.map(async ([user, owners]) =>
        await this.call('quotaRenew', connsKey(this.prefix, user), until, this.leaseMs(), ...owners))))
    }
  }
}
