// A connection's logger: one pino child bound to who the connection is (`conn`, `address`,
// then `clientId` and `username` once CONNECT is read), so no call repeats them (pino would
// write a key twice), with the connection's log budget (log-budget.ts) attached.
// The child is made on first use: a connection that logs nothing never makes one.

import type { Logger } from 'pino'
import { cutFields } from '../log/log.js'
import { BUDGET, LogBudget, SUMMARY_MSG, type Budgeted } from '../log/budget.js'

export interface Who {
  conn: string
  address: string
  clientId?: string | undefined
  username?: string | undefined
}

export class ConnectionLog {
  private logger: Logger | null = null
  private budget: LogBudget | null = null

  constructor (private readonly root: Logger, private readonly who: () => Who) {}

  get log (): Logger {
    if (this.logger !== null) {
      // A reload may have changed the level: the child follows its root's.
      if (this.logger.level !== this.root.level) this.logger.level = this.root.level
      return this.logger
    }
    // Bindings do not pass through the root's formatters: long values are cut here.
    const child: Budgeted = this.root.child(cutFields(this.who()))
    child[BUDGET] = this.budget ??= new LogBudget()
    this.logger = child
    return child
  }

  /** Who the connection is changed (CONNECT read, a client ID assigned, a certificate's user name). */
  rebind (): void {
    this.logger = null
  }

  /** Writes what the budget held back, if anything: before the connection's last line. */
  flush (): void {
    const summary = this.budget?.flush()
    if (summary !== undefined) this.log.warn(summary, SUMMARY_MSG)
  }
}
