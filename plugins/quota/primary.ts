// `workers: N` without Redis: the per-user counters and the connections per user name live in
// the primary, as one process would keep them, and every worker reaches them over IPC (calls
// batched). The workers' syncs add their use there exactly as instances add theirs to Redis;
// the connections of a worker that ends stop counting.

import type { PrimaryChannel, PrimarySide } from '../../src/plugin/api.js'
import { MemoryConnections, type Admit, type ConnectionStore } from './connections.js'
import { MemoryUsage, type SharedUsage, type UseEntry, type UseTotals } from './usage.js'

/** The side the primary keeps (PluginDefinition.primary). */
export function primarySide (): PrimarySide {
  const usage = new MemoryUsage()
  const connections = new MemoryConnections()
  return {
    add: (entries: UseEntry[]): UseTotals[] => usage.add(entries),
    admit: (user: string, owner: string, max: number): Admit => connections.admit(user, owner, max),
    release: (user: string, owner: string): void => { connections.release(user, owner) },
    workerGone: (instanceId: string) => { connections.forget(instanceId) }
  }
}

/** A worker's way to the primary's counters. */
export class PrimaryQuotaStore implements SharedUsage, ConnectionStore {
  constructor (private readonly primary: PrimaryChannel) {}

  async add (entries: UseEntry[]): Promise<UseTotals[]> {
    return await this.primary.call('add', entries) as UseTotals[]
  }

  async admit (user: string, owner: string, max: number): Promise<Admit> {
    return await this.primary.call('admit', user, owner, max) as Admit
  }

  async release (user: string, owner: string): Promise<void> {
    await this.primary.call('release', user, owner)
  }
}
