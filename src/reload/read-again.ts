// What every reload starts with, in one process or the primary of `workers: N`: reloads run
// one at a time in the order asked, and the configuration is read again whole; one that does
// not resolve is logged and answered as refused whole, with its error.

import type { Logger } from 'pino'
import { isGuardError } from '../errors.js'
import type { ResolvedConfig } from '../plugin/loader.js'
import type { ReloadReport } from './plan.js'

/** Runs reloads one at a time, in the order asked; one that fails does not stop the next. */
export class OneAtATime {
  private last: Promise<unknown> = Promise.resolve()

  async run<T> (work: () => Promise<T>): Promise<T> {
    const done = this.last.then(work)
    this.last = done.catch(() => {})
    return await done
  }
}

/** The configuration read again, or the error that refuses it whole (logged here). */
export async function readAgain (reread: () => Promise<ResolvedConfig>, log: Logger, source: string): Promise<ResolvedConfig | { refused: string }> {
  try {
    return await reread()
  } catch (err) {
    const detail = isGuardError(err) ? err.message : (err as Error).message
    log.error({ source, err: detail }, 'config file not reloaded: the running settings stay in force')
    return { refused: detail }
  }
}

/** The answer to a reload whose configuration did not resolve: nothing changed. */
export function refusedWhole (detail: string, reload: number, source: string, generation: number, olderConnections: number): ReloadReport {
  return { at: new Date().toISOString(), reload, source, applied: false, changed: [], refused: [{ setting: 'config', what: 'the configuration', reach: 'refused', detail }], generation, olderConnections }
}
