// A reload's admin settings, for one process and for the primary of `workers: N`: on the same
// address they apply in place (the token, the bounds); on another address a new server starts,
// and the old one closes half a second later, so that the answer of a POST /reload it carries
// still reaches its caller. A new address that cannot be bound is refused; the old one stays.

import type { Logger } from 'pino'
import type { AdminSpec } from '../config/config.js'
import { sameSetting, type Change } from '../reload/plan.js'
import { AdminServer, type AdminTarget } from './endpoint.js'

/** The admin server and the spec in force after the reload. */
export async function readmin (running: AdminServer | undefined, now: AdminSpec | undefined, next: AdminSpec | undefined, target: () => AdminTarget, log: Logger, changed: Change[], refused: Change[]): Promise<{ server: AdminServer | undefined, spec: AdminSpec | undefined }> {
  if (sameSetting(now, next)) return { server: running, spec: now }
  if (running !== undefined && next !== undefined && running.respec(next)) {
    changed.push({ setting: 'admin', what: 'token or bounds', reach: 'now' })
    return { server: running, spec: next }
  }
  let started: AdminServer | undefined
  if (next !== undefined) {
    try {
      started = await AdminServer.start(next, target(), log)
    } catch (err) {
      refused.push({ setting: 'admin', what: `move to ${next.host}:${next.port}`, reach: 'refused', detail: (err as Error).message })
      return { server: running, spec: now }
    }
  }
  if (running !== undefined) setTimeout(() => { void running.close() }, 500).unref()
  changed.push({ setting: 'admin', what: started === undefined ? 'turned off' : `at ${started.host}:${started.port}`, reach: 'now' })
  return { server: started, spec: next }
}
