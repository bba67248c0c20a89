// The registry of live client IDs and the flapping counters, as one interface with two stores:
// MemoryStore (one process) and RedisStore (every instance sharing one Redis). Both follow
// decide() below; the Redis store runs the same rules inside a Lua script, atomically.

import type { Policy } from './options.js'

/** Who holds a client ID: the lease's value. */
export interface Holder {
  /** `<instanceId>:<connection id>`: which instance and which connection. */
  owner: string
  username: string | undefined
  address: string
  since: number
}

/** One entry of a flapping key's recent history: a connect (`c`) or how one ended (`e`). */
export interface HistoryEntry { t: number, k: 'c' | 'e', a: string, why?: string }

export interface Claim {
  /** undefined: an empty ID (the broker assigns one); only the flapping counters apply. */
  clientId: string | undefined
  holder: Holder
  policy: Policy
  /** Flapping keys (`id:…`, `user:…`, `addr:…`); empty when flapping is off. */
  flapKeys: string[]
}

export type Admission =
  | { kind: 'admitted', tookOver?: Holder }
  | { kind: 'held', holder: Holder }
  | { kind: 'banned', key: string, until: number }
  | { kind: 'flapping', key: string, connects: number, until: number, history: HistoryEntry[] }

export interface FlapLimits { maxConnects: number, windowMs: number, banMs: number }

/** What renew() found for one lease. */
export type RenewResult = 'renewed' | 'restored' | 'lost'
/** A lease renewed; when lost, who holds the ID now (as far as the store knows). */
export interface Renewal { result: RenewResult, holder?: Pick<Holder, 'address' | 'username'> | undefined }

export interface Store {
  admit: (claim: Claim) => Admission | Promise<Admission>
  /** Ends a connection: frees its lease if it still owns it, records how it ended. */
  release: (clientId: string | undefined, owner: string, flapKeys: string[], end: HistoryEntry) => void | Promise<void>
  /** Keeps the leases of live connections; a missing one is written again. */
  renew: (leases: Array<{ clientId: string, holder: Holder }>) => Renewal[] | Promise<Renewal[]>
}

/**
 * The same identity may take an ID back: the same user name; without a user name on either
 * side, the same address (an anonymous device reconnecting from where it was).
 */
export function sameIdentity (a: Pick<Holder, 'username' | 'address'>, b: Pick<Holder, 'username' | 'address'>): boolean {
  if (a.username !== undefined || b.username !== undefined) return a.username === b.username
  return a.address === b.address
}

/** The policies, for an ID that `current` holds (or nobody). */
export function decide (current: Holder | undefined, claim: Claim): 'admit' | 'held' | 'take' {
  if (current === undefined || current.owner === claim.holder.owner) return 'admit'
  if (claim.policy === 'reject-new') return 'held'
  if (claim.policy === 'takeover-same-identity' && !sameIdentity(current, claim.holder)) return 'held'
  return 'take'
}

export const HISTORY_MAX = 64

interface FlapState { windowStart: number, connects: number, bannedUntil: number, history: HistoryEntry[] }

/** One process's registry and counters; bounded to maxKeys flapping keys. */
export class MemoryStore implements Store {
  readonly leases = new Map<string, Holder>()
  private readonly flaps = new Map<string, FlapState>()

  constructor (private readonly limits: FlapLimits | undefined, private readonly maxKeys: number, private readonly now: () => number = Date.now) {}

  admit (claim: Claim): Admission {
    const now = this.now()
    for (const key of claim.flapKeys) {
      const until = this.flaps.get(key)?.bannedUntil ?? 0
      if (until > now) return { kind: 'banned', key, until }
    }
    for (const key of claim.flapKeys) {
      const flapping = this.count(key, now, claim.holder.address)
      if (flapping !== undefined) return flapping
    }
    if (claim.clientId === undefined) return { kind: 'admitted' }
    const current = this.leases.get(claim.clientId)
    const decision = decide(current, claim)
    if (decision === 'held') return { kind: 'held', holder: current as Holder }
    this.leases.set(claim.clientId, claim.holder)
    return decision === 'take' ? { kind: 'admitted', tookOver: current as Holder } : { kind: 'admitted' }
  }

  private count (key: string, now: number, address: string): Admission | undefined {
    const limits = this.limits as FlapLimits
    let state = this.flaps.get(key)
    if (state === undefined || now - state.windowStart >= limits.windowMs) {
      state = { windowStart: now, connects: 0, bannedUntil: state?.bannedUntil ?? 0, history: state?.history ?? [] }
      this.remember(key, state)
    }
    this.push(state, { t: now, k: 'c', a: address })
    state.connects++
    if (state.connects <= limits.maxConnects) return undefined
    state.bannedUntil = now + limits.banMs
    const connects = state.connects
    state.connects = 0
    state.windowStart = state.bannedUntil
    return { kind: 'flapping', key, connects, until: state.bannedUntil, history: [...state.history] }
  }

  private push (state: FlapState, entry: HistoryEntry): void {
    state.history.unshift(entry)
    if (state.history.length > HISTORY_MAX) state.history.length = HISTORY_MAX
  }

  private remember (key: string, state: FlapState): void {
    this.flaps.delete(key)
    this.flaps.set(key, state)
    if (this.flaps.size <= this.maxKeys) return
    const now = this.now()
    const windowMs = (this.limits as FlapLimits).windowMs
    for (const [k, s] of this.flaps) {
      if (s.bannedUntil <= now && now - s.windowStart >= windowMs) this.flaps.delete(k)
    }
    for (const k of this.flaps.keys()) {
      if (this.flaps.size <= this.maxKeys) break
      this.flaps.delete(k)
    }
  }

  release (clientId: string | undefined, owner: string, flapKeys: string[], end: HistoryEntry): void {
    if (clientId !== undefined && this.leases.get(clientId)?.owner === owner) this.leases.delete(clientId)
    for (const key of flapKeys) {
      const state = this.flaps.get(key)
      if (state !== undefined) this.push(state, end)
    }
  }

  renew (leases: Array<{ clientId: string, holder: Holder }>): Renewal[] {
    return leases.map(({ clientId, holder }) => {
      const now = this.leases.get(clientId)
      return now?.owner === holder.owner ? { result: 'renewed' } : { result: 'lost', holder: now }
    })
  }

  get size (): number {
    return this.flaps.size
  }
}
