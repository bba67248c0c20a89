// The one place a Redis client is made: the shared client (plugins, the admin kick channel,
// their subscribers through duplicate()) and the embedded broker's connections. ioredis does
// the topology: a URL, `Redis` with `sentinels`, or `Redis.Cluster`; nothing here discovers
// nodes or decides a failover. What is chosen here is how each client behaves while one
// happens (docs/notes/issue-20-redis-research.md, b., has the measurements).

import { readFileSync } from 'node:fs'
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { ConnectionOptions } from 'node:tls'
import type { RedisSpec, RedisTls } from '../config/config.js'

export type RedisClient = Redis | Cluster

/**
 * `shared`: the proxy's own client, whose every call has a deadline (redis/call.ts, the
 * plugins' redisTimeoutMs) and a fail policy. `broker`: the embedded broker's connections,
 * whose writes have no deadline and must not be dropped.
 */
export type RedisUse = 'shared' | 'broker'

export interface ClientOptions {
  /** ioredis' keyPrefix: the embedded broker's persistence only, and never on a Cluster. */
  keyPrefix?: string
  /** Told of every READONLY reply: a replica answered a write. */
  onReadOnly?: () => void
}

/** A password file holds the password, perhaps with a final newline (`echo pw > file`). */
function secret (password: string | undefined, file: string | undefined): string | undefined {
  if (file === undefined) return password
  return readFileSync(file, 'utf8').replace(/\r?\n$/, '')
}

function tlsOptions (tls: RedisTls | undefined): ConnectionOptions | undefined {
  if (tls === undefined) return undefined
  const read = (file: string | undefined): Buffer | undefined => file === undefined ? undefined : readFileSync(file)
  return { ca: read(tls.ca), cert: read(tls.cert), key: read(tls.key), rejectUnauthorized: tls.rejectUnauthorized, servername: tls.servername }
}

const isReadOnly = (err: Error): boolean => err.message.startsWith('READONLY')

/** What every connection of every form gets: credentials, TLS, how a READONLY reply is met. */
function nodeOptions (spec: RedisSpec, use: RedisUse, options: ClientOptions): RedisOptions {
  const tls = tlsOptions(spec.tls)
  return {
    ...(spec.username === undefined ? {} : { username: spec.username }),
    ...(spec.passwordFile === undefined && spec.password === undefined ? {} : { password: secret(spec.password, spec.passwordFile) }),
    // `tls` given means TLS, whatever the URL's scheme: ioredis connects with TLS whenever the
    // option is set, and an operator who wrote a CA expects it used. rediss:// without `tls`
    // is TLS with the system's CAs (ioredis' `tls: true`).
    ...(tls === undefined ? {} : { tls }),
    // Commands given before the first connect wait for it, so the proxy starts while Redis is
    // away. The shared client then gives up on a command after one reconnect attempt: its
    // caller has a deadline anyway (redisCall), and more retries only keep dead commands in
    // memory. The broker's writes wait for Redis as long as it takes (null): aedes has no
    // deadline of its own, and a dropped write is a lost session or retained message.
    enableOfflineQueue: true,
    maxRetriesPerRequest: use === 'shared' ? 1 : null,
    // CLIENT SETINFO may be sent on a connection already in subscriber mode (ioredis#2037),
    // which mqemitter-redis' and our subscribers are.
    disableClientInfo: true,
    // A READONLY reply means a write reached a replica: the old primary after a Sentinel switch
    // (still reachable, so no reconnect happened), or a standalone URL whose name now points
    // elsewhere (managed Redis). Reconnecting asks the Sentinels (or DNS) again; a Sentinel
    // client also resends the command (2). A standalone URL that names a replica for good
    // stays read-only, and doctor says so; the command itself fails (1).
    reconnectOnError: (err: Error): boolean | 1 | 2 => {
      if (!isReadOnly(err)) return false
      options.onReadOnly?.()
      if (spec.topology === 'cluster') return false
      return spec.topology === 'sentinel' ? 2 : 1
    }
  }
}

