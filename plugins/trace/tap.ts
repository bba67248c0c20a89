// One traced connection: turns the frames the proxy reads and writes on both legs into trace
// lines (format.ts). Decodes each frame with the connection's codec, resolves MQTT 5 topic
// aliases per leg and direction, pairs answers with their requests for round trips, applies
// the per-packet filters, redacts, and keeps to a line rate.

import { createHash } from 'node:crypto'
import type { Packet } from 'mqtt-packet'
import { Codec, frameType } from '../../src/wire/codec.js'
import type { ConnectionInfo, Leg, PacketTap, ReceivedVerdict } from '../../src/plugin/api.js'
import { TokenBucket } from '../../src/proxy/limits.js'
import { looksLikeJwt } from '../../src/log/log.js'
import type { CompiledFilters } from './filters.js'
import type { TraceOptions } from './options.js'
import type { TraceDir, TraceLine, TracePayload, TraceVerdict } from './format.js'
import type { TraceSink } from './sink.js'

const TYPE_NAMES = ['reserved', 'connect', 'connack', 'publish', 'puback', 'pubrec', 'pubrel', 'pubcomp', 'subscribe', 'suback', 'unsubscribe', 'unsuback', 'pingreq', 'pingresp', 'disconnect', 'auth']

// request type → the answer that closes it (same leg, the other direction).
const ANSWERS: Record<string, string> = {
  connect: 'connack', pubrel: 'pubcomp', subscribe: 'suback', unsubscribe: 'unsuback', pingreq: 'pingresp'
}

export interface ActiveTrace { id: string, filters: CompiledFilters }

/** (leg and direction of the request, the answer's type, packet ID) as one number. */
function pendingKey (legDir: number, answer: string, id: number): number {
  return (legDir * 16 + TYPE_NAMES.indexOf(answer)) * 65_536 + id
}

/** A line without what is the same on every line of the connection (serialised once). */
type Body = Omit<TraceLine, 'level' | 'time' | 'msg' | 'us' | 'trace' | 'instance' | 'conn' | 'clientId' | 'username' | 'address' | 'port'>

/** Shared by all traced connections of one plugin: for the metrics. */
export interface TraceCounters { lines: number, droppedByRate: number }

/** Epoch microseconds from the monotonic clock: ordered, sub-millisecond. */
const origin = Date.now() * 1000 - Math.round(performance.now() * 1000)
export function nowUs (): number {
  return origin + Math.round(performance.now() * 1000)
}

function payloadOf (payload: Buffer | string | undefined, options: TraceOptions): TracePayload | undefined {
  if (options.payload === 'none' || payload === undefined) return undefined
  const bytes = typeof payload === 'string' ? Buffer.from(payload) : payload
  const out: TracePayload = { bytes: bytes.length }
  if (options.payload === 'hash') {
    out.sha256 = createHash('sha256').update(bytes).digest('hex')
    return out
  }
  const kept = bytes.subarray(0, options.maxPayloadBytes)
  if (options.payload === 'hex') out.hex = kept.toString('hex')
  else out.text = kept.toString('utf8')
  if (kept.length < bytes.length) out.truncated = true
  return out
}

export class ConnectionTrace implements PacketTap {
  private readonly pending = new Map<number, number>()
  private readonly aliases = new Map<string, string>()
  private readonly bucket: TokenBucket
  private dropped = 0
  // The last packet read and its line: when the same bytes go out on the other leg (a packet
  // passed on unchanged), the second line is a copy, not a second decode.
  private lastFrame: Buffer | undefined
  private lastLine: Body | undefined

  constructor (
    private readonly conn: ConnectionInfo,
    private readonly trace: ActiveTrace,
    private readonly options: TraceOptions,
    private readonly sink: Pick<TraceSink, 'writeText'>,
    private readonly instance: string,
    private readonly counters: TraceCounters = { lines: 0, droppedByRate: 0 }
  ) {
    this.bucket = new TokenBucket(options.maxLinesPerSecond)
  }

  received (leg: Leg, frame: Buffer, verdict: ReceivedVerdict, plugin: string | undefined, packet: Packet | undefined): void {
    this.line(leg, leg === 'client' ? 'up' : 'down', frame, verdict, verdict === 'forwarded' ? undefined : plugin, packet)
  }

