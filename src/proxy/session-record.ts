// What a client's broker holds for it, recorded from the bytes the proxy sends each way, so
// that `failover: rehome` can rebuild it on another broker without closing the client:
// - the granted subscriptions (a SUBSCRIBE's filters and options once its SUBACK grants them,
//   minus UNSUBSCRIBEs), re-sent as one SUBSCRIBE whose SUBACK the client never sees;
// - the client's QoS 1 and 2 PUBLISHes the broker has not completed, re-sent with DUP set
//   (a QoS 2 message past PUBREC too: the dead broker may not have passed it on, so a
//   duplicate is preferred to a loss; its second PUBREC is not shown to the client);
// - the packet identifiers of the old broker's deliveries the client has not acknowledged:
//   after the move the client's acks for them are answered here (a PUBREC gets its PUBREL)
//   and not forwarded, and the new broker's deliveries get other identifiers while those are
//   in use, so the client never sees one identifier twice.
// Recorded only when the pool's failover is rehome: other connections pay nothing.

import type { ISubscribePacket, ISubscription, Packet } from 'mqtt-packet'
import { FRAME_TYPE, frameType, type Codec } from '../wire/codec.js'
import { packetIdOffset, publishQos, readPacketId, withDup, withPacketId } from '../wire/packet-id.js'

type Stage = 'sent' | 'pubrec' | 'pubrel'
type Properties = ISubscribePacket['properties']

/** What the client is owed by the proxy itself when one of its acks was for the old broker. */
export type Answer = Packet | undefined

export class SessionRecord {
  /** Granted: filter → its subscription as subscribed, and the SUBSCRIBE's properties. */
  private readonly subs = new Map<string, { sub: ISubscription, properties: Properties }>()
  private readonly pendingSub = new Map<number, { packet: ISubscribePacket, frame: Buffer }>()
  private readonly pendingUnsub = new Map<number, { filters: string[], frame: Buffer }>()
  /** QoS 2 deliveries the client acknowledged with PUBREC, waiting for the broker's PUBREL. */
  private readonly awaitingRel = new Set<number>()
  /** Client → broker QoS 1/2 PUBLISHes in flight, by packet identifier. */
  private readonly up = new Map<number, { frame: Buffer, stage: Stage }>()
  /** Broker → client deliveries in flight, by the identifier the client knows. */
  private readonly down = new Set<number>()
  /** Identifiers of the old broker's deliveries, after a move: their acks end here. */
  private readonly stale = new Set<number>()
  /** The new broker's identifier → the one given to the client, while they differ. */
  private readonly toClient = new Map<number, number>()
  private readonly toBroker = new Map<number, number>()
  /** Resent QoS 2 PUBLISHes whose PUBREC the client already had. */
  private readonly quietPubrec = new Set<number>()
  /** The identifiers of the proxy's own SUBSCRIBEs after a move, and what to do on their SUBACKs. */
  private resubscribed: { ids: Set<number>, done: () => void } | undefined
  /** Too much in flight to keep: this connection falls back to reconnect. */
  overflowed = false

  constructor (private readonly codec: Codec, private readonly limit: number) {}

  /** Moves could happen: nothing overflowed. */
  get usable (): boolean {
    return !this.overflowed
  }

  // ---- recording ------------------------------------------------------------------------

