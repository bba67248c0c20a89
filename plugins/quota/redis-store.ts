// The quota's shared state in Redis. Keys, under the plugin's prefix, each with the hash tag of
// the user name it belongs to (src/redis/hash-tag.ts), so each script touches one Cluster slot:
//   use:{user:<name>}           hash { <window>:m, <window>:b }: messages and payload bytes every
//                               instance sent in each one-second window of the last burst;
//                               older windows deleted as it goes, PEXPIRE (span + 2) s
//   conns:{user:<name>}         sorted set: owner (`<instance>:<connection>`) → the lease's end
//                               (ms since epoch); PEXPIRE leaseMs, renewed every leaseMs / 3
// docs/design.md "Redis key layout" has the whole list.

import type { Redis, Cluster } from 'ioredis'
import { redisCall } from '../../src/redis/call.js'
import { hashTag } from '../../src/redis/hash-tag.js'
import type { Admit, ConnectionStore } from './connections.js'
import { WINDOW_MS, type Counts, type SharedUsage, type UseEntry, type UseTotals } from './usage.js'

const BATCH = 500

// KEYS: the user's counters. ARGV: 1 window, 2 messages, 3 bytes, 4 span, 5 TTL. Returns
// messages and bytes of the window and of each of the `span` before it, newest first.
const USE = `
local w = tonumber(ARGV[1])
local span = tonumber(ARGV[4])
if tonumber(ARGV[2]) > 0 then redis.call('HINCRBY', KEYS[1], w .. ':m', ARGV[2]) end
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', KEYS[1], w .. ':b', ARGV[3]) end
local old = {}
for i = span + 1, span + 5 do old[#old + 1] = (w - i) .. ':m'; old[#old + 1] = (w - i) .. ':b' end
redis.call('HDEL', KEYS[1], unpack(old))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local fields = {}
for i = 0, span do fields[#fields + 1] = (w - i) .. ':m'; fields[#fields + 1] = (w - i) .. ':b' end
local got = redis.call('HMGET', KEYS[1], unpack(fields))
local out = {}
for i = 1, #got do out[i] = tonumber(got[i]) or 0 end
return out
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
const SCRIPTS = { quotaUse: [USE, 1], quotaAdmit: [ADMIT, 1], quotaRenew: [RENEW, 1], quotaRelease: [RELEASE, 1] } as const
type ScriptName = keyof typeof SCRIPTS

/** A user name's counters: `<prefix>use:{user:<name>}`. */
export function useKey (prefix: string, user: string): string {
  return `${prefix}use:${hashTag('user', user)}`
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
        await this.call('quotaUse', useKey(this.prefix, e.key), e.window, e.m, e.b, e.span, (e.span + 2) * WINDOW_MS))))
      for (const r of replies) {
        const n = (Array.isArray(r) ? r : []).map(Number)
        const totals: Counts[] = []
        for (let j = 0; j + 1 < n.length; j += 2) totals.push([n[j] ?? 0, n[j + 1] ?? 0])
        out.push(totals)
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