  sent (leg: Leg, frame: Buffer, made: boolean): void {
    const dir = leg === 'client' ? 'down' : 'up'
    const last = this.lastLine
    if (frame === this.lastFrame && last !== undefined && !made) {
      const us = nowUs()
      const line: Body = { ...last, leg, dir, verdict: 'sent' }
      delete line.plugin
      delete line.rttUs
      if (leg === 'broker' && line.type === 'connect' && this.conn.broker !== undefined) line.broker = this.conn.broker
      this.roundTrip(leg, dir, line.type, line, us)
      this.emit(line, us)
      return
    }
    this.line(leg, dir, frame, made ? 'proxy' : 'sent', undefined, undefined)
  }

  private line (leg: Leg, dir: TraceDir, frame: Buffer, verdict: TraceVerdict, plugin: string | undefined, given: Packet | undefined): void {
    const us = nowUs()
    let packet = given
    if (packet === undefined) {
      try {
        packet = Codec.shared(this.conn.protocolVersion).decode(frame)
      } catch {
        packet = undefined
      }
    }
    const type = packet?.cmd ?? TYPE_NAMES[frameType(frame)] ?? 'reserved'
    const line = this.base(leg, dir, verdict, plugin, type, frame)
    if (packet !== undefined) this.describe(line, packet, leg, dir)
    this.roundTrip(leg, dir, type, line, us)
    if (this.options.payload === 'hex' || this.options.payload === 'text') line.frame = this.wireBytes(frame, packet, line)
    this.lastFrame = frame
    this.lastLine = line
    this.emit(line, us)
  }

  /** Filters and the line rate, then out. */
  private emit (line: Body, us: number): void {
    if (!this.wanted(line)) return
    if (this.bucket.take() > 0) {
      this.dropped++
      this.counters.droppedByRate++
      return
    }
    this.counters.lines++
    if (this.dropped > 0) {
      (line as Body & { droppedBefore?: number }).droppedBefore = this.dropped
      this.dropped = 0
    }
    this.sink.writeText(this.serialise(line, us))
  }

  private head = ''
  private headFor = ''

  /**
   * JSON for the line: the connection's own fields (the same on every line) are serialised
   * once and reused, and only the packet's are serialised per line.
   */
  private serialise (body: Body, us: number): string {
    const c = this.conn
    const key = `${c.clientId}\n${c.username ?? ''}`
    if (key !== this.headFor) {
      this.headFor = key
      const fixed: Record<string, unknown> = { trace: this.trace.id, instance: this.instance, conn: c.id, clientId: c.clientId }
      if (c.username !== undefined) fixed.username = c.username
      fixed.address = c.address
      fixed.port = c.port
      this.head = JSON.stringify(fixed).slice(1, -1)
    }
    return `{"level":30,"time":${Math.floor(us / 1000)},"msg":"packet","us":${us},${this.head},${JSON.stringify(body).slice(1)}\n`
  }

  private base (leg: Leg, dir: TraceDir, verdict: TraceVerdict, plugin: string | undefined, type: string, frame: Buffer): Body {
    const line: Body = { leg, dir, verdict, type, protocolVersion: this.conn.protocolVersion, size: frame.length }
    if (plugin !== undefined) line.plugin = plugin
    // Several brokers: which one the CONNECT went to (a second one, made by the proxy, is a re-home).
    if (leg === 'broker' && type === 'connect' && this.conn.broker !== undefined) line.broker = this.conn.broker
    return line
  }

