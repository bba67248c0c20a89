// The registry and flapping counters in Redis, shared by every proxy instance. Keys, under the
// plugin's prefix:
//   lease:<client ID>        hash { owner, user, hasuser, addr, since }, PEXPIRE leaseMs, renewed
//                            by its owner every leaseMs / 3, deleted only by its owner
//   flap:n:<key> / flap:ban:<key> / flap:hist:<key>
//                            connects in the current window, the ban's end, recent history
// Each CONNECT is one script call (ban check, counting, lease), atomic, so two instances
// admitting one ID at the same moment cannot both win. A takeover is announced on the
// channel `<prefix>takeover`; the instance that owns the old connection closes it.

import type { Redis, Cluster } from 'ioredis'
import { redisCall } from '../../src/redis/call.js'
import { HISTORY_MAX, type Admission, type Claim, type FlapLimits, type HistoryEntry, type Holder, type RenewResult, type Store } from './store.js'

// KEYS: lease, then (count, ban, history) per flapping key.
// ARGV: 1 hasId, 2 owner, 3 user, 4 hasUser, 5 address, 6 now, 7 leaseMs, 8 policy,
//       9 maxConnects, 10 windowMs, 11 banMs, 12 historyMax, 13 history entry, 14 channel, 15 client ID
// The identity rule mirrors sameIdentity() and the policies decide() in store.ts.
const ADMIT = `
local now = tonumber(ARGV[6])
local flaps = (#KEYS - 1) / 3
for i = 0, flaps - 1 do
  local banned = redis.call('GET', KEYS[3 + i * 3])
  if banned and tonumber(banned) > now then return {'banned', i, banned} end
end
for i = 0, flaps - 1 do
  local count, ban, hist = KEYS[2 + i * 3], KEYS[3 + i * 3], KEYS[4 + i * 3]
  redis.call('LPUSH', hist, ARGV[13])
  redis.call('LTRIM', hist, 0, tonumber(ARGV[12]) - 1)
  redis.call('PEXPIRE', hist, tonumber(ARGV[10]) + tonumber(ARGV[11]))
  local n = redis.call('INCR', count)
  if n == 1 then redis.call('PEXPIRE', count, ARGV[10]) end
  if n > tonumber(ARGV[9]) then
    local untilMs = now + tonumber(ARGV[11])
    redis.call('SET', ban, untilMs, 'PX', ARGV[11])
    redis.call('DEL', count)
    return {'flapping', i, n, tostring(untilMs), redis.call('LRANGE', hist, 0, -1)}
  end
end
if ARGV[1] ~= '1' then return {'admitted'} end
local lease = KEYS[1]
local cur = redis.call('HMGET', lease, 'owner', 'user', 'hasuser', 'addr', 'since')
local take = function ()
  redis.call('DEL', lease)
  redis.call('HSET', lease, 'owner', ARGV[2], 'user', ARGV[3], 'hasuser', ARGV[4], 'addr', ARGV[5], 'since', ARGV[6])
  redis.call('PEXPIRE', lease, ARGV[7])
end
if not cur[1] or cur[1] == ARGV[2] then
  take()
  return {'admitted'}
end
local same
if ARGV[4] == '1' or cur[3] == '1' then same = (ARGV[4] == '1' and cur[3] == '1' and cur[2] == ARGV[3]) else same = (cur[4] == ARGV[5]) end
if ARGV[8] == 'reject-new' or (ARGV[8] == 'takeover-same-identity' and not same) then
  return {'held', cur[1], cur[2] or '', cur[3] or '0', cur[4] or '', cur[5] or '0'}
end
take()
redis.call('PUBLISH', ARGV[14], cjson.encode({ id = ARGV[15], owner = cur[1], by = ARGV[5], same = same }))
return {'took', cur[1], cur[2] or '', cur[3] or '0', cur[4] or '', cur[5] or '0'}
`

// KEYS: lease (or a placeholder), then the history lists. ARGV: 1 hasId, 2 owner, 3 entry,
// 4 historyMax, 5 history TTL.
const RELEASE = `
if ARGV[1] == '1' and redis.call('HGET', KEYS[1], 'owner') == ARGV[2] then redis.call('DEL', KEYS[1]) end
for i = 2, #KEYS do
  redis.call('LPUSH', KEYS[i], ARGV[3])
  redis.call('LTRIM', KEYS[i], 0, tonumber(ARGV[4]) - 1)
  redis.call('PEXPIRE', KEYS[i], ARGV[5])
end
return 1
`

// KEYS: leases. ARGV: 1 leaseMs, then per lease: owner, user, hasUser, address, since.
// Per lease: 1 renewed, 2 restored (it was gone, e.g. Redis restarted empty), 0 lost.
const RENEW = `
local out = {}
for i = 1, #KEYS do
  local a = 1 + (i - 1) * 5
  local owner = redis.call('HGET', KEYS[i], 'owner')
  if owner == ARGV[a + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    out[i] = 1
  elseif not owner then
    redis.call('HSET', KEYS[i], 'owner', ARGV[a + 1], 'user', ARGV[a + 2], 'hasuser', ARGV[a + 3], 'addr', ARGV[a + 4], 'since', ARGV[a + 5])
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    out[i] = 2
  else
    out[i] = 0
  end
end
return out
`

