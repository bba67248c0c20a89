// What a Connection tells the operator besides logs: packet and byte counts (into GuardMetrics),
// sampled round trips per leg, and the client's granted subscriptions for /connections.
// Counting is an array increment per frame; a round trip is sampled at most once a second per
// leg and connection; SUBSCRIBE, UNSUBSCRIBE and SUBACK (rare) are decoded to track filters.
// Per frame, between samples, a PUBLISH costs one Date.now() and a PUBACK one field check: the
// packet ID, and performance.now() (slower: it checks its receiver), only for the frame that
// opens or may close a sample.

import type { Packet } from 'mqtt-packet'
import { FRAME_TYPE, frameType, type Codec } from '../wire/codec.js'
import type { GuardMetrics, Leg } from './metrics.js'

const SAMPLE_EVERY_MS = 1000

class Sample {
  id = 0
  /** performance.now() of the open sample; 0: none open. */
  startedAt = 0
  /** Date.now() before which no sample opens. */
  nextAt = 0
  constructor (readonly leg: Leg) {}
}

/** Where the variable header of the packet at `buf[start]` begins (after its Remaining Length). */
function bodyAt (buf: Buffer, start: number, end: number): number {
  let i = start + 1
  while (i < end && ((buf[i] as number) & 0x80) !== 0) i++
  return i + 1
}

function publishId (buf: Buffer, start: number, end: number): number | undefined {
  if ((((buf[start] as number) >> 1) & 3) !== 1) return undefined // QoS 1 only: one ack closes it
  const at = bodyAt(buf, start, end)
  if (at + 2 > end) return undefined
  const idAt = at + 2 + buf.readUInt16BE(at)
  return idAt + 2 <= end ? buf.readUInt16BE(idAt) : undefined
}

function ackId (buf: Buffer, start: number, end: number): number | undefined {
  const at = bodyAt(buf, start, end)
  return at + 2 <= end ? buf.readUInt16BE(at) : undefined
}

const PING = -1
const EMPTY: ReadonlyMap<string, number> = new Map()

export class Telemetry {
  // Made on first use: an idle connection (most of a large fleet) holds none of them.
  private granted: Map<string, number> | undefined
  private requested: Map<number, string[]> | undefined
  // One field per leg (not a record keyed by the leg's name: that is a slow keyed load per frame).
  private brokerSample: Sample | undefined
  private clientSample: Sample | undefined

  constructor (private readonly metrics: GuardMetrics) {}

  /** A frame read from the client (0) or the broker (1) while relaying. */
  seen (direction: 0 | 1, type: number, frame: Buffer, codec: Codec | null): void {
    this.seenSpan(direction, type, frame, 0, frame.length)
    if ((type === FRAME_TYPE.subscribe || type === FRAME_TYPE.unsubscribe) && direction === 0 && codec !== null) this.track(decoded(codec, frame))
  }

  /** The counts and round trips of seen() for `buf[start..end)`, a frame of which no view was made. */
  seenSpan (direction: 0 | 1, type: number, buf: Buffer, start: number, end: number): void {
    this.metrics.frame(direction, type, end - start)
    switch (type) {
      case FRAME_TYPE.publish: return this.start(direction === 0 ? this.brokerLeg() : this.clientLeg(), buf, start, end)
      case FRAME_TYPE.puback: return this.end(direction === 1 ? this.brokerLeg() : this.clientLeg(), buf, start, end)
      case FRAME_TYPE.pingreq: return direction === 0 ? this.start(this.brokerLeg(), null, 0, 0) : undefined
      case FRAME_TYPE.pingresp: return direction === 1 ? this.end(this.brokerLeg(), null, 0, 0) : undefined
    }
  }

  /** Granted subscriptions: filter → QoS. */
  get subscriptions (): ReadonlyMap<string, number> {
    return this.granted ?? EMPTY
  }

  /** A frame on its way to the client: the SUBACK the client sees (after plugins merged it). */
  toClient (bytes: Buffer, codec: Codec | null): void {
    if (frameType(bytes) === FRAME_TYPE.suback && codec !== null) this.track(decoded(codec, bytes))
  }

  /** Or a SUBACK the proxy made itself (a plugin answered the SUBSCRIBE). */
  answered (packet: Packet): void {
    if (packet.cmd === 'suback') this.track(packet)
  }

  private brokerLeg (): Sample {
    return (this.brokerSample ??= new Sample('broker'))
  }

  private clientLeg (): Sample {
    return (this.clientSample ??= new Sample('client'))
  }

  /** `buf` null: a PINGREQ. */
  private start (s: Sample, buf: Buffer | null, start: number, end: number): void {
    if (s.startedAt !== 0 || Date.now() < s.nextAt) return
    const id = buf === null ? PING : publishId(buf, start, end)
    if (id === undefined) return
    s.id = id
    s.startedAt = performance.now()
  }

  /** `buf` null: a PINGRESP. */
  private end (s: Sample, buf: Buffer | null, start: number, end: number): void {
    if (s.startedAt === 0 || (buf === null ? PING : ackId(buf, start, end)) !== s.id) return
    this.metrics.roundTrip.observe({ leg: s.leg }, (performance.now() - s.startedAt) / 1000)
    s.startedAt = 0
    s.nextAt = Date.now() + SAMPLE_EVERY_MS
  }

  private track (packet: Packet | undefined): void {
    if (packet === undefined) return
    if (packet.cmd === 'subscribe') {
      (this.requested ??= new Map()).set(packet.messageId as number, packet.subscriptions.map((s) => s.topic))
    } else if (packet.cmd === 'suback') {
      const filters = this.requested?.get(packet.messageId as number)
      if (filters === undefined) return
      this.requested?.delete(packet.messageId as number)
      const granted = this.granted ??= new Map()
      packet.granted.forEach((code, i) => {
        const filter = filters[i]
        const qos = typeof code === 'number' ? code : (code as { qos: number }).qos
        if (filter !== undefined && qos < 0x80) granted.set(filter, qos)
      })
    } else if (packet.cmd === 'unsubscribe') {
      for (const filter of packet.unsubscriptions) this.granted?.delete(filter)
    }
  }
}

/** Malformed frames are the relay's to refuse; telemetry just skips them. */
function decoded (codec: Codec, frame: Buffer): Packet | undefined {
  try {
    return codec.decode(frame)
  } catch {
    return undefined
  }
}