  /** The packet's fields, redacted: never a password or AUTH data, nor configured user properties. */
  private describe (line: Body, p: Packet, leg: Leg, dir: TraceDir): void {
    const any = p as Packet & { messageId?: number, reasonCode?: number, returnCode?: number, properties?: Record<string, unknown> }
    if (any.messageId !== undefined) line.id = any.messageId
    const code = any.reasonCode ?? any.returnCode
    if (code !== undefined) line.reasonCode = code
    if (any.properties !== undefined) line.properties = this.redactProperties(any.properties)
    switch (p.cmd) {
      case 'publish': {
        line.qos = p.qos
        line.dup = p.dup
        line.retain = p.retain
        const alias = p.properties?.topicAlias
        let topic = p.topic
        if (alias !== undefined) {
          const key = `${leg}:${dir}:${alias}`
          if (topic === '') topic = this.aliases.get(key) ?? ''
          else this.aliases.set(key, topic)
          line.topicAlias = alias
        }
        line.topic = topic
        const payload = payloadOf(p.payload, this.options)
        if (payload !== undefined) line.payload = payload
        break
      }
      case 'subscribe': line.filters = p.subscriptions.map((s) => ({ topic: s.topic, qos: s.qos })); break
      case 'unsubscribe': line.filters = p.unsubscriptions.map((topic) => ({ topic })); break
      case 'suback': line.reasonCodes = p.granted.map((g) => typeof g === 'number' ? g : (g as { qos: number }).qos); break
      case 'unsuback': if (Array.isArray(p.reasonCode)) line.reasonCodes = p.reasonCode as number[]; break
      case 'connack': line.reasonCode = p.reasonCode ?? p.returnCode ?? 0; break
      case 'connect': {
        line.connect = { clean: p.clean ?? true, keepalive: p.keepalive ?? 0, hasPassword: p.password !== undefined }
        if (p.will !== undefined) {
          const payload = payloadOf(p.will.payload, this.options)
          line.connect.will = { topic: p.will.topic, qos: p.will.qos ?? 0, retain: p.will.retain ?? false, ...(payload !== undefined && { payload }) }
        }
        break
      }
    }
  }

  private redactProperties (properties: Record<string, unknown>): Record<string, unknown> {
    const out: Record<string, unknown> = { ...properties }
    if (out.authenticationData !== undefined) out.authenticationData = '[redacted]'
    const user = out.userProperties as Record<string, unknown> | undefined
    if (user !== undefined && this.options.redactUserProperties.length > 0) {
      out.userProperties = Object.fromEntries(Object.entries(user).map(([k, v]) => [k, this.options.redactUserProperties.includes(k) ? '[redacted]' : v]))
    }
    return out
  }

  /** Records a request's time; an answer gets the round trip on this leg (`rttUs`). */
  private roundTrip (leg: Leg, dir: TraceDir, type: string, line: Body, us: number): void {
    const answerOf = type === 'publish' ? (line.qos === 1 ? 'puback' : line.qos === 2 ? 'pubrec' : undefined) : ANSWERS[type]
    const id = line.id ?? 0
    const legDir = (leg === 'client' ? 0 : 2) + (dir === 'up' ? 0 : 1)
    if (answerOf !== undefined) {
      // Bounded: a peer that never answers cannot grow this past the packet ID space.
      if (this.pending.size < 65_536) this.pending.set(pendingKey(legDir, answerOf, id), us)
      return
    }
    const key = pendingKey(legDir ^ 1, type, id)
    const started = this.pending.get(key)
    if (started === undefined) return
    this.pending.delete(key)
    line.rttUs = us - started
  }

  /** Per-packet filters: packet types, and the topic of PUBLISH, SUBSCRIBE and UNSUBSCRIBE. */
  private wanted (line: Body): boolean {
    const f = this.trace.filters
    if (!f.type(line.type)) return false
    if (line.topic !== undefined) return f.topic(line.topic)
    if (line.filters !== undefined) return line.filters.some((x) => f.topic(x.topic))
    return true
  }

  /** The bytes for `trace export`: as on the wire, except what must never be written. */
  private wireBytes (frame: Buffer, packet: Packet | undefined, line: Body): string | undefined {
    if (packet === undefined) return frame.toString('base64')
    const redacted = packet.cmd === 'connect' || packet.cmd === 'auth' || (line.properties?.userProperties !== undefined && this.options.redactUserProperties.length > 0)
    if (!redacted) return frame.toString('base64')
    const copy = { ...packet } as Packet & { password?: Buffer, username?: string, properties?: Record<string, unknown> }
    delete copy.password
    // A token sent as the user name (auth's jwt.from: username) is a secret like a password.
    if (looksLikeJwt(copy.username)) copy.username = '[redacted]'
    if (line.properties !== undefined) copy.properties = { ...line.properties }
    if (copy.properties?.authenticationData !== undefined) copy.properties.authenticationData = Buffer.from('[redacted]')
    try {
      return Codec.shared(this.conn.protocolVersion).encode(copy).toString('base64')
    } catch {
      return undefined
    }
  }
}
