// The embedded aedes broker that the proxy fronts when no broker is configured. In memory by
// default; with `redis` set, sessions, retained messages and subscriptions live in Redis
// (aedes-persistence-redis) and messages cross instances through mqemitter-redis, so several
// proxy processes behave as one broker.

import { Aedes } from 'aedes'
import type { Logger } from 'pino'
import { createRequire } from 'node:module'
import { applyEmbeddedWorkarounds } from './embedded-workarounds.js'
import type { RedisSpec } from '../config/config.js'
import { createRedisClient, type RedisClient } from '../redis/client.js'
import { within } from '../redis/call.js'
import { explainRedisError } from '../redis/explain.js'
import { configError } from '../errors.js'

const require = createRequire(import.meta.url)

export interface EmbeddedBroker {
  readonly broker: Aedes
  close: () => Promise<void>
}

interface Emitter {
  state: { on: (event: 'error', listener: (err: Error) => void) => void }
  close: (cb: () => void) => void
  emit: (packet: unknown, done?: (err?: Error) => void) => unknown
}

interface RedisParts { persistence: unknown, mq: Emitter, connections: RedisClient[] }

/**
 * The broker's three connections, from the same factory and in the same form as the proxy's
 * own client: persistence (aedes-persistence-redis), and the message bus' subscriber and
 * publisher (mqemitter-redis). Each has an error listener: a Redis outage is logged and
 * retried, never an unhandled 'error' that ends the process.
 */
function redisParts (spec: RedisSpec, log: Logger): RedisParts {
  const persistenceFactory = require('aedes-persistence-redis') as (opts: unknown) => unknown
  const { MQEmitterRedisPrefix } = require('mqemitter-redis') as { MQEmitterRedisPrefix: new (prefix: string, opts: unknown) => Emitter }
  const prefix = `${spec.keyPrefix}aedes:`
  const cluster = spec.topology === 'cluster'
  // On a Cluster the persistence keys carry no prefix: aedes-persistence-redis finds retained
  // messages for a wildcard by SCAN on every primary, whose pattern ioredis does not prefix,
  // and reads the topic back from the key's second `:` field; with our prefix a wildcard
  // subscription would get no retained message (measured, docs/embedded-broker.md).
  const persistenceConn = createRedisClient(spec, 'broker', cluster ? {} : { keyPrefix: prefix })
  const connections = [persistenceConn, createRedisClient(spec, 'broker'), createRedisClient(spec, 'broker')]
  for (const conn of connections) {
    conn.on('error', (err: NodeJS.ErrnoException) => { log.warn(explainRedisError(err, spec.topology), 'embedded broker: redis error') })
  }
  const [, subConn, pubConn] = connections
  // Channels are not keys: the prefix stays on them in every form, so two fleets on one Redis
  // do not hear each other's messages.
  const mq = new MQEmitterRedisPrefix(prefix, { subConn, pubConn })
  mq.state.on('error', (err) => { log.warn({ err: err.message }, 'embedded broker: message bus error') })
  // `cluster: true` makes it split the multi-key commands (MSET, DEL of two keys) it would
  // otherwise send across slots, and keep retained messages one key per topic.
  const persistence = persistenceFactory(cluster ? { conn: persistenceConn, cluster: true } : { conn: persistenceConn })
  if (cluster) log.warn({ topology: 'cluster' }, 'embedded broker on a Redis Cluster: its session and retained keys carry no prefix, so run one embedded-broker fleet per Cluster')
  return { connections, persistence, mq }
}

/** Why the broker could not start, as a config error where the config is the cause (credentials, TLS). */
function startFailure (err: Error & { code?: string }, redis: RedisSpec | undefined): Error {
  if (redis === undefined) return err
  const text = explainRedisError(err, redis.topology)
  return text.detail === undefined ? err : configError('redis', `the embedded broker could not start on Redis (${text.err}): ${text.detail}`)
}

/** QUIT, or a disconnect when Redis does not answer within `ms`. */
async function quitWithin (conn: RedisClient, ms: number): Promise<void> {
  await within(ms, conn.quit())
  conn.disconnect()
}

export async function createEmbeddedBroker (redis: RedisSpec | undefined, log: Logger): Promise<EmbeddedBroker> {
  const parts = redis === undefined ? undefined : redisParts(redis, log)
  let broker: Aedes
  try {
    broker = await Aedes.createBroker(parts === undefined ? {} : { persistence: parts.persistence, mq: parts.mq })
  } catch (err) {
    // The broker's persistence could not start on Redis. The clients would retry for ever, and
    // keep the process alive without a listener: close them, and say what to change.
    for (const conn of parts?.connections ?? []) conn.disconnect()
    throw startFailure(err as Error & { code?: string }, redis)
  }
  applyEmbeddedWorkarounds(broker)
  // The broker's own reason for closing a client, at info: without it the operator sees only
  // the proxy's `broker-closed` and cannot tell a broker fault from a client's.
  broker.on('clientError', (client, err) => { log.info({ clientId: client.id, err: err.message }, 'embedded broker closed a client') })
  broker.on('connectionError', (_client, err) => { log.debug({ err: err.message }, 'embedded broker: connection error') })
  log.info({ persistence: redis === undefined ? 'memory' : 'redis', ...(redis === undefined ? {} : { topology: redis.topology }) }, 'embedded broker started')
  return {
    broker,
    close: async () => {
      // The clients that broker.close() ends announce their unsubscribes on the message bus,
      // while aedes is already closing it (QUIT): such a PUBLISH was rejected with nobody
      // listening ("Connection is closed.", an unhandled rejection at a stop). From here
      // the bus takes nothing more; no other instance needs a stopping broker's news.
      if (parts !== undefined) parts.mq.emit = (_packet, done) => { done?.() }
      await new Promise<void>((resolve) => { broker.close(() => { resolve() }) })
      if (parts !== undefined) {
        // QUIT waits for the replies still due (aedes-persistence-redis sends some commands
        // without awaiting them, e.g. on a client's close): a bare disconnect rejects them
        // with nobody listening. Bounded, for a Redis that is away.
        await Promise.all(parts.connections.map(async (conn) => { await quitWithin(conn, 1000) }))
      }
    }
  }
}
