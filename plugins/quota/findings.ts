// Who hit a quota lately, for `mqtt-guard doctor` (the plugin's diagnose()): by client ID and
// user name, what was over (messages, bytes, connections) and how often, over doctor's window.
// Bounded: at most MAX_CLIENTS rows; the oldest goes first.

import { WINDOW_MS, type Finding } from '../../src/observe/diagnostics.js'

const MAX_CLIENTS = 1000
const SHOWN = 10

export type ExceededKind = 'messages' | 'bytes' | 'connections'

interface Row { clientId: string, username: string | undefined, kinds: Map<string, number>, count: number, last: number }

export class QuotaFindings {
  private readonly rows = new Map<string, Row>()

  constructor (private readonly now: () => number = Date.now) {}

  /** `what`: the kind and the scope, e.g. `messages per client`, `connections per user name`. */
  count (clientId: string, username: string | undefined, what: string): void {
    const key = `${clientId}\u0000${username ?? ''}`
    const now = this.now()
    let row = this.rows.get(key)
    if (row === undefined || now - row.last > WINDOW_MS) {
      row = { clientId: clientId === '' ? '(no client ID)' : clientId, username, kinds: new Map(), count: 0, last: now }
    }
    this.rows.delete(key)
    this.rows.set(key, row)
    if (this.rows.size > MAX_CLIENTS) this.rows.delete(this.rows.keys().next().value as string)
    row.count++
    row.last = now
    row.kinds.set(what, (row.kinds.get(what) ?? 0) + 1)
  }

  findings (): Finding[] {
    const now = this.now()
    const rows = [...this.rows.values()].filter((r) => now - r.last <= WINDOW_MS).sort((a, b) => b.count - a.count)
    if (rows.length === 0) return []
    const total = rows.reduce((n, r) => n + r.count, 0)
    return [{
      id: 'quota-exceeded',
      severity: 'warning',
      summary: `${rows.length} client${rows.length === 1 ? '' : 's'} hit a quota ${total} time${total === 1 ? '' : 's'} in the last ${Math.round(WINDOW_MS / 60_000)} minutes`,
      evidence: rows.slice(0, SHOWN).map((r) => `${r.clientId}${r.username === undefined ? '' : ` (user ${r.username})`}: ${[...r.kinds].map(([what, n]) => `${n} × ${what}`).join(', ')}`),
      fix: 'a client that should send this much needs a higher perClient / perUser limit in the quota plugin (or onExceeded: delay, which slows it instead); otherwise find out why it sends so much (a loop, a retry storm)'
    }]
  }
}
