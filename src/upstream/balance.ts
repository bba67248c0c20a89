// Which broker of a pool a new client goes to, as an order of preference: the pool takes the
// first broker of it that is up, and on a failed dial the next. Pure functions of the brokers'
// names, weights and loads, so every proxy instance with the same broker list computes the same
// order for a client ID without sharing any state.
//
// client-id: weighted rendezvous (highest random weight) hashing. Each broker scores the client
// ID; the highest score wins. Removing a broker moves only its clients (every other client's
// best score is unchanged); adding one moves about weight/total of them, only to it.

import type { Balance } from '../config/config.js'

export interface BalanceTarget {
  /** Stable across instances and config order: `host:port`. */
  readonly key: string
  readonly weight: number
}

/** FNV-1a over the UTF-16 code units, finished with murmur3's fmix32 for avalanche. */
export function hash32 (text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/**
 * A broker's score for a client ID: weight / -ln(u), u uniform in (0, 1) from the hash. The
 * winner of this "weighted rendezvous" is broker i with probability weight_i / total.
 */
export function rendezvousScore (target: BalanceTarget, clientId: string): number {
  const u = (hash32(`${target.key}\n${clientId}`) + 0.5) / 4294967296
  return target.weight / -Math.log(u)
}

/** Every broker's index, the client's preferred broker first. */
export function rendezvousOrder (targets: readonly BalanceTarget[], clientId: string): number[] {
  const scored = targets.map((t, i) => ({ i, score: rendezvousScore(t, clientId) }))
  scored.sort((a, b) => b.score - a.score || a.i - b.i)
  return scored.map((s) => s.i)
}

/** Indices by connections per unit of weight, fewest first (ties: config order). */
export function leastLoadedOrder (targets: readonly BalanceTarget[], load: (i: number) => number): number[] {
  return targets.map((t, i) => ({ i, share: load(i) / t.weight })).sort((a, b) => a.share - b.share || a.i - b.i).map((s) => s.i)
}

/**
 * Smooth weighted round-robin (as NGINX does it): each pick adds every weight to its broker's
 * running total, takes the largest and subtracts the sum from it. A broker of weight 2 among
 * two of weight 1 is picked twice in every four picks, spread out (0, 1, 2, 0), not in a run.
 */
export class RoundRobin {
  private readonly current: number[]

  constructor (private readonly targets: readonly BalanceTarget[]) {
    this.current = targets.map(() => 0)
  }

  /** The next broker among `eligible` indices first, then the rest of them in config order. */
  next (eligible: readonly number[]): number[] {
    if (eligible.length === 0) return []
    let total = 0
    let best = eligible[0] as number
    for (const i of eligible) {
      const w = this.targets[i]?.weight ?? 1
      this.current[i] = (this.current[i] ?? 0) + w
      total += w
      if ((this.current[i] ?? 0) > (this.current[best] ?? 0)) best = i
    }
    this.current[best] = (this.current[best] ?? 0) - total
    return [best, ...eligible.filter((i) => i !== best)]
  }
}

/**
 * The order of preference for one new client among the `up` brokers. A client without a
 * client ID (the broker assigns one) cannot be hashed: it goes by least connections.
 */
export function preferenceOrder (balance: Balance, targets: readonly BalanceTarget[], clientId: string, up: (i: number) => boolean, load: (i: number) => number, rr: RoundRobin): number[] {
  const all = targets.map((_t, i) => i)
  switch (balance === 'client-id' && clientId === '' ? 'least-connections' : balance) {
    case 'client-id': return rendezvousOrder(targets, clientId).filter(up)
    case 'least-connections': return leastLoadedOrder(targets, load).filter(up)
    case 'round-robin': return rr.next(all.filter(up))
    case 'first': return all.filter(up)
  }
}