type Script = (numKeys: number, ...args: Array<string | number>) => Promise<unknown>
interface Scripted { clientIdAdmit: Script, clientIdRelease: Script, clientIdRenew: Script }

/** A takeover announced by some instance: `owner` held `id` and must let go. */
export interface TakeoverNotice { id: string, owner: string, by: string, same: boolean }

const RENEW_BATCH = 500

function holderOf (reply: unknown[]): Holder {
  const [owner, user, hasUser, addr, since] = reply.slice(1).map(String)
  return { owner: owner as string, username: hasUser === '1' ? user : undefined, address: addr as string, since: Number(since) }
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

export class RedisStore implements Store {
  readonly channel: string
  private readonly scripts: Scripted

  constructor (
    private readonly redis: Redis | Cluster,
    private readonly prefix: string,
    private readonly leaseMs: number,
    private readonly limits: FlapLimits | undefined,
    private readonly timeoutMs: number,
    private readonly now: () => number = Date.now
  ) {
    this.channel = `${prefix}takeover`
    redis.defineCommand('clientIdAdmit', { lua: ADMIT })
    redis.defineCommand('clientIdRelease', { lua: RELEASE })
    redis.defineCommand('clientIdRenew', { lua: RENEW })
    this.scripts = redis as unknown as Scripted
  }

  private leaseKey (clientId: string): string {
    return `${this.prefix}lease:${clientId}`
  }

  private flapKeys (key: string): [string, string, string] {
    return [`${this.prefix}flap:n:${key}`, `${this.prefix}flap:ban:${key}`, `${this.prefix}flap:hist:${key}`]
  }

  private get historyTtl (): number {
    return this.limits === undefined ? 1 : this.limits.windowMs + this.limits.banMs
  }

  async admit (claim: Claim): Promise<Admission> {
    const { holder } = claim
    const keys = [claim.clientId === undefined ? `${this.prefix}lease:` : this.leaseKey(claim.clientId), ...claim.flapKeys.flatMap((k) => this.flapKeys(k))]
    const limits = this.limits ?? { maxConnects: 0, windowMs: 1, banMs: 1 }
    const entry: HistoryEntry = { t: holder.since, k: 'c', a: holder.address }
    const reply = await redisCall(this.redis, this.timeoutMs, async () => await this.scripts.clientIdAdmit(
      keys.length, ...keys,
      claim.clientId === undefined ? '0' : '1', holder.owner, holder.username ?? '', holder.username === undefined ? '0' : '1', holder.address,
      holder.since, this.leaseMs, claim.policy, limits.maxConnects, limits.windowMs, limits.banMs, HISTORY_MAX, JSON.stringify(entry),
      this.channel, claim.clientId ?? ''
    )) as unknown[]
    const kind = String(reply[0])
    switch (kind) {
      case 'admitted': return { kind: 'admitted' }
      case 'took': return { kind: 'admitted', tookOver: holderOf(reply) }
      case 'held': return { kind: 'held', holder: holderOf(reply) }
      case 'banned': return { kind: 'banned', key: claim.flapKeys[Number(reply[1])] as string, until: Number(reply[2]) }
      case 'flapping': return { kind: 'flapping', key: claim.flapKeys[Number(reply[1])] as string, connects: Number(reply[2]), until: Number(reply[3]), history: parseHistory(reply[4]) }
    }
    throw new Error(`unexpected answer from Redis: ${kind}`)
  }

  async release (clientId: string | undefined, owner: string, flapKeys: string[], end: HistoryEntry): Promise<void> {
    const keys = [clientId === undefined ? `${this.prefix}lease:` : this.leaseKey(clientId), ...flapKeys.map((k) => this.flapKeys(k)[2])]
    await redisCall(this.redis, this.timeoutMs, async () => await this.scripts.clientIdRelease(
      keys.length, ...keys, clientId === undefined ? '0' : '1', owner, JSON.stringify(end), HISTORY_MAX, this.historyTtl
    ))
  }

  async renew (leases: Array<{ clientId: string, holder: Holder }>): Promise<RenewResult[]> {
    const results: RenewResult[] = []
    for (let i = 0; i < leases.length; i += RENEW_BATCH) {
      const batch = leases.slice(i, i + RENEW_BATCH)
      const args = batch.flatMap(({ holder: h }) => [h.owner, h.username ?? '', h.username === undefined ? '0' : '1', h.address, h.since])
      const reply = await redisCall(this.redis, this.timeoutMs, async () => await this.scripts.clientIdRenew(
        batch.length, ...batch.map((l) => this.leaseKey(l.clientId)), this.leaseMs, ...args
      )) as unknown[]
      for (const r of reply) results.push(r === 1 ? 'renewed' : r === 2 ? 'restored' : 'lost')
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
