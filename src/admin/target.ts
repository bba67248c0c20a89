// What the admin endpoint asks of one proxy process (AdminTarget), read from its GuardServer:
// the live connections, readiness, the console's views, kicks, drains and reloads.

import type { AdminTarget } from './endpoint.js'
import type { GuardServer } from '../server.js'
import { BrokerPool } from '../upstream/pool.js'

export function adminTarget (server: GuardServer): AdminTarget {
  // The brokers new connections go to: a reload may replace them.
  const pool = (): BrokerPool | undefined => server.upstream instanceof BrokerPool ? server.upstream : undefined
  return {
    metrics: server.metrics,
    readiness: async () => await server.readiness(),
    redis: async () => await server.redisStatus(),
    connections: () => server.connectionViews(),
    kick: async (id) => await server.kick(id),
    diagnostics: async () => await server.diagnose(),
    overview: async () => await server.overview(),
    client: (id) => ({ clientId: id, connections: server.connectionViews().filter((c) => c.clientId === id), history: server.diagnostics.history(id) }),
    plugins: async (req) => await server.pluginAdmin(req),
    openConnections: () => server.connections.size,
    reload: async () => await server.reloadFromSource('admin'),
    drain: (index, rate) => {
      const p = pool()
      if (p === undefined) return undefined
      return rate === undefined ? p.undrain(index) : p.drainBroker(index, rate)
    },
    upstreams: () => {
      const p = pool()
      if (p !== undefined) return { kind: 'pool', ...p.view() }
      return { kind: server.config.upstream.kind === 'embedded' ? 'embedded' : 'mqtt', description: server.upstream.description }
    }
  }
}
