// The Redis a suite runs on, chosen by MQTT_GUARD_TEST_REDIS: `standalone` (the default, one
// redis-server) or `cluster` (3 primaries + 3 replicas, redis-topologies.ts). A suite asks this
// module for the proxy's `redis` setting, a client for its assertions on keys, and its fault
// (Redis unreachable, then back), so one suite runs unchanged on either form; a thin entry file
// (e.g. client-id.cluster.test.ts) sets the variable and imports the suite.

import { Cluster, Redis as IORedis } from 'ioredis'
import { startRedis } from './redis.js'
import { startRedisCluster } from './redis-topologies.js'

export type Topology = 'standalone' | 'cluster'

export const TOPOLOGY_ENV = 'MQTT_GUARD_TEST_REDIS'

/** The topology asked for; anything else than the two names is an error, not a silent default. */
export function testTopology (): Topology {
  const value = process.env[TOPOLOGY_ENV] ?? 'standalone'
  if (value !== 'standalone' && value !== 'cluster') throw new Error(`${TOPOLOGY_ENV}=${value}: expected standalone or cluster`)
  return value
}

export interface RedisUnderTest {
  readonly topology: Topology
  /** The proxy config's `redis` value, with this key prefix (give each test its own). */
  config: (keyPrefix: string) => Record<string, unknown>
  /**
   * A client for the assertions: single-key commands only (a Cluster routes each by its key's
   * slot). Build keys with the plugins' exported key builders.
   */
  readonly db: IORedis | Cluster
  /**
   * Redis unreachable. Standalone: SIGKILL (its data is lost). Cluster: SIGSTOP of every node
   * (connections stay open and commands get no answer, as with a host gone; data is kept).
   */
  cut: () => Promise<void>
  /**
   * Redis back; a no-op unless cut. Standalone: a new, empty server on the same port. Cluster:
   * SIGCONT of every node, then wait until every node says cluster_state:ok (a node that sees
   * its peers silent for more than the node timeout may start a failover: the data survives it).
   */
  restore: () => Promise<void>
  /** True when restore() brings back an empty Redis (standalone); a Cluster keeps its keys. */
  readonly restoresEmpty: boolean
  stop: () => Promise<void>
}

async function standalone (): Promise<RedisUnderTest> {
  const redis = await startRedis()
  // No CLIENT SETINFO on (re)connect: ioredis sends it unawaited, and one cut short by the
  // teardown's disconnect() became an unhandled "Connection is closed." rejection.
  const db = new IORedis(redis.url, { maxRetriesPerRequest: 1, disableClientInfo: true })
  // Connection errors while a subtest has Redis cut are expected; the assertions read results.
  db.on('error', () => {})
  let down = false
  return {
    topology: 'standalone',
    config: (keyPrefix) => ({ url: redis.url, keyPrefix }),
    db,
    cut: async () => {
      down = true
      redis.kill('SIGKILL')
      await redis.exited()
    },
    restore: async () => {
      if (!down) return
      await redis.restart()
      down = false
    },
    restoresEmpty: true,
    stop: async () => {
      db.disconnect()
      await redis.stop()
    }
  }
}

async function cluster (): Promise<RedisUnderTest> {
  // A node timeout longer than any pause a subtest makes: resuming every node at once must not
  // look like a failed primary to its replica (no failover is wanted in these suites).
  const c = await startRedisCluster({ nodeTimeoutMs: 15_000 })
  // Reads from the primaries, as the proxy does: a key just written is seen at once.
  const db = new Cluster(c.startupNodes, { scaleReads: 'master', redisOptions: { maxRetriesPerRequest: 1, disableClientInfo: true } })
  db.on('error', () => {})
  let down = false
  const signal = (sig: NodeJS.Signals): void => { for (const n of c.nodes) if (n.running) process.kill(n.pid, sig) }
  return {
    topology: 'cluster',
    config: (keyPrefix) => ({ cluster: c.seeds, keyPrefix }),
    db,
    cut: async () => {
      // What was written before the fault is on the replicas too, should one take over.
      await c.waitForSync()
      down = true
      signal('SIGSTOP')
    },
    restore: async () => {
      if (!down) return
      signal('SIGCONT')
      down = false
      await c.ready(30_000)
    },
    restoresEmpty: false,
    stop: async () => {
      db.disconnect()
      // The nodes' handles send SIGCONT before SIGTERM, so a paused node stops too.
      await c.stop()
    }
  }
}

/** Starts the Redis of MQTT_GUARD_TEST_REDIS; the caller stops it (t.teardown(redis.stop)). */
export async function startRedisUnderTest (): Promise<RedisUnderTest> {
  return testTopology() === 'cluster' ? await cluster() : await standalone()
}
