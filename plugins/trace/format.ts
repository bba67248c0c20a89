// The trace line: one JSON object per packet per leg, written by the trace plugin (pino, one
// line each) and read back by `mqtt-guard trace view` and `trace export --pcap`.
//
// Legs: `client` is client ↔ proxy, `broker` is proxy ↔ broker. `dir` is the packet's direction
// through the proxy: `up` client → broker, `down` broker → client. A client PUBLISH that the
// proxy forwards gives two lines: { leg: client, dir: up } when the proxy received and judged
// it, and { leg: broker, dir: up } when it was written to the broker. An answer the proxy made
// itself (a PUBACK for a removed duplicate, a refusal) has `verdict: 'proxy'`.

export const TRACE_SCHEMA = 'mqtt-guard-trace/1'

export type TraceLeg = 'client' | 'broker'
export type TraceDir = 'up' | 'down'

/**
 * received: the proxy read it on this leg and passed it on (`forwarded`), or stopped it
 * (`dropped`, `answered` by a plugin, `refused`); sent: the proxy wrote it on this leg;
 * `proxy`: the proxy made this packet (an answer or a refusal) and wrote it on this leg.
 */
export type TraceVerdict = 'forwarded' | 'dropped' | 'answered' | 'refused' | 'sent' | 'proxy'

export interface TracePayload {
  /** Bytes of the payload before truncation. */
  bytes: number
  /** `payload: hash`: SHA-256 of the whole payload, hex. */
  sha256?: string
  /** `payload: hex`: the first maxPayloadBytes, hex. */
  hex?: string
  /** `payload: text`: the first maxPayloadBytes as UTF-8 (invalid sequences replaced). */
  text?: string
  truncated?: boolean
}

export interface TraceLine {
  /** pino's fields: level 30, time in ms since the epoch, msg 'packet'. */
  level: number
  time: number
  msg: 'packet'
  /** Microseconds since the epoch (sub-millisecond ordering and round trips). */
  us: number
  /** The trace (a run-time trace's ID, or `config` for one started from the config file). */
  trace: string
  /** The proxy instance that wrote it. */
  instance: string
  conn: string
  clientId: string
  username?: string
  address: string
  port: number
  leg: TraceLeg
  dir: TraceDir
  verdict: TraceVerdict
  /** The plugin that gave a verdict other than forwarded. */
  plugin?: string
  /** packet type name as mqtt-packet calls it: connect, connack, publish, puback, … */
  type: string
  protocolVersion: 3 | 4 | 5
  /** Bytes of the whole packet on the wire. */
  size: number
  id?: number
  qos?: number
  dup?: boolean
  retain?: boolean
  /** PUBLISH: the real topic, also when an MQTT 5 topic alias stood for it on the wire. */
  topic?: string
  topicAlias?: number
  /** SUBSCRIBE/UNSUBSCRIBE: the filters (and requested QoS). */
  filters?: Array<{ topic: string, qos?: number }>
  /** CONNACK return code (3.1.1) or reason code (MQTT 5), PUBACK/…/DISCONNECT/AUTH reason code. */
  reasonCode?: number
  /** SUBACK/UNSUBACK: one per filter. */
  reasonCodes?: number[]
  /** MQTT 5 properties; configured user-property keys and authenticationData are redacted. */
  properties?: Record<string, unknown>
  /** CONNECT on the broker leg, several brokers: the broker's URL (a later one is a re-home). */
  broker?: string
  /** CONNECT: what the client asked for (never its password). */
  connect?: { clean: boolean, keepalive: number, hasPassword: boolean, will?: { topic: string, qos: number, retain: boolean, payload?: TracePayload } }
  payload?: TracePayload
  /**
   * For an answer, the time since its request crossed the same leg, in µs: CONNECT→CONNACK,
   * PUBLISH→PUBACK/PUBREC, PUBREL→PUBCOMP, SUBSCRIBE→SUBACK, UNSUBSCRIBE→UNSUBACK,
   * PINGREQ→PINGRESP. On the broker leg it is the broker's time; on the client leg, the client's.
   */
  rttUs?: number
  /**
   * The packet's bytes, base64, only when the trace keeps payloads (`hex` or `text`), so that
   * `trace export --pcap` can rebuild the capture. CONNECT and AUTH are re-encoded without
   * password and authentication data, and redacted user properties are re-encoded too.
   */
  frame?: string
}