/** A client for the configured form. Each caller adds its own 'error' listener. */
export function createRedisClient (spec: RedisSpec, use: RedisUse, options: ClientOptions = {}): RedisClient {
  const node = nodeOptions(spec, use, options)
  const keyPrefix = options.keyPrefix === undefined ? {} : { keyPrefix: options.keyPrefix }
  switch (spec.topology) {
    case 'standalone':
      // The URL's own credentials, if any, win over username/password (ioredis merges so).
      return new Redis(spec.url, { ...node, ...keyPrefix })
    case 'sentinel':
      return new Redis({
        ...node,
        ...keyPrefix,
        sentinels: spec.sentinels.map((s) => ({ host: s.host, port: s.port })),
        name: spec.name,
        role: 'master',
        // Sentinels announce +switch-master; without listening, a primary demoted while still
        // reachable (SENTINEL FAILOVER, a partition that heals) keeps our connection and
        // answers every write with READONLY until something breaks the connection.
        failoverDetector: true,
        // The Sentinels' own requirepass or ACL user; the data nodes keep username/password.
        ...(spec.sentinelUsername === undefined ? {} : { sentinelUsername: spec.sentinelUsername }),
        ...(spec.sentinelPassword === undefined && spec.sentinelPasswordFile === undefined ? {} : { sentinelPassword: secret(spec.sentinelPassword, spec.sentinelPasswordFile) }),
        // TLS to the Sentinels too when TLS is configured: they carry the same credentials'
        // network and the primary's address.
        ...(node.tls === undefined ? {} : { enableTLSForSentinelMode: true, sentinelTLS: node.tls })
      })
    case 'cluster': {
      if (options.keyPrefix !== undefined) throw new Error('no ioredis keyPrefix on a Cluster client: SCAN patterns would not carry it')
      const { enableOfflineQueue: _, ...redisOptions } = node
      const cluster: ClusterOptions = {
        redisOptions,
        // Reads from the primaries only: a lease or a dedupe record just written must be seen
        // by the next read, and replicas lag.
        scaleReads: 'master',
        // The offline queue holds commands until the slots are known (start, a full refresh).
        enableOfflineQueue: true,
        // Commands given in the same tick go out as one pipeline per node, grouped by the node
        // that serves each slot: the batches of lease renewals and dedupe writes cost one
        // round trip per node instead of one per key.
        enableAutoPipelining: true,
        // A command on a slot whose primary just died is retried every retryDelayOnFailover
        // until maxRedirections: the budget should outlast a failover (cluster-node-timeout
        // plus ~1-2 s). The shared client's callers give up at their deadline (1 s by
        // default), so 200 ms x 16 (3.2 s) only bounds what stays queued; the broker's
        // writes have no deadline and get 500 ms x 64 (32 s), past Redis' default node
        // timeout of 15 s.
        retryDelayOnFailover: use === 'shared' ? 200 : 500,
        maxRedirections: use === 'shared' ? 16 : 64,
        // ioredis refreshes its slot map only when a command meets MOVED or a dead node. The
        // shared client may be idle (no plugin that uses Redis), yet /metrics and doctor
        // should see a new primary; and the embedded broker finds retained messages for a
        // wildcard by SCAN on every primary it knows, so a promoted replica it has not met
        // yet would be skipped. One CLUSTER SLOTS every 5 s keeps the map current for both.
        slotsRefreshInterval: 5000
      }
      return new Cluster(spec.nodes.map((n) => ({ host: n.host, port: n.port })), cluster)
    }
  }
}

/**
 * A second connection like `client` (same form, options and nodes), for a subscriber: a
 * subscribed connection can send nothing else. On a Cluster it is a Cluster of its own, whose
 * subscriber moves to another node when its node leaves and subscribes again.
 */
export function duplicateClient (client: RedisClient): RedisClient {
  return client.duplicate()
}
