// The embedded aedes broker that the proxy fronts when no broker is configured. In memory by
// default; with `redis` set, sessions, retained messages and subscriptions live in Redis
// (aedes-persistence-redis) and messages cross instances through mqemitter-redis, so several
// proxy processes behave as one broker.

import { Aedes } from 'aedes'
import { Redis, type RedisOptions } from 'ioredis'
import type { Logger } from 'pino'
import { createRequire } from 'node:module'
import { applyEmbeddedWorkarounds } from './embedded-workarounds.js'

const require = createRequire(import.meta.url)

export interface EmbeddedBroker {
  readonly broker: Aedes
  close: () => Promise<void>
}

interface Emitter {
  state: { on: (event: 'error', listener: (err: Error) => void) => void }
  close: (cb: () => void) => void
}

interface RedisParts { persistence: unknown, mq: Emitter, connections: Redis[] }

function redisParts (url: string, keyPrefix: string, log: Logger): RedisParts {
  const persistenceFactory = require('aedes-persistence-redis') as (opts: unknown) => unknown
  const { MQEmitterRedisPrefix } = require('mqemitter-redis') as { MQEmitterRedisPrefix: new (prefix: string, opts: unknown) => Emitter }
  // Our own connections, so that each has an error listener (a Redis outage is logged and
  // retried, never an unhandled 'error' that ends the process), and without CLIENT SETINFO,
  // which ioredis may send on a connection already in subscriber mode (ioredis#2037).
  const options: RedisOptions = { maxRetriesPerRequest: null, disableClientInfo: true }
  const connections = [
    new Redis(url, { ...options, keyPrefix: `${keyPrefix}aedes:` }),
    new Redis(url, options),
    new Redis(url, options)
  ]
  for (const conn of connections) {
    conn.on('error', (err: NodeJS.ErrnoException) => { log.warn({ err: err.code ?? err.message }, 'embedded broker: redis error') })
  }
  const [persistenceConn, subConn, pubConn] = connections as [Redis, Redis, Redis]
  const mq = new MQEmitterRedisPrefix(`${keyPrefix}aedes:`, { subConn, pubConn })
  mq.state.on('error', (err) => { log.warn({ err: err.message }, 'embedded broker: message bus error') })
  return { connections, persistence: persistenceFactory({ conn: persistenceConn }), mq }
}

export async function createEmbeddedBroker (redis: { url: string, keyPrefix: string } | undefined, log: Logger): Promise<EmbeddedBroker> {
  const parts = redis === undefined ? undefined : redisParts(redis.url, redis.keyPrefix, log)
  const broker = await Aedes.createBroker(parts === undefined ? {} : { persistence: parts.persistence, mq: parts.mq })
  applyEmbeddedWorkarounds(broker)
  // The broker's own reason for closing a client, at info: without it the operator sees only
  // the proxy's `broker-closed` and cannot tell a broker fault from a client's.
  broker.on('clientError', (client, err) => { log.info({ clientId: client.id, err: err.message }, 'embedded broker closed a client') })
  broker.on('connectionError', (_client, err) => { log.debug({ err: err.message }, 'embedded broker: connection error') })
  log.info({ persistence: redis === undefined ? 'memory' : 'redis' }, 'embedded broker started')
  return {
    broker,
    close: async () => {
      await new Promise<void>((resolve) => { broker.close(() => { resolve() }) })
      if (parts !== undefined) {
        await new Promise<void>((resolve) => { parts.mq.close(() => { resolve() }) })
        for (const conn of parts.connections) conn.disconnect()
      }
    }
  }
}
