// The registry and flapping counters in Redis, shared by every proxy instance. Keys, under the
// plugin's prefix, each with the hash tag of what it belongs to (src/redis/hash-tag.ts):
//   lease:{id:<client ID>}   hash { owner, user, hasuser, addr, since }, PEXPIRE leaseMs, renewed
//                            by its owner every leaseMs / 3, deleted only by its owner
//   flap:n:{<k>} / flap:ban:{<k>} / flap:hist:{<k>}, <k> = id:<client ID>, user:<name>, addr:<IP>
//                            connects in the current window, the ban's end, recent history
// A client's lease and its own flapping keys share the tag {id:…}, so one script decides them
// atomically: the ban check, the count and the lease claim (two instances admitting one ID at
// the same moment cannot both win). A user name's or an address's keys live in other slots
// (on a Cluster, on other nodes): each is counted by a script of its own, before the lease
// script; see admit(). A takeover is announced on the channel `<prefix>takeover`; the instance
// that owns the old connection closes it. docs/design.md "Redis key layout" has the whole list.

import type { Redis, Cluster } from 'ioredis'
import { redisCall } from '../../src/redis/call.js'
import { hashTag } from '../../src/redis/hash-tag.js'
import { HISTORY_MAX, type Admission, type Claim, type FlapLimits, type HistoryEntry, type Holder, type Renewal, type Store } from './store.js'

// Shared by FLAP and ADMIT, whose ARGV start alike: 1 now, 2 maxConnects, 3 windowMs, 4 banMs,
// 5 historyMax, 6 history entry. count() returns the answer for a connect that starts a ban.
const FLAP_LUA = `
local now = tonumber(ARGV[1])
local function banned (ban)
  local untilMs = redis.call('GET', ban)
  if untilMs and tonumber(untilMs) > now then return {'banned', untilMs} end
  return nil
end
local function count (n, ban, hist)
  redis.call('LPUSH', hist, ARGV[6])
  redis.call('LTRIM', hist, 0, tonumber(ARGV[5]) - 1)
  redis.call('PEXPIRE', hist, tonumber(ARGV[3]) + tonumber(ARGV[4]))
  local c = redis.call('INCR', n)
  if c == 1 then redis.call('PEXPIRE', n, ARGV[3]) end
  if c <= tonumber(ARGV[2]) then return nil end
  local untilMs = now + tonumber(ARGV[4])
  redis.call('SET', ban, untilMs, 'PX', ARGV[4])
  redis.call('DEL', n)
  return {'flapping', c, tostring(untilMs), redis.call('LRANGE', hist, 0, -1)}
end
`

// One flapping key of a user name or an address. KEYS: count, ban, history.
const FLAP = `${FLAP_LUA}
return banned(KEYS[2]) or count(KEYS[1], KEYS[2], KEYS[3]) or {'counted'}
`

// KEYS: lease, then (count, ban, history) of the client ID's own flapping key when it is counted.
// ARGV after the six of FLAP_LUA: 7 count it here (1) or only check its ban (0), 8 owner,
// 9 user, 10 hasUser, 11 address, 12 leaseMs, 13 policy, 14 channel, 15 client ID.
// The identity rule mirrors sameIdentity() and the policies decide() in store.ts.
const ADMIT = `${FLAP_LUA}
if #KEYS == 4 then
  local refused = banned(KEYS[3])
  if not refused and ARGV[7] == '1' then refused = count(KEYS[2], KEYS[3], KEYS[4]) end
  if refused then return refused end
end
local lease = KEYS[1]
local cur = redis.call('HMGET', lease, 'owner', 'user', 'hasuser', 'addr', 'since')
local take = function ()
  redis.call('DEL', lease)
  redis.call('HSET', lease, 'owner', ARGV[8], 'user', ARGV[9], 'hasuser', ARGV[10], 'addr', ARGV[11], 'since', ARGV[1])
  redis.call('PEXPIRE', lease, ARGV[12])
end
if not cur[1] or cur[1] == ARGV[8] then
  take()
  return {'admitted'}
end
local same
if ARGV[10] == '1' or cur[3] == '1' then same = (ARGV[10] == '1' and cur[3] == '1' and cur[2] == ARGV[9]) else same = (cur[4] == ARGV[11]) end
if ARGV[13] == 'reject-new' or (ARGV[13] == 'takeover-same-identity' and not same) then
  return {'held', cur[1], cur[2] or '', cur[3] or '0', cur[4] or '', cur[5] or '0'}
end
take()
redis.call('PUBLISH', ARGV[14], cjson.encode({ id = ARGV[15], owner = cur[1], by = ARGV[11], same = same }))
return {'took', cur[1], cur[2] or '', cur[3] or '0', cur[4] or '', cur[5] or '0'}
`

