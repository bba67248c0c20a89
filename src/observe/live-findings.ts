// doctor's rules that read only the live proxy at report time (GET /diagnostics): health,
// QoS 0 subscribers, slow consumers, full queues, latency placement, certificate expiry,
// connections and descriptors against their limits. What the proxy records as it runs (how
// connections end, refusals, refused publishes) and the rules on it are in diagnostics.ts.

import { readFileSync, readdirSync } from 'node:fs'
import type { Finding } from '../views.js'
import type { RedisStatus } from '../redis/watch.js'

/** At most this many examples in a finding's evidence. */
export const EXAMPLES = 5

/** What the report reads from the live proxy. */
export interface LiveState {
  connections: Array<{ clientId: string, address: string, persistentSession: boolean, subscriptions: Array<{ filter: string, qos: number }>, stalls: number, stalledMs: number, queueFullHolds: number }>
  maxConnections: number
  checks: Record<string, boolean | string>
  /** Round trips per leg: sum of seconds and count, from the metrics. */
  roundTrips: Record<'client' | 'broker', { sum: number, count: number }>
  /** Seconds to expiry per listener certificate. */
  certificates: Array<{ listener: string, subject: string, seconds: number }>
  /** Findings of plugins (`diagnose`). */
  plugins: Finding[]
  /** With Redis: what the proxy sees of it, and where it is (no password). */
  redis?: { status: RedisStatus, where: string }
}

/** What the readiness checks say is down. */
export function health (live: LiveState): Finding[] {
  const out: Finding[] = []
  if (live.checks.upstream !== true) {
    out.push({ id: 'upstream-unhealthy', severity: 'error', summary: 'the broker is not reachable from the proxy', evidence: [`upstream check: ${String(live.checks.upstream)}`], fix: 'start the broker or fix the upstream address; until then every CONNECT is refused with 3 / 0x88' })
  }
  if (live.redis !== undefined) out.push(...redisFindings(live.redis.status, live.redis.where))
  else if (live.checks.redis === false) out.push(redisDown(['redis check: not ready'], 'start Redis or fix the redis URL'))
  return out
}

const MEANWHILE = 'meanwhile each plugin applies its fail policy (client-id admits on local knowledge or refuses with 3 / 0x88, dedupe forwards everything)'

function redisDown (evidence: string[], fix: string): Finding {
  return { id: 'redis-unhealthy', severity: 'error', summary: 'Redis is not connected', evidence, fix: `${fix}; ${MEANWHILE}` }
}

const FIX_DOWN: Record<RedisStatus['topology'], string> = {
  standalone: 'start Redis or fix redis.url (a firewall, TLS, or credentials: see the proxy\'s "redis error" log lines)',
  sentinel: 'check that the Sentinels in redis.sentinels answer and know the master named in redis.name (redis-cli -p PORT SENTINEL get-master-addr-by-name NAME), that Sentinels with requirepass get redis.sentinelPassword, and that the primary they name is reachable from the proxy',
  cluster: 'check that the seed nodes in redis.cluster answer and that CLUSTER INFO says cluster_state:ok'
}

/**
 * Redis as doctor sees it, in the order that matters: down (nothing works), read-only (every
 * write fails), Cluster slots failing (the keys of those slots fail), slots suspected.
 */
