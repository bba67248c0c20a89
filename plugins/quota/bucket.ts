// Token buckets with a burst, and the decision for one PUBLISH against the buckets of its
// client and its user name. The limits are passed at each use, not kept in a bucket, so new
// limits (a reload's reconfigure) apply to the next packet. Synchronous and allocation-free
// on the path where the message is allowed.

import type { RateLimits } from './options.js'

/** Tokens refill at `rate` a second up to `rate × burstSeconds`. */
export class Bucket {
  tokens: number
  private at: number

  constructor (capacity: number, now: number) {
    this.tokens = capacity
    this.at = now
  }

  /** Brings the tokens up to `now`; returns them. */
  refill (now: number, rate: number, capacity: number): number {
    this.tokens = Math.min(capacity, this.tokens + (now - this.at) * rate / 1000)
    this.at = now
    return this.tokens
  }

  /**
   * What another instance or worker used since the last sync: taken off here too, so each
   * instance's bucket follows the shared one. Not below one burst of debt, so a stale count
   * cannot lock a user out for longer than a burst takes to refill.
   */
  spend (amount: number, capacity: number): void {
    if (amount <= 0) return
    this.tokens = Math.max(-capacity, this.tokens - amount)
  }

  /** Full at `now` (nothing to remember: a new bucket would be the same). */
  full (now: number, rate: number, capacity: number): boolean {
    return this.tokens + (now - this.at) * rate / 1000 >= capacity
  }
}

export type Kind = 'messages' | 'bytes'
export type Scope = 'client' | 'user'

/** A client's or a user name's two buckets; undefined where that rate is not limited. */
export interface Pair {
  messages: Bucket | undefined
  bytes: Bucket | undefined
}

export function newPair (limits: RateLimits, now: number): Pair {
  return {
    messages: limits.messagesPerSecond === undefined ? undefined : new Bucket(limits.messagesPerSecond * limits.burstSeconds, now),
    bytes: limits.bytesPerSecond === undefined ? undefined : new Bucket(limits.bytesPerSecond * limits.burstSeconds, now)
  }
}

/** One bucket a PUBLISH must pay, with its rate and burst as the options say now. */
interface Charge { bucket: Bucket, rate: number, capacity: number, cost: number, kind: Kind, scope: Scope }

/** The answer for one PUBLISH: allowed now, allowed after `waitMs`, or over (`never`: larger than the whole burst). */
export type Decision =
  | { kind: 'ok' }
  | { kind: 'wait', waitMs: number, over: Kind, scope: Scope }
  | { kind: 'over', over: Kind, scope: Scope, rate: number, never: boolean }

const OK: Decision = { kind: 'ok' }

/** The charges of one PUBLISH of `bytes` payload bytes. A limit a reload added gets its bucket here, full. */
function charges (pair: Pair | undefined, limits: RateLimits | undefined, scope: Scope, bytes: number, now: number, out: Charge[]): void {
  if (pair === undefined || limits === undefined) return
  const burst = limits.burstSeconds
  if (pair.messages === undefined && limits.messagesPerSecond !== undefined) pair.messages = new Bucket(limits.messagesPerSecond * burst, now)
  if (pair.bytes === undefined && limits.bytesPerSecond !== undefined) pair.bytes = new Bucket(limits.bytesPerSecond * burst, now)
  if (pair.messages !== undefined && limits.messagesPerSecond !== undefined) {
    out.push({ bucket: pair.messages, rate: limits.messagesPerSecond, capacity: limits.messagesPerSecond * burst, cost: 1, kind: 'messages', scope })
  }
  if (pair.bytes !== undefined && limits.bytesPerSecond !== undefined) {
    out.push({ bucket: pair.bytes, rate: limits.bytesPerSecond, capacity: limits.bytesPerSecond * burst, cost: bytes, kind: 'bytes', scope })
  }
}

/**
 * Decides one PUBLISH. All buckets are checked before any is charged, so a refused message
 * costs nothing. `delay`: the message is charged at once (a bucket may go below zero) and
 * waits until the deepest one is back at zero; the next message then waits behind it.
 */
export function decide (client: { pair: Pair | undefined, limits: RateLimits | undefined }, user: { pair: Pair | undefined, limits: RateLimits | undefined },
  bytes: number, now: number, delay: boolean): Decision {
  const all: Charge[] = []
  charges(client.pair, client.limits, 'client', bytes, now, all)
  charges(user.pair, user.limits, 'user', bytes, now, all)
  let worst: Charge | undefined
  let worstWait = 0
  for (const c of all) {
    const tokens = c.bucket.refill(now, c.rate, c.capacity)
    if (c.cost > c.capacity) return { kind: 'over', over: c.kind, scope: c.scope, rate: c.rate, never: true }
    if (tokens >= c.cost) continue
    const waitMs = (c.cost - tokens) * 1000 / c.rate
    if (worst === undefined || waitMs > worstWait) {
      worst = c
      worstWait = waitMs
    }
  }
  if (worst === undefined) {
    for (const c of all) c.bucket.tokens -= c.cost
    return OK
  }
  if (!delay) return { kind: 'over', over: worst.kind, scope: worst.scope, rate: worst.rate, never: false }
  return { kind: 'wait', waitMs: Math.ceil(worstWait), over: worst.kind, scope: worst.scope }
}

/** Charges a delayed message (after decide() said `wait` and the wait is accepted). */
export function charge (client: { pair: Pair | undefined, limits: RateLimits | undefined }, user: { pair: Pair | undefined, limits: RateLimits | undefined }, bytes: number, now: number): void {
  const all: Charge[] = []
  charges(client.pair, client.limits, 'client', bytes, now, all)
  charges(user.pair, user.limits, 'user', bytes, now, all)
  for (const c of all) c.bucket.tokens -= c.cost
}
