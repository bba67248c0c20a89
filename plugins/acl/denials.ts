// Denials counted by the rule that decided them, over the last minutes, for `mqtt-guard doctor`:
// "rules[2] refused 40 publishes to secret/# by dev-1, dev-7". Bounded: at most MAX_RULES
// (rule, action) pairs, a few example clients and topics each.

import type { Finding } from '../../src/observe/diagnostics.js'
import { WINDOW_MS } from '../../src/observe/diagnostics.js'
import type { AclRequest, Decision } from './rules.js'

const MAX_RULES = 1000
const EXAMPLES = 5

interface Count { rule: string, text: string, action: string, count: number, last: number, clients: Set<string>, topics: Set<string> }

export class DenialCounts {
  private readonly counts = new Map<string, Count>()

  constructor (private readonly now: () => number = Date.now) {}

  count (decision: Decision, req: AclRequest, clientId: string): void {
    const key = `${decision.rule}\u0000${req.action}`
    const now = this.now()
    let c = this.counts.get(key)
    if (c === undefined || now - c.last > WINDOW_MS) {
      if (c === undefined && this.counts.size >= MAX_RULES) this.counts.delete(this.counts.keys().next().value as string)
      c = { rule: decision.rule, text: decision.text, action: req.action, count: 0, last: now, clients: new Set(), topics: new Set() }
      this.counts.set(key, c)
    }
    c.count++
    c.last = now
    if (c.clients.size < EXAMPLES) c.clients.add(clientId === '' ? '(no client ID)' : clientId)
    if (c.topics.size < EXAMPLES) c.topics.add(req.topic)
  }

  findings (): Finding[] {
    const now = this.now()
    const rows = [...this.counts.values()].filter((c) => now - c.last <= WINDOW_MS).sort((a, b) => b.count - a.count)
    if (rows.length === 0) return []
    const total = rows.reduce((n, c) => n + c.count, 0)
    return [{
      id: 'acl-denials',
      severity: 'info',
      summary: `${total} ACL denial${total === 1 ? '' : 's'} in the last ${Math.round(WINDOW_MS / 60_000)} minutes, by ${rows.length} rule${rows.length === 1 ? '' : 's'}`,
      evidence: rows.slice(0, 10).map((c) => `${c.rule}${c.text !== '' && c.text !== c.rule ? ` (${c.text})` : ''}: ${c.count} × ${c.action} of ${[...c.topics].join(', ')} by ${[...c.clients].join(', ')}`),
      fix: 'if these clients should be allowed, change the rule named (`mqtt-guard acl-check --config FILE --user U ACTION TOPIC` shows which rule decides); if not, find out why they try'
    }]
  }
}