// How a connection ended, into one history list. KEYS: history. ARGV: 1 entry, 2 historyMax, 3 TTL.
const HIST_LUA = `
local function push (hist)
  redis.call('LPUSH', hist, ARGV[1])
  redis.call('LTRIM', hist, 0, tonumber(ARGV[2]) - 1)
  redis.call('PEXPIRE', hist, ARGV[3])
end
`
const HIST = `${HIST_LUA}
push(KEYS[1])
return 1
`

// KEYS: lease, then the client ID's history list if it is counted. ARGV as HIST, then 4 owner.
const RELEASE = `${HIST_LUA}
if redis.call('HGET', KEYS[1], 'owner') == ARGV[4] then redis.call('DEL', KEYS[1]) end
if #KEYS == 2 then push(KEYS[2]) end
return 1
`

// KEYS: a lease. ARGV: 1 leaseMs, 2 owner, 3 user, 4 hasUser, 5 address, 6 since.
// 1 renewed, 2 restored (it was gone, e.g. Redis restarted empty), 0 lost.
const RENEW = `
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return 1
elseif not owner then
  redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'user', ARGV[3], 'hasuser', ARGV[4], 'addr', ARGV[5], 'since', ARGV[6])
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return 2
end
return redis.call('HMGET', KEYS[1], 'addr', 'user', 'hasuser')
`

type Script = (...keysThenArgs: Array<string | number>) => Promise<unknown>
const SCRIPTS = { clientIdAdmit: ADMIT, clientIdFlap: FLAP, clientIdHistory: HIST, clientIdRelease: RELEASE, clientIdRenew: RENEW }
type ScriptName = keyof typeof SCRIPTS
/** The key counts each script is called with: the lease alone or with the client ID's own three flapping keys (admit), or with its history list (release). */
const KEY_COUNTS: Record<ScriptName, number[]> = { clientIdAdmit: [1, 4], clientIdFlap: [3], clientIdHistory: [1], clientIdRelease: [1, 2], clientIdRenew: [1] }

/** A takeover announced by some instance: `owner` held `id` and must let go. */
export interface TakeoverNotice { id: string, owner: string, by: string, same: boolean }

const RENEW_BATCH = 500
const NO_LIMITS: FlapLimits = { maxConnects: 0, windowMs: 1, banMs: 1 }

function holderOf (reply: unknown[]): Holder {
  const [owner, user, hasUser, addr, since] = reply.slice(1).map(String)
  return { owner: owner as string, username: hasUser === '1' ? user : undefined, address: addr as string, since: Number(since) }
}

/** RENEW's answer for a lease another owner holds: [addr, user, hasuser]. */
function holderNow (reply: unknown): Pick<Holder, 'address' | 'username'> | undefined {
  if (!Array.isArray(reply) || typeof reply[0] !== 'string') return undefined
  return { address: reply[0], username: reply[2] === '1' ? String(reply[1]) : undefined }
}

function parseHistory (raw: unknown): HistoryEntry[] {
  if (!Array.isArray(raw)) return []
  const out: HistoryEntry[] = []
  for (const item of raw) {
    try {
      out.push(JSON.parse(String(item)) as HistoryEntry)
    } catch {
      // Not ours: skip it.
    }
  }
  return out
}

