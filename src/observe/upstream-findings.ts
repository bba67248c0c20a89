// What `doctor` says of a pool of brokers (issue 21): a broker down (and, when all are, that
// every client is refused), a broker that keeps going down and up, and clients piled on one
// broker while others are up (a balance that does not spread: one client ID prefix, weights).

import type { Finding } from '../views.js'
import type { PoolView } from '../upstream/pool.js'

/** Up/down changes in ten minutes from which a broker counts as flapping. */
export const FLAPPING_CHANGES = 4
/** Connections below which a skew says nothing. */
const SKEW_MIN_CONNECTIONS = 20
/** One broker's share of the connections that counts as "all on one broker". */
const SKEW_SHARE = 0.8

export function poolFindings (pool: PoolView): Finding[] {
  const findings: Finding[] = []
  const down = pool.brokers.filter((b) => b.state === 'down')
  const line = (b: PoolView['brokers'][number]): string => `${b.url}: ${b.state} since ${b.since}${b.lastError === undefined ? '' : `, last error: ${b.lastError}`} (${b.connections} connections, down ${b.downs} times)`
  if (down.length === pool.brokers.length) {
    findings.push({
      id: 'upstream-down', severity: 'error',
      summary: `all ${pool.brokers.length} brokers are down: every CONNECT is refused with 3 / 0x88 (server unavailable)`,
      evidence: down.map(line),
      fix: 'start the brokers, or fix what the health checks report (a firewall, TLS, a broker that accepts TCP but never answers CONNECT); the proxy takes them back after upstream.healthCheck.recoveries passed checks'
    })
  } else if (down.length > 0) {
    findings.push({
      id: 'upstream-broker-down', severity: 'warning',
      summary: `${down.length} of ${pool.brokers.length} brokers down: their clients moved to the others (failover ${pool.failover})`,
      evidence: down.map(line),
      fix: 'start the broker or fix what its last error says; it takes clients again after upstream.healthCheck.recoveries passed checks, and with balance client-id its clients return to it on their next connect'
    })
  }
  for (const b of pool.brokers) {
    if (b.recentChanges < FLAPPING_CHANGES) continue
    findings.push({
      id: 'upstream-broker-flapping', severity: 'warning',
      summary: `broker ${b.url} went down and up ${b.recentChanges} times in ten minutes: its clients keep being moved`,
      evidence: [line(b), `health checks: every ${pool.healthCheck.intervalMs} ms, timeout ${pool.healthCheck.timeoutMs} ms, down after ${pool.healthCheck.failures} failures, up after ${pool.healthCheck.recoveries} passes`],
      fix: 'look at the broker\'s load and logs at those times; if it is only slow, raise upstream.healthCheck.timeoutMs or failures; if it is failing, take it out of upstream.brokers until it is fixed'
    })
  }
  const up = pool.brokers.filter((b) => b.state === 'up')
  const total = pool.brokers.reduce((n, b) => n + b.connections, 0)
  const top = [...up].sort((a, b) => b.connections - a.connections)[0]
  if (up.length >= 2 && top !== undefined && total >= SKEW_MIN_CONNECTIONS && top.connections / total >= SKEW_SHARE) {
    findings.push({
      id: 'upstream-skewed', severity: 'warning',
      summary: `${Math.round(100 * top.connections / total)} % of the connections are on ${top.url}, though ${up.length} brokers are up`,
      evidence: pool.brokers.map((b) => `${b.url}: ${b.connections} connections, weight ${b.weight}, ${b.state}`),
      fix: pool.balance === 'first'
        ? 'balance first sends every client to the first broker that is up, by design; use client-id or least-connections to spread them'
        : 'with balance client-id, clients return to their own broker only when they reconnect: after a broker came back, its share fills as clients reconnect (or drain the busy broker); check the weights'
    })
  }
  return findings
}
