// The metrics of a pool of brokers (issue 21), one series per broker (`broker` = its URL):
// state, connections, how often it went down, failed dials, and the CONNECT → CONNACK time of
// the clients it served. Read from the pool's view at scrape time, never on the packet path.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { PoolView } from '../upstream/pool.js'

const CONNACK_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** A pool of brokers, as the metrics read it (BrokerPool). */
export interface ViewedPool { view: () => PoolView }

export interface PoolMetrics {
  readonly connack: Histogram<'broker'>
}

/**
 * `pools` are the live pools, the one taking new clients first (after a reload that changed the
 * brokers, older pools still serve the clients they have): state from the first, connections
 * summed, downs and dial failures counted per pool as they grow.
 */
export function poolMetrics (registry: Registry, pools: () => readonly ViewedPool[]): PoolMetrics {
  const registers = [registry]
  const brokers = pools()[0]?.view().brokers.map((b) => b.url) ?? []
  const seen = new WeakMap<ViewedPool, Map<string, { downs: number, dialFailures: number }>>()
  const downs = new Counter({ name: 'mqtt_guard_upstream_broker_downs_total', help: 'Times a broker of the pool was marked down (each moved its clients by the failover mode)', labelNames: ['broker'], registers })
  const dialFailures = new Counter({ name: 'mqtt_guard_upstream_broker_dial_failures_total', help: 'Connections to a broker of the pool that could not be opened (the client was sent to its next broker)', labelNames: ['broker'], registers })
  for (const b of brokers) {
    downs.inc({ broker: b }, 0)
    dialFailures.inc({ broker: b }, 0)
  }
  const counted = (): void => {
    for (const pool of pools()) {
      const last = seen.get(pool) ?? new Map<string, { downs: number, dialFailures: number }>()
      seen.set(pool, last)
      for (const b of pool.view().brokers) {
        const before = last.get(b.url) ?? { downs: 0, dialFailures: 0 }
        if (b.downs > before.downs) downs.inc({ broker: b.url }, b.downs - before.downs)
        if (b.dialFailures > before.dialFailures) dialFailures.inc({ broker: b.url }, b.dialFailures - before.dialFailures)
        last.set(b.url, { downs: b.downs, dialFailures: b.dialFailures })
      }
    }
  }
  new Gauge({
    name: 'mqtt_guard_upstream_broker_up',
    help: '1 when a broker of the pool takes new clients (its health checks pass), 0 when it is marked down',
    labelNames: ['broker'],
    registers,
    collect () {
      counted()
      this.reset()
      for (const b of pools()[0]?.view().brokers ?? []) this.set({ broker: b.url }, b.state === 'up' ? 1 : 0)
    }
  })
  new Gauge({
    name: 'mqtt_guard_upstream_broker_connections',
    help: 'Client connections relayed to each broker of the pool',
    labelNames: ['broker'],
    registers,
    collect () {
      this.reset()
      const sums = new Map<string, number>()
      for (const pool of pools()) for (const b of pool.view().brokers) sums.set(b.url, (sums.get(b.url) ?? 0) + b.connections)
      for (const [url, n] of sums) this.set({ broker: url }, n)
    }
  })
  const connack = new Histogram({ name: 'mqtt_guard_upstream_connack_seconds', help: 'Time from opening the connection to a broker of the pool to its CONNACK for the client', labelNames: ['broker'], buckets: CONNACK_BUCKETS, registers })
  for (const b of brokers) connack.zero({ broker: b })
  return { connack }
}
