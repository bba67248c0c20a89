// The records of `workers: N` without Redis: one LocalRecords in the primary for every worker,
// so a client that reconnects to another worker still has its acknowledged messages known.
// As with Redis, a record is written without waiting (the IPC batches it with the turn's other
// calls) and looked up, awaited, only for a DUP or in window mode.

import type { PrimaryChannel, PrimarySide } from '../../src/plugin/api.js'
import type { DedupeOptions } from './options.js'
import { LocalRecords } from './records.js'

/** The side the primary keeps (PluginDefinition.primary). */
export function primarySide (o: DedupeOptions): PrimarySide {
  const records = new LocalRecords(o.ttlMs, o.maxEntries)
  return {
    write: (field: string, value: string): void => { records.set(field, value) },
    read: (field: string): string | null => records.get(field) ?? null
  }
}

/** A worker's view of the primary's records. */
export class PrimaryRecords {
  constructor (private readonly primary: PrimaryChannel, private readonly onError: (what: string, err: unknown) => void) {}

  write (field: string, value: string): void {
    this.primary.call('write', field, value).catch((err: unknown) => { this.onError('write', err) })
  }

  async read (field: string): Promise<string | undefined> {
    try {
      return (await this.primary.call('read', field) as string | null) ?? undefined
    } catch (err) {
      // Not known, as with Redis unreachable: the message is forwarded (at-least-once kept).
      this.onError('read', err)
      return undefined
    }
  }

  close (): void {}
}
