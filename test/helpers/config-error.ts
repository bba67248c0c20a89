// The message of a config refusal, for the config tests: the call must throw GUARD_ERR_CONFIG.

import { isGuardError } from '../../src/errors.js'

/** Runs `fn`, expects a GUARD_ERR_CONFIG and returns its message. */
export function configErrorOf (fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (!isGuardError(err)) throw err
    if (err.code !== 'GUARD_ERR_CONFIG') throw new Error(`expected GUARD_ERR_CONFIG, got ${err.code}: ${err.message}`)
    return err.message
  }
  throw new Error('expected a config error, none was thrown')
}
