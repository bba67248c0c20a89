// A pool of brokers as the server starts it: its state changes logged (a broker down is a
// warn line with the reason; back up, info), its active checks started.

import type { Logger } from 'pino'
import type { UpstreamSpec } from '../config/config.js'
import { BrokerPool } from './pool.js'

type PoolSpec = Extract<UpstreamSpec, { kind: 'pool' }>

export function brokerPool (spec: PoolSpec, instanceId: string, log: Logger, onConnack?: (url: string, seconds: number) => void): BrokerPool {
  const pool = new BrokerPool({
    ...spec,
    instanceId,
    onConnack,
    onChange: (broker, from, why) => {
      const fields = { broker: broker.url, index: broker.index, from, to: broker.state, why, connections: broker.connections, failover: spec.failover }
      if (broker.state === 'down') log.warn(fields, 'upstream broker down: new clients go to the other brokers')
      else log.info(fields, 'upstream broker up again')
    }
  })
  log.info({ brokers: spec.brokers.map((b) => b.url), balance: spec.balance, failover: spec.failover, healthCheck: spec.healthCheck }, 'upstream: several brokers')
  pool.start()
  return pool
}
