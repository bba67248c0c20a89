// What the proxy knows of its Redis, for /healthz, /readyz, /metrics and doctor: the form it
// was given, the role of the server it writes to, whether writes are refused (READONLY), the
// failovers it has seen, on a Cluster the cluster's own state and failing slots, and while it
// is down the last error in words (credentials or TLS refused, explain.ts). Read on
// demand (a scrape, a probe) with one short deadline, and shared by calls within a second,
// so a busy scrape interval costs Redis one small command a second at most.

import type { Cluster, Redis } from 'ioredis'
import type { RedisTopology } from '../config/config.js'
import type { RedisClient } from './client.js'
import { within } from './call.js'
import { redisErrorLine, type RedisErrorText } from './explain.js'

/** The answer of a probe (ROLE, CLUSTER INFO) within this, or the probe says unknown. */
const PROBE_TIMEOUT_MS = 800
/** Probes within this reuse the last answer (/metrics reads /readyz's checks, doctor both). */
const REUSE_MS = 1000
/** A READONLY reply counts as "read-only now" for this long after it was seen. */
const READ_ONLY_MEMORY_MS = 60_000
/** CLUSTER INFO is asked of at most this many primaries at once; the first answer counts. */
const CLUSTER_PROBES = 3

export type RedisRole = 'master' | 'replica' | 'unknown'

export interface ClusterReading {
  /** cluster_state as a node sees it: `fail` while some slot has no working primary. */
  state: 'ok' | 'fail' | 'unknown'
  slotsOk: number
  /** Slots whose primary some node suspects (pfail) or the cluster agreed is down (fail). */
  slotsPfail: number
  slotsFail: number
  knownNodes: number
}

export interface RedisStatus {
  topology: RedisTopology
  /** The client is connected and Redis answered the probe. */
  up: boolean
  /** ioredis' own state: ready, connecting, reconnecting, end ... */
  client: string
  /** The server the proxy writes to; on a Cluster each slot's primary (reads go to primaries only). */
  role: RedisRole
  /** Writes are refused: ROLE says replica, or a READONLY reply came within the last minute. */
  readOnly: boolean
  readOnlySeenAt?: string
  /** Primaries that changed under the proxy: another Sentinel or DNS address, a new primary in the slot map. */
  failovers: number
  lastFailoverAt?: string
  /** Standalone and Sentinel: the primary's address in use. */
  primary?: string
  cluster?: ClusterReading
  /** While not up: the client's last error since it was last ready, explained where known. */
  lastError?: string
}

function field (info: string, name: string): string | undefined {
  return new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim()
}


export function parseClusterInfo (info: string): ClusterReading {
  const n = (name: string): number => Number(field(info, name) ?? 0)
  const state = field(info, 'cluster_state')
  return { state: state === 'ok' || state === 'fail' ? state : 'unknown', slotsOk: n('cluster_slots_ok'), slotsPfail: n('cluster_slots_pfail'), slotsFail: n('cluster_slots_fail'), knownNodes: n('cluster_known_nodes') }
}

export class RedisWatch {
  private failovers = 0
  private lastFailoverAt: number | undefined
  private readOnlyAt: number | undefined
  private primary: string | undefined
  private primaries = new Set<string>()
  private last: { at: number, status: Promise<RedisStatus> } | undefined
  private lastError: string | undefined

  constructor (readonly topology: RedisTopology, private readonly onFailover: (detail: Record<string, unknown>) => void = () => {}) {}

  /** Follows the client's connections: a ready on another address, a slot map with a new primary. */
  attach (client: RedisClient): this {
    client.on('ready', () => { this.lastError = undefined })
    if (this.topology === 'cluster') {
      const cluster = client as Cluster
      cluster.on('refresh', () => { this.slotMapRefreshed(cluster) })
    } else {
      const redis = client as Redis
      redis.on('ready', () => { this.connected(redis) })
    }
    return this
  }

  /** An 'error' of the client, as logged. */
  errorSeen (text: RedisErrorText): void {
    this.lastError = redisErrorLine(text)
  }

  /** A READONLY reply (src/redis/client.ts reconnectOnError). */
  readOnlySeen (): void {
    this.readOnlyAt = Date.now()
  }

  private counted (detail: Record<string, unknown>): void {
    this.failovers++
    this.lastFailoverAt = Date.now()
    // A write refused before the switch says nothing about the new primary.
    this.readOnlyAt = undefined
    this.onFailover(detail)
  }

  private connected (redis: Redis): void {
    const address = `${redis.stream?.remoteAddress ?? '?'}:${redis.stream?.remotePort ?? '?'}`
    if (this.primary !== undefined && this.primary !== address) this.counted({ from: this.primary, to: address })
    this.primary = address
  }

  private slotMapRefreshed (cluster: Cluster): void {
    const now = new Set(cluster.nodes('master').map((n) => `${n.options.host ?? '?'}:${n.options.port ?? '?'}`))
    const added = [...now].filter((k) => !this.primaries.has(k))
    if (this.primaries.size > 0 && added.length > 0) this.counted({ primaries: [...now], new: added })
    this.primaries = now
  }

  /** The status, probed at most once a second (concurrent callers share one probe). */
  async status (client: RedisClient): Promise<RedisStatus> {
    const now = Date.now()
    if (this.last !== undefined && now - this.last.at < REUSE_MS) return await this.last.status
    const status = this.probe(client)
    this.last = { at: now, status }
    return await status
  }

  private async probe (client: RedisClient): Promise<RedisStatus> {
    const ready = client.status === 'ready'
    const base = {
      topology: this.topology,
      client: client.status,
      failovers: this.failovers,
      ...(this.lastFailoverAt === undefined ? {} : { lastFailoverAt: new Date(this.lastFailoverAt).toISOString() }),
      ...(this.readOnlyAt === undefined ? {} : { readOnlySeenAt: new Date(this.readOnlyAt).toISOString() })
    }
    const readOnlyReply = this.readOnlyAt !== undefined && Date.now() - this.readOnlyAt < READ_ONLY_MEMORY_MS
    const whyDown = (up: boolean): { lastError?: string } => up || this.lastError === undefined ? {} : { lastError: this.lastError }
    if (this.topology === 'cluster') {
      const cluster = ready ? await this.clusterInfo(client as Cluster) : undefined
      const up = cluster !== undefined && cluster.state === 'ok'
      return { ...base, up, role: 'master', readOnly: readOnlyReply, cluster: cluster ?? { state: 'unknown', slotsOk: 0, slotsPfail: 0, slotsFail: 0, knownNodes: 0 }, ...whyDown(up) }
    }
    const reply = ready ? await within(PROBE_TIMEOUT_MS, (client as Redis).role()) : undefined
    const role: RedisRole = !Array.isArray(reply) ? 'unknown' : reply[0] === 'master' ? 'master' : 'replica'
    return { ...base, up: role !== 'unknown', role, readOnly: role === 'replica' || readOnlyReply, ...(this.primary === undefined ? {} : { primary: this.primary }), ...whyDown(role !== 'unknown') }
  }

  /** CLUSTER INFO of the first of a few primaries to answer: a dead one must not hold the probe up. */
  private async clusterInfo (cluster: Cluster): Promise<ClusterReading | undefined> {
    const asked = cluster.nodes('master').slice(0, CLUSTER_PROBES).map(async (node) => {
      const info = await node.cluster('INFO') as unknown
      if (typeof info !== 'string') throw new Error('no CLUSTER INFO')
      return parseClusterInfo(info)
    })
    if (asked.length === 0) return undefined
    return await within(PROBE_TIMEOUT_MS, Promise.any(asked))
  }
}
