// SUBSCRIBE judged per filter by authorizeSubscribe. The allowed filters go to the broker in
// one SUBSCRIBE with the client's packet ID; the denied ones are remembered by position, and
// the broker's SUBACK is merged back into one return code per original filter, in order
// [MQTT-3.9.3-1], [MQTT-3.8.4-6]. When every filter is denied the proxy answers the SUBACK.

import type { ISubackPacket, ISubscribePacket, ISubscription } from 'mqtt-packet'
import type { ConnectionInfo, HookResult } from '../../src/plugin/api.js'
import { cutFields } from '../../src/log/log.js'

/** Denied filters a SUBSCRIBE's one log line names; the rest are only counted. */
export const DENIED_EXAMPLES = 5

/** How many filters were denied, and the first few (cut for the log line). */
export function deniedFilters (packet: ISubscribePacket, decisions: FilterDecision[]): { count: number, examples: Array<{ filter: string }> } {
  let count = 0
  const examples: Array<{ filter: string }> = []
  decisions.forEach((d, i) => {
    if (d !== null) return
    count++
    const filter = packet.subscriptions[i]?.topic
    if (filter !== undefined && examples.length < DENIED_EXAMPLES) examples.push(cutFields({ filter }))
  })
  return { count, examples }
}

/** 3.1.1 has one failure code, 0x80 [MQTT-3.9.3-2]; MQTT 5 says "not authorized", 0x87. */
export function failureCode (conn: ConnectionInfo): number {
  return conn.protocolVersion === 5 ? 0x87 : 0x80
}

/** Per filter: the subscription to keep (possibly changed by the hook), or null for denied. */
export type FilterDecision = ISubscription | null

interface Pending {
  /** true at the positions that were denied. */
  denied: boolean[]
  code: number
}


function sameSubscription (a: ISubscription, b: ISubscription): boolean {
  return a.topic === b.topic && a.qos === b.qos && a.nl === b.nl && a.rap === b.rap && a.rh === b.rh
}

/** The denied positions of SUBSCRIBEs waiting for their SUBACK; one per plugin instance. */
export class Subacks {
  private readonly pendingByConn = new WeakMap<ConnectionInfo, Map<number, Pending>>()

  /** The verdict for a SUBSCRIBE whose filters were decided, in order. */
  verdict (conn: ConnectionInfo, packet: ISubscribePacket, decisions: FilterDecision[]): HookResult {
    const allowed = decisions.filter((d): d is ISubscription => d !== null)
    const code = failureCode(conn)
    const messageId = packet.messageId as number
    if (allowed.length === 0) {
      const suback: ISubackPacket = { cmd: 'suback', messageId, granted: decisions.map(() => code) }
      return { action: 'answer', packets: [suback], reason: 'every filter denied by authorizeSubscribe' }
    }
    const unchanged = allowed.length === decisions.length &&
      allowed.every((s, i) => sameSubscription(s, packet.subscriptions[i] as ISubscription))
    if (unchanged) return undefined
    if (allowed.length < decisions.length) {
      let pending = this.pendingByConn.get(conn)
      if (pending === undefined) {
        pending = new Map()
        this.pendingByConn.set(conn, pending)
      }
      // Keyed by packet ID: the client cannot reuse it before the SUBACK [MQTT-2.2.1-3].
      pending.set(messageId, { denied: decisions.map((d) => d === null), code })
    }
    return { action: 'continue', packet: { ...packet, subscriptions: allowed } }
  }

  /** Merges the broker's SUBACK with the denied positions of the same packet ID. */
  merge (conn: ConnectionInfo, packet: ISubackPacket): HookResult {
    const pending = this.pendingByConn.get(conn)
    const messageId = packet.messageId as number
    const entry = pending?.get(messageId)
    if (pending === undefined || entry === undefined) return undefined
    pending.delete(messageId)
    const fromBroker = packet.granted as number[]
    let next = 0
    // A broker that answered fewer codes than filters sent gets failure entries for the rest.
    const granted = entry.denied.map((denied) => denied ? entry.code : fromBroker[next++] ?? entry.code)
    return { action: 'continue', packet: { ...packet, granted } }
  }
}

/** The subscription a hook answered with, over the original: aedes lets it change topic and QoS. */
export function decisionFrom (original: ISubscription, answered: unknown): FilterDecision {
  if (answered === null || typeof answered !== 'object') return null
  const a = answered as Partial<ISubscription>
  const topic = typeof a.topic === 'string' ? a.topic : original.topic
  const qos = a.qos === 0 || a.qos === 1 || a.qos === 2 ? a.qos : original.qos
  const result: ISubscription = { ...original, topic, qos }
  if (typeof a.nl === 'boolean') result.nl = a.nl
  if (typeof a.rap === 'boolean') result.rap = a.rap
  if (a.rh === 0 || a.rh === 1 || a.rh === 2) result.rh = a.rh
  return result
}
