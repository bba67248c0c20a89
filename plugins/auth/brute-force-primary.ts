// The guessing counters of `workers: N` without Redis: one BruteForce in the primary for every
// worker, so a guesser spread over the workers (round robin spreads it for them) is blocked
// after maxFailures in all, not maxFailures per worker.

import type { PrimaryChannel, PrimarySide } from '../../src/plugin/api.js'
import type { AuthOptions } from './options.js'
import { BruteForce, type Block, type FailureResult } from './brute-force.js'

/** The side the primary keeps (PluginDefinition.primary); nothing without bruteForce. */
export function primarySide (o: AuthOptions): PrimarySide {
  if (o.bruteForce === undefined) return {}
  const counters = new BruteForce(o.bruteForce)
  return {
    blocked: (keys: string[]): Block | null => counters.blocked(keys) ?? null,
    failed: (keys: string[]): FailureResult => counters.failed(keys),
    succeeded: (key: string): void => { counters.succeeded(key) }
  }
}

/** A worker's view of the primary's counters: SharedBruteForce's calls, over IPC. */
export class PrimaryBruteForce {
  constructor (private readonly primary: PrimaryChannel) {}

  async blocked (keys: string[]): Promise<Block | undefined> {
    return (await this.primary.call('blocked', keys) as Block | null) ?? undefined
  }

  async failed (keys: string[]): Promise<FailureResult> {
    return await this.primary.call('failed', keys) as FailureResult
  }

  async succeeded (key: string): Promise<void> {
    await this.primary.call('succeeded', key)
  }
}
