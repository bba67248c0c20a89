// Several upstream brokers in tests (issue 21): fast health checks, the pool behind an
// in-process proxy, and client IDs chosen by the pool's own rendezvous hash, so a test knows
// which broker a client lands on and which comes next. Shared by the upstream-* tests.

import { rendezvousOrder } from '../../src/upstream/balance.js'
import { BrokerPool } from '../../src/upstream/pool.js'
import type { TestProxy } from './proxy.js'

/** Fast health checks, so a test waits a second, not ten. */
export const FAST = { intervalMs: 300, timeoutMs: 200, failures: 2, recoveries: 2 }
/** Slack on top of what the thresholds allow, for a loaded two-core machine. */
export const SLACK_MS = 1500
export const MARK_DOWN_MS = FAST.failures * FAST.intervalMs + FAST.timeoutMs + SLACK_MS

export const urlOf = (port: number): string => `mqtt://127.0.0.1:${port}`

/** Broker indices (of brokers on 127.0.0.1 at `ports`) in the client's order of preference. */
export const hashOrder = (ports: readonly number[], clientId: string): number[] =>
  rendezvousOrder(ports.map((port) => ({ key: `127.0.0.1:${port}`, weight: 1 })), clientId)

/** `count` client IDs (`prefix-N`) whose first broker is `ports[index]`. */
export function idsPreferring (ports: readonly number[], index: number, count: number, prefix: string): string[] {
  const ids: string[] = []
  for (let n = 0; ids.length < count; n++) if (hashOrder(ports, `${prefix}-${n}`)[0] === index) ids.push(`${prefix}-${n}`)
  return ids
}

/** The proxy's pool of brokers (a test that configured one). */
export function poolOf (proxy: TestProxy): BrokerPool {
  const upstream = proxy.server.upstream
  if (!(upstream instanceof BrokerPool)) throw new Error(`expected a pool of brokers, got ${upstream.description}`)
  return upstream
}
