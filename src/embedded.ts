// The embedded aedes broker that the proxy fronts when no broker is configured. In memory by
// default; with `redis` set, sessions, retained messages and subscriptions live in Redis
// (aedes-persistence-redis) and messages cross instances through mqemitter-redis, so several
// proxy processes behave as one broker.

import { Aedes } from 'aedes'
import { Redis } from 'ioredis'
import type { Logger } from 'pino'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export interface EmbeddedBroker {
  readonly broker: Aedes
  close: () => Promise<void>
}

interface RedisParts { persistence: unknown, mq: { close: (cb: () => void) => void }, conn: Redis }

function redisParts (url: string, keyPrefix: string): RedisParts {
  const persistenceFactory = require('aedes-persistence-redis') as (opts: unknown) => unknown
  const { MQEmitterRedisPrefix } = require('mqemitter-redis') as { MQEmitterRedisPrefix: new (prefix: string, opts: unknown) => RedisParts['mq'] }
  const conn = new Redis(url, { keyPrefix: `${keyPrefix}aedes:`, maxRetriesPerRequest: null })
  return {
    conn,
    persistence: persistenceFactory({ conn }),
    mq: new MQEmitterRedisPrefix(`${keyPrefix}aedes:`, { connectionString: url })
  }
}

export async function createEmbeddedBroker (redis: { url: string, keyPrefix: string } | undefined, log: Logger): Promise<EmbeddedBroker> {
  const parts = redis === undefined ? undefined : redisParts(redis.url, redis.keyPrefix)
  const broker = await Aedes.createBroker(parts === undefined ? {} : { persistence: parts.persistence, mq: parts.mq })
  broker.on('clientError', (client, err) => { log.debug({ clientId: client.id, err: err.message }, 'embedded broker: client error') })
  broker.on('connectionError', (_client, err) => { log.debug({ err: err.message }, 'embedded broker: connection error') })
  log.info({ persistence: redis === undefined ? 'memory' : 'redis' }, 'embedded broker started')
  return {
    broker,
    close: async () => {
      await new Promise<void>((resolve) => { broker.close(() => { resolve() }) })
      if (parts !== undefined) {
        await new Promise<void>((resolve) => { parts.mq.close(() => { resolve() }) })
        parts.conn.disconnect()
      }
    }
  }
}
