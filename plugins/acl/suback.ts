// Partial SUBSCRIBEs: the broker sees only the allowed filters; its SUBACK is merged back into
// one return code per original filter, in the client's order [MQTT-3.9.3-1], with a failure
// code (3.1.1 0x80, MQTT 5 0x87) at each denied position.

import type { ISubackPacket } from 'mqtt-packet'

interface Pending {
  readonly total: number
  readonly denied: ReadonlySet<number>
  readonly failure: number
}

export class SubackMerger {
  // Keyed by packet identifier: the client cannot reuse it before the SUBACK [MQTT-2.2.1-3].
  private readonly pending = new Map<number, Pending>()

  remember (messageId: number, total: number, denied: readonly number[], failure: number): void {
    // A Set: a SUBSCRIBE may carry thousands of filters, and merge looks each position up.
    this.pending.set(messageId, { total, denied: new Set(denied), failure })
  }

  /** The merged SUBACK, or undefined when this SUBACK needs no merge. */
  merge (suback: ISubackPacket): ISubackPacket | undefined {
    const id = suback.messageId as number
    const p = this.pending.get(id)
    if (p === undefined) return undefined
    this.pending.delete(id)
    const fromBroker = suback.granted
    let next = 0
    const granted: number[] = []
    for (let i = 0; i < p.total; i++) {
      if (p.denied.has(i)) granted.push(p.failure)
      // A broker that answers with too few codes: the missing ones are failures, never grants.
      else {
        const code = fromBroker[next++]
        granted.push(typeof code === 'number' ? code : p.failure)
      }
    }
    return { ...suback, granted }
  }
}
