// The proxy's one shared Redis client (the plugins' state, the kick and trace channels, whose
// subscribers are its duplicates) together with its watch (what /healthz, /readyz, /metrics and
// doctor say of Redis). Opened once at start; errors are logged and counted, never thrown: the
// client reconnects by itself and each plugin's redisFailure policy decides meanwhile.

import type { Logger } from 'pino'
import type { RedisSpec } from '../config/config.js'
import { describeRedis } from '../config/redis.js'
import { createRedisClient, type RedisClient } from './client.js'
import { explainRedisError } from './explain.js'
import { RedisWatch } from './watch.js'

export interface SharedRedis {
  readonly client: RedisClient
  readonly watch: RedisWatch
}

/** `countError` is called once with 0 (so a rate sees the first error) and then per error. */
export function openSharedRedis (spec: RedisSpec, log: Logger, countError: (n?: number) => void): SharedRedis {
  const watch = new RedisWatch(spec.topology, (detail) => { log.warn({ topology: spec.topology, ...detail }, 'redis failover seen: another primary serves the proxy') })
  const client = createRedisClient(spec, 'shared', { onReadOnly: () => { watch.readOnlySeen() } })
  watch.attach(client)
  log.info({ topology: spec.topology, redis: describeRedis(spec) }, 'redis configured')
  countError(0)
  client.on('error', (err: NodeJS.ErrnoException) => {
    countError()
    const text = explainRedisError(err, spec.topology)
    watch.errorSeen(text)
    log.warn(text, 'redis error')
  })
  return { client, watch }
}
