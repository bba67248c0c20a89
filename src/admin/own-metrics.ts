// The admin endpoint's own metrics: what it refused and why, and how its live viewers fare.
// All read from plain counters when /metrics is scraped, with every label at 0 from the start.

import { Gauge, type Registry } from 'prom-client'
import { statsCounter } from '../observe/metrics.js'
import type { AdminSockets, RefusalLog } from './sockets.js'
import type { Viewers } from './stream.js'

/** The admin server each registry's gauges read: a reload that moves the endpoint starts another. */
const live = new WeakMap<Registry, { viewers: Viewers, sockets: AdminSockets }>()

export function adminMetrics (registry: Registry, from: { refusals: RefusalLog, viewers: Viewers, sockets: AdminSockets }): void {
  const { refusals, viewers } = from
  const registers = [registry]
  const first = !live.has(registry)
  live.set(registry, from)
  statsCounter(registry, 'mqtt_guard_admin_refusals_total',
    'Admin connections and requests refused, by reason: connections (admin.maxConnections, none idle), idle_closed (an idle or unfinished socket closed to make room), descriptors (admin.reserveDescriptors), timeout, viewers (admin.maxViewers*), cross_origin, bad_request, body_too_large',
    'reason', () => ({ ...refusals.counts }))
  statsCounter(registry, 'mqtt_guard_admin_stream_dropped_total', 'Live-stream events not sent to a viewer that fell behind by more than admin.viewerBufferBytes', 'stream', () => ({ ...viewers.counters.dropped }))
  statsCounter(registry, 'mqtt_guard_admin_viewers_closed_total', 'Live-stream viewers closed because they stayed behind (read nothing) for 30 s', 'stream', () => ({ ...viewers.counters.closed }))
  if (!first) return
  const now = (): { viewers: Viewers, sockets: AdminSockets } => live.get(registry) ?? from
  new Gauge({
    name: 'mqtt_guard_admin_viewers', help: 'Live-stream viewers open (/events, /traces/{id}/live)', labelNames: ['stream'], registers,
    collect () { for (const [stream, n] of Object.entries(now().viewers.counters.open)) this.set({ stream }, n) }
  })
  new Gauge({ name: 'mqtt_guard_admin_connections', help: 'Admin sockets open (at most admin.maxConnections)', registers, collect () { this.set(now().sockets.open) } })
}