export function redisFindings (r: RedisStatus, where: string): Finding[] {
  const base = [`${r.topology}: ${where}`, `client: ${r.client}, role: ${r.role}`, `failovers seen: ${r.failovers}${r.lastFailoverAt === undefined ? '' : `, last at ${r.lastFailoverAt}`}`, ...(r.lastError === undefined ? [] : [`last error: ${r.lastError}`])]
  const c = r.cluster
  const slots = c === undefined ? [] : [`cluster_state: ${c.state}`, `slots ok ${c.slotsOk}, pfail ${c.slotsPfail}, fail ${c.slotsFail}; ${c.knownNodes} nodes known`]
  if (c !== undefined && c.state === 'fail') {
    return [{
      id: 'redis-unhealthy', severity: 'error',
      summary: `the Redis Cluster has failing slots: ${c.slotsFail + c.slotsPfail} of 16384 have no working primary`,
      evidence: [...base, ...slots],
      fix: `a primary is down and no replica took over: start it again, or give its slots a primary (a replica and CLUSTER FAILOVER, or redis-cli --cluster fix); until then Redis refuses commands (CLUSTERDOWN) and ${MEANWHILE}`
    }]
  }
  if (!r.up) return [redisDown([...base, ...slots], FIX_DOWN[r.topology])]
  if (r.readOnly) {
    const why = r.role === 'replica' ? 'ROLE says replica' : `a READONLY reply at ${r.readOnlySeenAt ?? '?'}`
    const fix = r.topology === 'standalone'
      ? 'point redis.url at the primary, or give the Sentinel form (redis: { sentinels, name }) so the proxy follows the primary through failovers'
      : 'the proxy reconnects on READONLY and asks for the primary again; if this stays, check that the Sentinels agree on the primary (SENTINEL masters) and that the old primary was demoted'
    return [{ id: 'redis-unhealthy', severity: 'error', summary: 'Redis refuses the proxy\'s writes: it is connected to a replica', evidence: [...base, why], fix: `${fix}; every write fails until then, and ${MEANWHILE}` }]
  }
  if (c !== undefined && c.slotsPfail + c.slotsFail > 0) {
    return [{ id: 'redis-unhealthy', severity: 'warning', summary: `the Redis Cluster is ok but ${c.slotsPfail + c.slotsFail} slots have a primary some node cannot reach`, evidence: [...base, ...slots], fix: 'look at the nodes that do not answer (CLUSTER NODES: fail? flags); if one is down the cluster fails over after cluster-node-timeout' }]
  }
  return []
}

export function qos0 (live: LiveState): Finding[] {
  const clean = live.connections.filter((c) => !c.persistentSession && c.subscriptions.some((s) => s.qos === 0))
  if (clean.length === 0) return []
  return [{
    id: 'qos0-clean-subscribers', severity: 'info',
    summary: `${clean.length} client${clean.length === 1 ? '' : 's'} subscribe at QoS 0 with a clean session: what is published while they are offline is lost`,
    evidence: clean.slice(0, EXAMPLES).map((c) => `${c.clientId}: ${c.subscriptions.filter((s) => s.qos === 0).map((s) => s.filter).join(', ')}`),
    fix: 'for messages that must arrive, subscribe at QoS 1 in a persistent session (clean session off, or an MQTT 5 session expiry interval)'
  }]
}

export function slow (live: LiveState): Finding[] {
  const stalled = live.connections.filter((c) => c.stalls > 0).sort((a, b) => b.stalledMs - a.stalledMs)
  if (stalled.length === 0) return []
  return [{
    id: 'slow-consumers', severity: 'warning',
    summary: `${stalled.length} client${stalled.length === 1 ? '' : 's'} read more slowly than the broker sends: the proxy held the broker back for them`,
    evidence: stalled.slice(0, EXAMPLES).map((c) => `${c.clientId} (${c.address}): ${c.stalls} stall${c.stalls === 1 ? '' : 's'}, ${Math.round(c.stalledMs)} ms in all`),
    fix: 'a slow consumer makes the broker queue for it (and drop QoS 0): give it more bandwidth or CPU, subscribe it to less, or share the load with a shared subscription ($share/group/...)'
  }]
}

export function queues (live: LiveState): Finding[] {
  const full = live.connections.filter((c) => c.queueFullHolds > 0).sort((a, b) => b.queueFullHolds - a.queueFullHolds)
  if (full.length === 0) return []
  return [{
    id: 'queue-full', severity: 'warning',
    summary: `the proxy's queue for ${full.length} connection${full.length === 1 ? '' : 's'} reached limits.maxQueuedPackets: plugins worked more slowly than packets came`,
    evidence: full.slice(0, EXAMPLES).map((c) => `${c.clientId} (${c.address}): held ${c.queueFullHolds} time${c.queueFullHolds === 1 ? '' : 's'}`),
    fix: 'look at what the plugins wait for (Redis latency, a slow hook); reading from the client paused meanwhile, so nothing was lost, but its messages were delayed'
  }]
}

/** The mean of a leg's sampled round trips (seconds) in milliseconds, to 0.01; null before the first. */
export function meanMs (leg: { sum: number, count: number }): number | null {
  return leg.count === 0 ? null : Math.round(leg.sum / leg.count * 100_000) / 100
}