/** A refusal of FLAP or ADMIT for flapping key `key`, or undefined when the reply is another. */
function refusal (key: string, reply: unknown[]): Admission | undefined {
  if (reply[0] === 'banned') return { kind: 'banned', key, until: Number(reply[1]) }
  if (reply[0] === 'flapping') return { kind: 'flapping', key, connects: Number(reply[1]), until: Number(reply[2]), history: parseHistory(reply[3]) }
  return undefined
}

/** The lease's key: `<prefix>lease:{id:<client ID>}`. */
export function leaseKey (prefix: string, clientId: string): string {
  return `${prefix}lease:${hashTag('id', clientId)}`
}

/** A flapping key's count, ban and history: `<prefix>flap:n:{id:dev-1}` for `id:dev-1`. */
export function flapKeys (prefix: string, key: string): [string, string, string] {
  const colon = key.indexOf(':')
  const tag = hashTag(key.slice(0, colon), key.slice(colon + 1))
  return [`${prefix}flap:n:${tag}`, `${prefix}flap:ban:${tag}`, `${prefix}flap:hist:${tag}`]
}

export class RedisStore implements Store {
  readonly channel: string
  /** The `<script><key count>` commands defined (see call()). */
  private readonly defined = new Set<string>()
  private readonly limits: FlapLimits

  constructor (
    private readonly redis: Redis | Cluster,
    private readonly prefix: string,
    private readonly leaseMs: number,
    limits: FlapLimits | undefined,
    private readonly timeoutMs: number,
    private readonly now: () => number = Date.now
  ) {
    this.channel = `${prefix}takeover`
    this.limits = limits ?? NO_LIMITS
    for (const [name, counts] of Object.entries(KEY_COUNTS) as Array<[ScriptName, number[]]>) {
      for (const n of counts) {
        redis.defineCommand(`${name}${n}`, { lua: SCRIPTS[name], numberOfKeys: n })
        this.defined.add(`${name}${n}`)
      }
    }
  }

  /**
   * Runs a script on `keys`. Each script is defined once per key count it is called with, with
   * that count fixed (`numberOfKeys`), so a call's first argument is its first key: ioredis's
   * auto-pipelining (on for Cluster clients) batches a call by the slot of its first argument,
   * and with the key count first, every call made in one tick was batched as one and the whole
   * batch refused once its keys sat on two primaries (measured: no lease was ever renewed on a
   * Cluster). All are defined in the constructor: an auto-pipeline made before a command was
   * defined does not have it, and ioredis then throws outside any promise (the process ended).
   */
  private async call (name: ScriptName, keys: readonly string[], ...args: Array<string | number>): Promise<unknown> {
    const command = `${name}${keys.length}`
    if (!this.defined.has(command)) throw new Error(`${name} is not defined for ${keys.length} keys`)
    return await (this.redis as unknown as Record<string, Script>)[command]?.(...keys, ...args)
  }

  private get historyTtl (): number {
    return this.limits.windowMs + this.limits.banMs
  }