  /**
   * A frame on its way to the broker. Returns what to send (null: nothing, the ack was for
   * the old broker) and, for such an ack, what to answer the client.
   */
  toBrokerFrame (frame: Buffer): { frame: Buffer | null, answer?: Answer } {
    const type = frameType(frame)
    const at = packetIdOffset(frame)
    if (at < 0) return { frame }
    const id = readPacketId(frame, at)
    switch (type) {
      case FRAME_TYPE.publish:
        if (this.up.size >= this.limit && !this.up.has(id)) this.overflowed = true
        else this.up.set(id, { frame, stage: 'sent' })
        return { frame }
      case FRAME_TYPE.pubrel: {
        const e = this.up.get(id)
        if (e !== undefined) e.stage = 'pubrel'
        return { frame }
      }
      case FRAME_TYPE.subscribe:
        this.pendingSub.set(id, { packet: this.codec.decode(frame) as ISubscribePacket, frame })
        return { frame }
      case FRAME_TYPE.unsubscribe:
        this.pendingUnsub.set(id, { filters: (this.codec.decode(frame) as { unsubscriptions: string[] }).unsubscriptions, frame })
        return { frame }
      case FRAME_TYPE.puback: case FRAME_TYPE.pubrec: case FRAME_TYPE.pubcomp:
        return this.clientAck(type, frame, at, id)
      default:
        return { frame }
    }
  }

  /** The client acknowledges a delivery: the old broker's (answered here) or a mapped one. */
  private clientAck (type: number, frame: Buffer, at: number, id: number): { frame: Buffer | null, answer?: Answer } {
    if (this.stale.has(id)) {
      if (type !== FRAME_TYPE.pubrec) this.stale.delete(id)
      // The old broker would have sent PUBREL: the client's QoS 2 flow completes here.
      return { frame: null, answer: type === FRAME_TYPE.pubrec ? { cmd: 'pubrel', messageId: id } : undefined }
    }
    if (type === FRAME_TYPE.pubrec) this.awaitingRel.add(id)
    else {
      this.down.delete(id)
      this.awaitingRel.delete(id)
    }
    const brokerId = this.toBroker.get(id)
    if (brokerId === undefined) return { frame }
    if (type !== FRAME_TYPE.pubrec) {
      this.toBroker.delete(id)
      this.toClient.delete(brokerId)
    }
    return { frame: withPacketId(frame, at, brokerId) }
  }

  /** A frame on its way to the client. Null: the client must not see it (a resend's ack). */
  toClientFrame (frame: Buffer): Buffer | null {
    const type = frameType(frame)
    const at = packetIdOffset(frame)
    if (at < 0) return frame
    const id = readPacketId(frame, at)
    switch (type) {
      case FRAME_TYPE.publish:
      case FRAME_TYPE.pubrel: {
        const mine = type === FRAME_TYPE.publish ? this.clientIdFor(id) : this.toClient.get(id) ?? id
        if (type === FRAME_TYPE.publish && publishQos(frame) > 0) this.down.add(mine)
        if (type === FRAME_TYPE.pubrel) this.awaitingRel.delete(mine)
        return mine === id ? frame : withPacketId(frame, at, mine)
      }
      case FRAME_TYPE.puback: case FRAME_TYPE.pubcomp:
        this.up.delete(id)
        return frame
      case FRAME_TYPE.pubrec: {
        const e = this.up.get(id)
        if (e !== undefined && e.stage === 'sent') e.stage = 'pubrec'
        if (this.quietPubrec.delete(id)) return null
        return frame
      }
      case FRAME_TYPE.suback: return this.suback(frame, id)
      case FRAME_TYPE.unsuback:
        for (const filter of this.pendingUnsub.get(id)?.filters ?? []) this.subs.delete(filter)
        this.pendingUnsub.delete(id)
        return frame
      default:
        return frame
    }
  }

  private suback (frame: Buffer, id: number): Buffer | null {
    if (this.resubscribed?.ids.delete(id) === true) {
      if (this.resubscribed.ids.size === 0) {
        const { done } = this.resubscribed
        this.resubscribed = undefined
        done()
      }
      return null
    }
    const asked = this.pendingSub.get(id)?.packet
    this.pendingSub.delete(id)
    if (asked === undefined) return frame
    const granted = (this.codec.decode(frame) as { granted: Array<number | object> }).granted
    asked.subscriptions.forEach((sub, i) => {
      const code = granted[i]
      if (typeof code === 'number' && code < 0x80) this.subs.set(sub.topic, { sub: { ...sub, qos: Math.min(sub.qos, code) as ISubscription['qos'] }, properties: asked.properties })
    })
    return frame
  }

