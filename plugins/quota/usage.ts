// Per-user usage added up across instances (Redis) or workers (the primary), without making a
// packet wait: every PUBLISH is decided by this process's buckets at once, and every `syncMs`
// the messages and bytes each user name sent here since the last sync are added to a shared
// counter per one-second window, which answers with the totals over all instances of that
// window and of the `span` windows before it (the burst's length). What the others used since
// this process last looked is then taken off its buckets too, less what has refilled since
// (by the window's age), so each instance's bucket follows the shared one, late by one sync.

/** Windows of the shared counters: fixed, one second, numbered from the epoch. */
export const WINDOW_MS = 1000

/** The most windows read back (a burst of up to a minute is remembered whole). */
export const MAX_SPAN = 60

/** The windows a burst of `burstSeconds` spans, before the current one. */
export function spanOf (burstSeconds: number): number {
  return Math.min(MAX_SPAN, Math.ceil(burstSeconds))
}

export function windowOf (epochMs: number): number {
  return Math.floor(epochMs / WINDOW_MS)
}

/** Messages and bytes. */
export type Counts = [number, number]

/** What one process adds to one user's counter of one window; `span`: how many windows before it to read back. */
export interface UseEntry { key: string, window: number, m: number, b: number, span: number }

/** The totals over all instances after the add: `[0]` that window's, `[i]` the one i windows before. */
export type UseTotals = Counts[]

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
    return entries.map(({ key, window, m, b, span }) => {
      let windows = this.keys.get(key)
      if (windows === undefined) this.keys.set(key, windows = new Map())
      const cur = windows.get(window) ?? [0, 0]
      cur[0] += m
      cur[1] += b
      windows.set(window, cur)
      for (const w of windows.keys()) if (w < window - MAX_SPAN) windows.delete(w)
      return Array.from({ length: span + 1 }, (_, i) => [...(windows.get(window - i) ?? [0, 0])] as Counts)
    })
  }

  private sweep (window: number): void {
    this.sweptAt = window * WINDOW_MS
    for (const [key, windows] of this.keys) {
      if (![...windows.keys()].some((w) => w >= window - MAX_SPAN)) this.keys.delete(key)
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
    /** Takes what the others used `ageMs` ago off this process's buckets of `key`. */
    private readonly othersUsed: (key: string, messages: number, bytes: number, ageMs: number) => void,
    /** How many windows back to read (the burst's length). */
    private readonly span: () => number,
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
    const span = this.span()
    const sent: Array<[string, KeyState, Counts]> = []
    for (const [key, state] of this.keys) {
      if (state.pending[0] === 0 && state.pending[1] === 0) {
        if (![...state.mine.keys(), ...state.seen.keys()].some((w) => w >= window - span)) this.keys.delete(key)
        continue
      }
      sent.push([key, state, state.pending])
      state.pending = [0, 0]
    }
    if (sent.length === 0) return 0
    this.running = true
    try {
      const totals = await this.shared.add(sent.map(([key, , [m, b]]) => ({ key, window, m, b, span })))
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
    const into = this.now() - window * WINDOW_MS
    totals.forEach((total, i) => {
      const w = window - i
      const use = newUse(total, state.mine.get(w), state.seen.get(w))
      const own = state.mine.get(w)
      state.seen.set(w, [total[0] - (own?.[0] ?? 0), total[1] - (own?.[1] ?? 0)])
      // Its age: from the window's middle (all that is known of when in it).
      if (use[0] > 0 || use[1] > 0) this.othersUsed(key, use[0], use[1], i === 0 ? 0 : into + (i - 0.5) * WINDOW_MS)
    })
    const oldest = window - totals.length + 1
    for (const w of state.mine.keys()) if (w < oldest) state.mine.delete(w)
    for (const w of state.seen.keys()) if (w < oldest) state.seen.delete(w)
  }

  get size (): number {
    return this.keys.size
  }
}
