// What the admin endpoint asks of one proxy process (AdminTarget), read from its GuardServer:
// the live connections, readiness, the console's views, kicks, drains and reloads.

import type { AdminTarget, UpstreamsView } from './endpoint.js'
import type { GuardMetrics } from '../observe/metrics.js'
import type { Diagnostics } from '../observe/diagnostics.js'
import type { RedisStatus } from '../redis/watch.js'
import type { AdminRequest, AdminResponse } from '../plugin/api.js'
import type { ConnectionView, Finding, Overview } from '../views.js'
import type { BrokerView } from '../upstream/pool.js'
import type { ReloadReport } from '../reload/plan.js'

/** What one proxy process (GuardServer) offers the admin endpoint. */
export interface ServedProxy {
  readonly metrics: GuardMetrics
  readonly diagnostics: Diagnostics
  readonly connections: { readonly size: number }
  readiness: () => Promise<{ ready: boolean, checks: Record<string, boolean | string>, redis?: RedisStatus }>
  redisStatus: () => Promise<RedisStatus | undefined>
  connectionViews: () => ConnectionView[]
  kick: (clientId: string) => Promise<{ closedHere: number, announced: boolean }>
  diagnose: () => Promise<{ instance: string, at: string, findings: Finding[] }>
  overview: () => Promise<Overview>
  pluginAdmin: (req: AdminRequest) => Promise<AdminResponse | undefined>
  reloadFromSource: (source: string) => Promise<ReloadReport>
  drain: (index: number, rate: number | undefined) => BrokerView | undefined
  upstreamsView: () => UpstreamsView
}

export function adminTarget (server: ServedProxy): AdminTarget {
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
    drain: (index, rate) => server.drain(index, rate),
    upstreams: () => server.upstreamsView()
  }
}
