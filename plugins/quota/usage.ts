// Per-user usage added up across instances (Redis) or workers (the primary), without making a
// packet wait: every PUBLISH is decided by this process's buckets at once, and every `syncMs`
// the messages and bytes each user name sent here since the last sync are added to a shared
// counter per one-second window, which answers with the window's total over all instances.
// What the others used since this process last looked is then taken off its buckets too, so
// each instance's bucket follows the shared one, late by at most one sync.

/** Windows of the shared counters: fixed, one second, numbered from the epoch. */
export const WINDOW_MS = 1000

export function windowOf (epochMs: number): number {
  return Math.floor(epochMs / WINDOW_MS)
}

/** Messages and bytes. */
export type Counts = [number, number]

/** What one process adds to one user's counter of one window. */
export interface UseEntry { key: string, window: number, m: number, b: number }

/** The totals over all instances after the add: of that window, and of the one before it. */
export interface UseTotals { cur: Counts, prev: Counts }

/** The shared counters: Redis, or the primary's MemoryUsage. */
export interface SharedUsage {
  add: (entries: UseEntry[]) => Promise<UseTotals[]>
}

/** The counters in one process: the primary's for its workers (and the unit tests'). */
export class MemoryUsage {
  private readonly keys = new Map<string, Map<number, Counts>>()
  private sweptAt = 0

  add (entries: UseEntry[], now = Date.now()): UseTotals[] {
    if (now - this.sweptAt > 10 * WINDOW_MS) this.sweep(windowOf(now))
    return entries.map(({ key, window, m, b }) => {
      let windows = this.keys.get(key)
      if (windows === undefined) this.keys.set(key, windows = new Map())
      const cur = windows.get(window) ?? [0, 0]
      cur[0] += m
      cur[1] += b
      windows.set(window, cur)
      for (const w of windows.keys()) if (w < window - 1) windows.delete(w)
      return { cur: [cur[0], cur[1]], prev: [...(windows.get(window - 1) ?? [0, 0])] as Counts }
    })
  }

  private sweep (window: number): void {
    this.sweptAt = window * WINDOW_MS
    for (const [key, windows] of this.keys) {
      if (![...windows.keys()].some((w) => w >= window - 1)) this.keys.delete(key)
    }
  }

  get size (): number {
    return this.keys.size
  }
}

/** One user name's state between syncs. */
interface KeyState {
  pending: Counts
  /** By window: what this process added, and what it has seen the others add. */
  mine: Map<number, Counts>
  seen: Map<number, Counts>
}

/** Others' new use in one window: their total now, less what was seen of them before. */
function newUse (total: Counts, mine: Counts | undefined, seen: Counts | undefined): Counts {
  const others: Counts = [total[0] - (mine?.[0] ?? 0), total[1] - (mine?.[1] ?? 0)]
  // Below what was seen: the counter was lost (Redis restarted): nothing new, start again.
  return [Math.max(0, others[0] - (seen?.[0] ?? 0)), Math.max(0, others[1] - (seen?.[1] ?? 0))]
}

/** This process's side of the shared counters: what it sent since the last sync, and what it saw. */
export class UsageSync {
  private readonly keys = new Map<string, KeyState>()
  private running = false

  constructor (
    private readonly shared: SharedUsage,
    /** Takes what the others used off this process's buckets of `key`. */
    private readonly othersUsed: (key: string, messages: number, bytes: number) => void,
    private readonly now: () => number = Date.now
  ) {}

  /** One PUBLISH this process allowed for `key` (a user name). */
  record (key: string, bytes: number): void {
    let state = this.keys.get(key)
    if (state === undefined) this.keys.set(key, state = { pending: [0, 0], mine: new Map(), seen: new Map() })
    state.pending[0]++
    state.pending[1] += bytes
  }

  /**
   * Adds what is pending, and applies what the others used. One call per user name with
   * something pending (their keys live in different slots); one sync at a time. Throws when
   * the shared counters failed: the pending counts are then dropped (they are in the past).
   */
  async sync (): Promise<number> {
    if (this.running) return 0
    const window = windowOf(this.now())
    const sent: Array<[string, KeyState, Counts]> = []
    for (const [key, state] of this.keys) {
      if (state.pending[0] === 0 && state.pending[1] === 0) {
        if (![...state.mine.keys()].some((w) => w >= window - 1)) this.keys.delete(key)
        continue
      }
      sent.push([key, state, state.pending])
      state.pending = [0, 0]
    }
    if (sent.length === 0) return 0
    this.running = true
    try {
      const totals = await this.shared.add(sent.map(([key, , [m, b]]) => ({ key, window, m, b })))
      sent.forEach(([key, state, counts], i) => {
        const t = totals[i]
        if (t !== undefined) this.apply(key, state, window, counts, t)
      })
      return sent.length
    } finally {
      this.running = false
    }
  }

  private apply (key: string, state: KeyState, window: number, added: Counts, totals: UseTotals): void {
    const mine = state.mine.get(window) ?? [0, 0]
    mine[0] += added[0]
    mine[1] += added[1]
    state.mine.set(window, mine)
    const cur = newUse(totals.cur, mine, state.seen.get(window))
    const prev = newUse(totals.prev, state.mine.get(window - 1), state.seen.get(window - 1))
    state.seen.set(window, [totals.cur[0] - mine[0], totals.cur[1] - mine[1]])
    state.seen.set(window - 1, [totals.prev[0] - (state.mine.get(window - 1)?.[0] ?? 0), totals.prev[1] - (state.mine.get(window - 1)?.[1] ?? 0)])
    for (const w of state.mine.keys()) if (w < window - 1) state.mine.delete(w)
    for (const w of state.seen.keys()) if (w < window - 1) state.seen.delete(w)
    const messages = cur[0] + prev[0]
    const bytes = cur[1] + prev[1]
    if (messages > 0 || bytes > 0) this.othersUsed(key, messages, bytes)
  }

  get size (): number {
    return this.keys.size
  }
}
