// Prometheus metrics (prom-client), one Registry per proxy process. The packet path only bumps
// plain numbers in typed arrays; prom-client's objects are filled from them when /metrics is
// scraped, so a metric costs nothing per packet beyond an array increment.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { FRAME_TYPE } from './codec.js'

const TYPE_NAMES: string[] = []
for (const [name, type] of Object.entries(FRAME_TYPE)) TYPE_NAMES[type] = name

export type Leg = 'client' | 'broker'

/** Round trips are seconds: a LAN leg is well under a millisecond, a bad one several seconds. */
const RTT_BUCKETS = [0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

export class GuardMetrics {
  readonly registry = new Registry()
  /** [direction 0 in / 1 out][type 0..15], packets and bytes. */
  private readonly packets = new Float64Array(32)
  private readonly bytes = new Float64Array(32)
  /** CONNECTs per listener, counted in a plain map (a labelled inc() per CONNECT costs more). */
  readonly connects = new Map<string, number>()
  readonly refusals: Counter<'code' | 'reason_code'>
  readonly verdicts: Counter<'plugin' | 'action'>
  readonly redisErrors: Counter<'source'>
  readonly roundTrip: Histogram<'leg'>
  readonly dial: Histogram
  readonly certExpiry: Gauge<'listener' | 'subject'>
  readonly throttled: Counter

  constructor (connectionsByListener: () => Map<string, number>) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry, prefix: 'mqtt_guard_process_' })
    const { packets, bytes } = this
    const fill = (counter: Counter<'type' | 'direction'>, values: Float64Array): void => {
      counter.reset()
      for (let i = 0; i < 32; i++) {
        const value = values[i] as number
        if (value > 0) counter.inc({ direction: i < 16 ? 'in' : 'out', type: TYPE_NAMES[i % 16] ?? 'reserved' }, value)
      }
    }
    new Counter({
      name: 'mqtt_guard_packets_total', help: 'MQTT packets by type and direction (in: client → broker)', labelNames: ['type', 'direction'], registers,
      collect () { fill(this, packets) }
    })
    new Counter({
      name: 'mqtt_guard_bytes_total', help: 'Bytes of MQTT packets by type and direction', labelNames: ['type', 'direction'], registers,
      collect () { fill(this, bytes) }
    })
    new Gauge({
      name: 'mqtt_guard_connections', help: 'Open client connections by listener', labelNames: ['listener'], registers,
      collect () {
        this.reset()
        for (const [listener, n] of connectionsByListener()) this.set({ listener }, n)
      }
    })
    const connects = this.connects
    new Counter({
      name: 'mqtt_guard_connects_total', help: 'CONNECT packets received, by listener', labelNames: ['listener'], registers,
      collect () {
        this.reset()
        for (const [listener, n] of connects) this.inc({ listener }, n)
      }
    })
    this.refusals = new Counter({
      name: 'mqtt_guard_refusals_total',
      help: 'Connections refused with a CONNACK code: code is the GUARD_ERR_* code or broker, reason_code the MQTT 5 reason code or 3.1.1 return code sent',
      labelNames: ['code', 'reason_code'],
      registers
    })
    this.verdicts = new Counter({ name: 'mqtt_guard_plugin_verdicts_total', help: 'Plugin decisions other than continue, by plugin and action', labelNames: ['plugin', 'action'], registers })
    this.redisErrors = new Counter({ name: 'mqtt_guard_redis_errors_total', help: 'Redis errors, by where they happened', labelNames: ['source'], registers })
    this.roundTrip = new Histogram({
      name: 'mqtt_guard_round_trip_seconds',
      help: 'Sampled round trips: broker leg (proxy → broker → proxy: QoS 1 PUBLISH to PUBACK, PINGREQ to PINGRESP), client leg (QoS 1 delivery to PUBACK)',
      labelNames: ['leg'],
      buckets: RTT_BUCKETS,
      registers
    })
    this.dial = new Histogram({ name: 'mqtt_guard_upstream_dial_seconds', help: 'Time to open the connection to the broker', buckets: RTT_BUCKETS, registers })
    this.throttled = new Counter({ name: 'mqtt_guard_publish_throttled_total', help: 'PUBLISH packets held back by limits.maxPublishesPerSecond until their token', registers })
    this.certExpiry = new Gauge({ name: 'mqtt_guard_tls_certificate_expiry_seconds', help: 'Seconds until a listener certificate expires', labelNames: ['listener', 'subject'], registers })
  }

  /** Hot path: one frame seen in `direction` (0 in, 1 out). */
  frame (direction: 0 | 1, type: number, size: number): void {
    const i = direction * 16 + type
    this.packets[i] = (this.packets[i] as number) + 1
    this.bytes[i] = (this.bytes[i] as number) + size
  }

  /** Packets of one type seen so far in a direction (0 in, 1 out). */
  packetCount (direction: 0 | 1, type: number): number {
    return this.packets[direction * 16 + type] as number
  }

  async text (): Promise<string> {
    return await this.registry.metrics()
  }

  get contentType (): string {
    return this.registry.contentType
  }
}

/**
 * A counter a plugin fills from its own stats at scrape time: `read()` gives label value →
 * total. Registered once per registry; a second instance of the plugin adds its totals.
 */
export function statsCounter (registry: Registry, name: string, help: string, label: string, read: () => Record<string, number>): void {
  const existing = registry.getSingleMetric(name) as (Counter<string> & { sources?: Array<() => Record<string, number>> }) | undefined
  if (existing?.sources !== undefined) {
    existing.sources.push(read)
    return
  }
  const sources = [read]
  const counter = new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect () {
      this.reset()
      for (const source of sources) {
        for (const [value, n] of Object.entries(source())) if (n > 0) this.inc({ [label]: value }, n)
      }
    }
  })
  Object.assign(counter, { sources })
}