  /**
   * The flapping keys in `by` order, then the lease, as today's single script did, but one slot
   * per call: a ban check of every key first (when there are several), then one FLAP per user
   * name or address key, then ADMIT for the lease with the client ID's own key (counted there
   * when it is the last key, the default `by: [clientId]`, so that case stays one round trip).
   * The first refusal ends it: later keys are not counted and no lease is claimed. One deadline
   * covers all the calls, and a call is not started once it has passed.
   */
  async admit (claim: Claim): Promise<Admission> {
    const { holder, clientId } = claim
    const idKey = clientId === undefined ? undefined : `id:${clientId}`
    const keys = claim.flapKeys
    const idLast = idKey !== undefined && keys[keys.length - 1] === idKey
    const l = this.limits
    const flapArgs = [holder.since, l.maxConnects, l.windowMs, l.banMs, HISTORY_MAX, JSON.stringify({ t: holder.since, k: 'c', a: holder.address } satisfies HistoryEntry)]
    const deadline = this.now() + this.timeoutMs
    const next = (): void => { if (this.now() >= deadline) throw new Error(`no answer within ${this.timeoutMs} ms`) }
    return await redisCall(this.redis, this.timeoutMs, async (r) => {
      if (keys.length > 1) {
        const bans = await Promise.all(keys.map(async (k) => await r.get(flapKeys(this.prefix, k)[1])))
        const i = bans.findIndex((until) => Number(until) > holder.since)
        if (i >= 0) return { kind: 'banned', key: keys[i] as string, until: Number(bans[i]) }
      }
      for (const key of idLast ? keys.slice(0, -1) : keys) {
        next()
        const reply = await this.call('clientIdFlap', flapKeys(this.prefix, key), ...flapArgs) as unknown[]
        const refused = refusal(key, reply)
        if (refused !== undefined) return refused
      }
      if (clientId === undefined || idKey === undefined) return { kind: 'admitted' }
      const own = keys.includes(idKey) ? flapKeys(this.prefix, idKey) : []
      next()
      const reply = await this.call('clientIdAdmit', [leaseKey(this.prefix, clientId), ...own], ...flapArgs, idLast ? '1' : '0',
        holder.owner, holder.username ?? '', holder.username === undefined ? '0' : '1', holder.address, this.leaseMs, claim.policy, this.channel, clientId) as unknown[]
      return refusal(idKey, reply) ?? this.decided(reply)
    })
  }

  private decided (reply: unknown[]): Admission {
    const kind = String(reply[0])
    switch (kind) {
      case 'admitted': return { kind: 'admitted' }
      case 'took': return { kind: 'admitted', tookOver: holderOf(reply) }
      case 'held': return { kind: 'held', holder: holderOf(reply) }
    }
    throw new Error(`unexpected answer from Redis: ${kind}`)
  }

  /** The lease (with the client ID's history) in one call, each other history list in its own. */
  async release (clientId: string | undefined, owner: string, keys: string[], end: HistoryEntry): Promise<void> {
    const idKey = clientId === undefined ? undefined : `id:${clientId}`
    const args = [JSON.stringify(end), HISTORY_MAX, this.historyTtl]
    await redisCall(this.redis, this.timeoutMs, async () => {
      const calls = keys.filter((k) => k !== idKey).map(async (k) => await this.call('clientIdHistory', [flapKeys(this.prefix, k)[2]], ...args))
      if (clientId !== undefined && idKey !== undefined) {
        const hist = keys.includes(idKey) ? [flapKeys(this.prefix, idKey)[2]] : []
        calls.push(this.call('clientIdRelease', [leaseKey(this.prefix, clientId), ...hist], ...args, owner))
      }
      await Promise.all(calls)
    })
  }

  /**
   * One call per lease (leases of different clients live in different slots), sent together
   * in batches: one server gets them back to back on one connection, and a Cluster client
   * with enableAutoPipelining batches them per node.
   */
  async renew (leases: Array<{ clientId: string, holder: Holder }>): Promise<Renewal[]> {
    const results: Renewal[] = []
    for (let i = 0; i < leases.length; i += RENEW_BATCH) {
      const batch = leases.slice(i, i + RENEW_BATCH)
      const replies = await redisCall(this.redis, this.timeoutMs, async () => await Promise.all(batch.map(async ({ clientId, holder: h }) =>
        await this.call('clientIdRenew', [leaseKey(this.prefix, clientId)], this.leaseMs, h.owner, h.username ?? '', h.username === undefined ? '0' : '1', h.address, h.since))))
      for (const r of replies) results.push(r === 1 ? { result: 'renewed' } : r === 2 ? { result: 'restored' } : { result: 'lost', holder: holderNow(r) })
    }
    return results
  }

  /** Parses a message of the takeover channel; undefined if it is not one. */
  static notice (message: string): TakeoverNotice | undefined {
    try {
      const n = JSON.parse(message) as Partial<TakeoverNotice>
      if (typeof n.id === 'string' && typeof n.owner === 'string' && typeof n.by === 'string') return { id: n.id, owner: n.owner, by: n.by, same: n.same === true }
    } catch {
      // ignore
    }
    return undefined
  }
}