  /** The identifier the client gets for the new broker's delivery `id`. */
  private clientIdFor (id: number): number {
    const mapped = this.toClient.get(id)
    if (mapped !== undefined) return mapped
    if (!this.stale.has(id) && !this.toBroker.has(id)) return id
    let free = 65535
    while (free > 0 && (this.stale.has(free) || this.toBroker.has(free) || this.down.has(free))) free--
    this.toClient.set(id, free)
    this.toBroker.set(free, id)
    return free
  }

  // ---- moving to another broker -----------------------------------------------------------

  /**
   * The connection is on a new broker: the old broker's deliveries become stale, and the
   * frames to send before the client's own are returned: the SUBSCRIBEs of every granted
   * filter (when their SUBACKs are in, `subscribed` is called; at once when there is none)
   * and the resends.
   */
  moved (subscribed: () => void): { subscribe: Buffer[], resend: Buffer[], answers: Packet[] } {
    for (const id of this.down) this.stale.add(id)
    // A QoS 2 delivery the client acknowledged with PUBREC waits for a PUBREL the old broker
    // will not send: the proxy sends it, and the client's PUBCOMP ends here (stale).
    const answers: Packet[] = [...this.awaitingRel].map((id) => ({ cmd: 'pubrel', messageId: id }))
    for (const id of this.awaitingRel) this.stale.add(id)
    this.awaitingRel.clear()
    this.down.clear()
    this.toClient.clear()
    this.toBroker.clear()
    const resend: Buffer[] = []
    for (const [id, e] of this.up) {
      resend.push(withDup(e.frame))
      if (e.stage !== 'sent') this.quietPubrec.add(id)
      // The client already sent PUBREL: send it again after the PUBLISH.
      if (e.stage === 'pubrel') resend.push(Buffer.from([0x62, 0x02, id >> 8, id & 0xff]))
      e.stage = 'sent'
    }
    // SUBSCRIBEs and UNSUBSCRIBEs the old broker never answered: the client still waits for
    // their SUBACK / UNSUBACK, which the new broker gives (and the record reads as before).
    for (const { frame } of this.pendingSub.values()) resend.push(frame)
    for (const { frame } of this.pendingUnsub.values()) resend.push(frame)
    if (this.subs.size === 0) {
      subscribed()
      return { subscribe: [], resend, answers }
    }
    // MQTT 5 properties (a subscription identifier, user properties) belong to a whole
    // SUBSCRIBE: one SUBSCRIBE per distinct set keeps each filter's identifier.
    const groups = new Map<string, { properties: Properties, subs: ISubscription[] }>()
    for (const { sub, properties } of this.subs.values()) {
      const key = JSON.stringify(properties ?? null)
      let g = groups.get(key)
      if (g === undefined) groups.set(key, g = { properties, subs: [] })
      g.subs.push(sub)
    }
    const ids = new Set<number>()
    const subscribe = [...groups.values()].map((g) => {
      const id = this.freeUpId(ids)
      ids.add(id)
      const packet: ISubscribePacket = { cmd: 'subscribe', messageId: id, subscriptions: g.subs, ...(g.properties === undefined ? {} : { properties: g.properties }) }
      return this.codec.encode(packet as Packet)
    })
    this.resubscribed = { ids, done: subscribed }
    return { subscribe, resend, answers }
  }

  /** A client → broker identifier no PUBLISH, SUBSCRIBE or UNSUBSCRIBE of the client uses now. */
  private freeUpId (taken: Set<number>): number {
    let id = 65535
    while (id > 1 && (taken.has(id) || this.up.has(id) || this.pendingSub.has(id) || this.pendingUnsub.has(id))) id--
    return id
  }

  /** For /connections and tests: what a move would restore now. */
  summary (): { subscriptions: number, inFlightUp: number, inFlightDown: number, stale: number } {
    return { subscriptions: this.subs.size, inFlightUp: this.up.size, inFlightDown: this.down.size, stale: this.stale.size }
  }
}

