// The registry and flapping counters of `workers: N` without Redis: one MemoryStore in the
// primary, asked by every worker over IPC (batched), so a duplicate client ID is refused or
// taken over across workers as across the connections of one process. A takeover is told to
// every worker, whose connection holding the ID is closed, as the Redis channel does across
// instances; the leases of a worker that ends are freed.

import type { PrimaryChannel, PrimarySide } from '../../src/plugin/api.js'
import type { ClientIdOptions } from './options.js'
import { MemoryStore, sameIdentity, type Admission, type Claim, type HistoryEntry, type Holder, type Renewal, type Store } from './store.js'

/** A takeover, as the primary tells the workers (the Redis store's notice, same fields). */
export interface TakeoverNotice { id: string, owner: string, by: string, same: boolean }

/** The side the primary keeps (PluginDefinition.primary). */
export function primarySide (o: ClientIdOptions, tell: (event: string, data: unknown) => void): PrimarySide {
  const store = new MemoryStore(o.flapping, o.maxKeys)
  return {
    admit: (claim: Claim): Admission => {
      const a = store.admit(claim)
      if (a.kind === 'admitted' && a.tookOver !== undefined && claim.clientId !== undefined) {
        const notice: TakeoverNotice = { id: claim.clientId, owner: a.tookOver.owner, by: claim.holder.address, same: sameIdentity(a.tookOver, claim.holder) }
        tell('takeover', notice)
      }
      return a
    },
    release: (clientId: string | null, owner: string, flapKeys: string[], end: HistoryEntry): void => { store.release(clientId ?? undefined, owner, flapKeys, end) },
    renew: (leases: Array<{ clientId: string, holder: Holder }>): Renewal[] => store.renew(leases),
    workerGone: (instanceId: string) => {
      for (const [id, holder] of store.leases) if (holder.owner.startsWith(`${instanceId}:`)) store.leases.delete(id)
    }
  }
}

/** A worker's Store: every call goes to the primary's side. */
export class PrimaryStore implements Store {
  constructor (private readonly primary: PrimaryChannel) {}

  async admit (claim: Claim): Promise<Admission> {
    return await this.primary.call('admit', claim) as Admission
  }

  async release (clientId: string | undefined, owner: string, flapKeys: string[], end: HistoryEntry): Promise<void> {
    // JSON has no undefined in an argument list: null stands for "no ID".
    await this.primary.call('release', clientId ?? null, owner, flapKeys, end)
  }

  async renew (leases: Array<{ clientId: string, holder: Holder }>): Promise<Renewal[]> {
    return await this.primary.call('renew', leases) as Renewal[]
  }

  /** Calls `listener` with each takeover the primary tells. */
  onTakeover (listener: (notice: TakeoverNotice) => void): () => void {
    return this.primary.on('takeover', (data) => { listener(data as TakeoverNotice) })
  }
}