export function latency (live: LiveState): Finding[] {
  const { client, broker } = live.roundTrips
  if (client.count === 0 && broker.count === 0) return []
  const c = meanMs(client) ?? undefined
  const b = meanMs(broker) ?? undefined
  const over = (n: number): string => `${n} sample${n === 1 ? '' : 's'}`
  const evidence = [`broker leg (proxy → broker → proxy): ${b === undefined ? 'no sample yet' : `${b} ms mean over ${over(broker.count)}`}`, `client leg (proxy → client → proxy): ${c === undefined ? 'no sample yet' : `${c} ms mean over ${over(client.count)}`}`]
  if (c !== undefined && b !== undefined && c > 50 && c > 4 * b) {
    return [{ id: 'latency-placement', severity: 'warning', summary: `latency is on the client side: ${c} ms against ${b} ms to the broker`, evidence, fix: 'look at the clients\' network (mobile links, Wi-Fi, congested uplinks) or slow client code; the broker is not the cause' }]
  }
  if (c !== undefined && b !== undefined && b > 50 && b > 4 * c) {
    return [{ id: 'latency-placement', severity: 'warning', summary: `latency is on the broker side: ${b} ms against ${c} ms to the clients`, evidence, fix: 'look at the broker: its CPU, its disk (persistence), or the network between proxy and broker' }]
  }
  return [{ id: 'latency-placement', severity: 'info', summary: 'round trips on both legs', evidence, fix: 'nothing to do; compare these figures when clients report latency' }]
}

export function certificates (live: LiveState): Finding[] {
  return live.certificates.filter((c) => c.seconds < 30 * 86_400).map((c) => {
    const days = Math.floor(c.seconds / 86_400)
    return c.seconds <= 0
      ? { id: 'certificate-expiry', severity: 'error' as const, summary: `the certificate of ${c.listener} (${c.subject}) has expired`, evidence: [`expired ${-days} day${days === -1 ? '' : 's'} ago`], fix: 'install a renewed certificate and send SIGHUP: clients that verify refuse this one (CERT_HAS_EXPIRED)' }
      : { id: 'certificate-expiry', severity: 'warning' as const, summary: `the certificate of ${c.listener} (${c.subject}) expires in ${days} day${days === 1 ? '' : 's'}`, evidence: [`${Math.round(c.seconds)} s left`], fix: 'renew it and send SIGHUP (the listener re-reads its certificate without dropping connections)' }
  })
}

/** Soft limit of open files, and descriptors open now (Linux /proc; undefined elsewhere). */
export function descriptors (): { limit: number, open: number } | undefined {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8')
    const soft = /^Max open files\s+(\d+|unlimited)/m.exec(limits)?.[1]
    if (soft === undefined) return undefined
    return { limit: soft === 'unlimited' ? Infinity : Number(soft), open: readdirSync('/proc/self/fd').length }
  } catch {
    return undefined
  }
}

/** Connections against maxConnections, and descriptors against the process's limit (two per client). */
export function limitFindings (connections: number, maxConnections: number, fds: { limit: number, open: number } | undefined): Finding[] {
  const out: Finding[] = []
  if (maxConnections > 0 && maxConnections !== Infinity && connections >= 0.8 * maxConnections) {
    out.push({ id: 'connection-limit', severity: 'warning', summary: `${connections} connections of limits.maxConnections ${maxConnections}`, evidence: [`${Math.round(connections / maxConnections * 100)} % used; at the limit new clients get 3 / 0x89`], fix: 'raise limits.maxConnections (and the descriptor limit with it), or add proxy instances' })
  }
  if (fds !== undefined) {
    const needed = 2 * Math.min(maxConnections, 1_000_000) + 64
    const raise = `raise the open-files limit to at least ${needed} (ulimit -n, LimitNOFILE in systemd), or lower limits.maxConnections`
    if (fds.open >= 0.6 * fds.limit) {
      out.push({
        id: 'fd-limit', severity: fds.open >= 0.9 * fds.limit ? 'error' : 'warning',
        summary: `${fds.open} of ${fds.limit} file descriptors open`,
        evidence: ['each client costs two (client and broker side); at the limit new connections fail with EMFILE'],
        fix: fds.limit < needed ? raise : 'raise the open-files limit (ulimit -n, LimitNOFILE in systemd) before clients are refused'
      })
    } else if (fds.limit < needed) {
      out.push({ id: 'fd-limit', severity: 'info', summary: `the open-files limit ${fds.limit} holds about ${Math.floor((fds.limit - 64) / 2)} clients, fewer than limits.maxConnections ${maxConnections}`, evidence: [`${fds.open} open now; each client costs two descriptors`], fix: raise })
    }
  }
  return out
}

export function limits (live: LiveState): Finding[] {
  return limitFindings(live.connections.length, live.maxConnections, descriptors())
}
