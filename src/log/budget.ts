// A connection's log budget. A client can make the proxy log (denied filters and publishes,
// removed duplicates, refused packets) as fast as it sends: without a bound, one client writes
// the disk full. Rules, per connection:
//   - LOG_BUDGET.lines lines per LOG_BUDGET.windowMs (20 a minute), counted from its first line;
//   - past that, a line still goes out when it is the first of its kind (its msg) in the
//     window, so a flood of one kind never hides the first line of another (an `auth refused`,
//     the first `acl denied` for a new action);
//   - ALWAYS_LOGGED lines are never held back and do not count: the connection's first and
//     last lines, and the summary;
//   - what was held back is summed up in one `log lines suppressed` line (warn), written before
//     the connection's next line once the window is over, or before `connection closed`.
// The check is pino's logMethod hook on the root: pino calls it only for enabled levels, so a
// connection that logs nothing pays nothing, and the packet path never allocates for it.

import type { LogFn, Logger } from 'pino'

export const LOG_BUDGET = { lines: 20, windowMs: 60_000, kinds: 16 } as const
export const SUMMARY_MSG = 'log lines suppressed'
export const ALWAYS_LOGGED: ReadonlySet<string> = new Set(['connection opened', 'connection closed', SUMMARY_MSG])

/** The key under which a connection's logger holds its budget (children inherit it). */
export const BUDGET = Symbol('mqtt-guard.logBudget')
export type Budgeted = Logger & { [BUDGET]?: LogBudget }

export interface Suppressed {
  /** Lines held back in the window. */
  suppressed: number
  /** How many of each message (the first LOG_BUDGET.kinds kinds; the rest under `other`). */
  byMsg: Record<string, number>
  windowMs: number
}

export class LogBudget {
  private start: number
  private used = 0
  /** Kinds written in this window (bounded by LOG_BUDGET.kinds). */
  private readonly kinds = new Set<string>()
  private held: Map<string, number> | null = null
  private heldTotal = 0

  constructor (private readonly now: () => number = Date.now, private readonly limits: { lines: number, windowMs: number, kinds: number } = LOG_BUDGET) {
    this.start = now()
  }

  /** True when a line with this msg may be written now; false: it is counted for the summary. */
  admit (msg: string): boolean {
    if (ALWAYS_LOGGED.has(msg)) return true
    const first = !this.kinds.has(msg) && this.kinds.size < this.limits.kinds
    if (first) this.kinds.add(msg)
    if (this.used < this.limits.lines || first) {
      this.used++
      return true
    }
    this.hold(msg)
    return false
  }

  private hold (msg: string): void {
    this.held ??= new Map()
    const key = this.held.has(msg) || this.held.size < this.limits.kinds ? msg : 'other'
    this.held.set(key, (this.held.get(key) ?? 0) + 1)
    this.heldTotal++
  }

  /** When the window is over: starts the next one, and returns what the last one held back. */
  rollover (): Suppressed | undefined {
    const now = this.now()
    if (now - this.start < this.limits.windowMs) return undefined
    this.start = now
    this.used = 0
    this.kinds.clear()
    return this.flush()
  }

  /** What was held back so far (undefined: nothing), and forgets it. */
  flush (): Suppressed | undefined {
    if (this.held === null) return undefined
    const summary = { suppressed: this.heldTotal, byMsg: Object.fromEntries(this.held), windowMs: this.limits.windowMs }
    this.held = null
    this.heldTotal = 0
    return summary
  }
}

function msgOf (args: unknown[]): string {
  const [first, second] = args
  if (typeof first === 'string') return first
  return typeof second === 'string' ? second : ''
}

/** pino's logMethod hook (installed on the root by createLogger). */
export function budgetHook (this: Logger, args: Parameters<LogFn>, method: LogFn): void {
  const budget = (this as Budgeted)[BUDGET]
  if (budget !== undefined) {
    const summary = budget.rollover()
    if (summary !== undefined) this.warn(summary, SUMMARY_MSG)
    if (!budget.admit(msgOf(args))) return
  }
  method.apply(this, args)
}
