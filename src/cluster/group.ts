// The admin endpoint of `workers: N`, served by the primary: each route asks every worker over
// IPC and merges the answers (src/cluster/merge.ts), so /metrics, /connections, the console and
// doctor show the whole process group, and a kick reaches whichever worker holds the client.

import { randomBytes } from 'node:crypto'
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client'
import type { AdminTarget, UpstreamsView } from '../admin/endpoint.js'
import type { ConnectionView, Finding, Overview, ClientEnd } from '../views.js'
import type { RedisStatus } from '../redis/watch.js'
import type { BrokerView } from '../upstream/pool.js'
import type { Registry } from 'prom-client'
import type { ReloadReport } from '../reload/plan.js'
import type { Peer } from './ipc.js'
import { mergeFindings, mergeHistory, mergeOverview, mergeReadiness } from './merge.js'

type Readiness = { ready: boolean, checks: Record<string, boolean | string>, redis?: RedisStatus }

/** A worker, as the admin endpoint asks it. */
interface Member { readonly peer: Peer }

/** What the admin endpoint needs of the primary (src/cluster/primary.ts). */
export interface Group {
  readonly instanceId: string
  readonly registry: Registry
  /** Workers taking new connections. */
  serving: () => Member[]
  /** Workers with connections: serving and retiring. */
  live: () => Member[]
  reload: (source: string) => Promise<ReloadReport>
}

/** Every live worker's answer to `method`; a worker that does not answer is left out (and logged by the caller's view). */
async function ask<T> (members: readonly Member[], method: string, ...args: unknown[]): Promise<T[]> {
  const answers = await Promise.allSettled(members.map(async (m) => await m.peer.call<T>(method, ...args)))
  return answers.filter((a): a is PromiseFulfilledResult<Awaited<T>> => a.status === 'fulfilled').map((a) => a.value as T)
}

export function groupTarget (primary: Group): AdminTarget {
  const live = (): Member[] => primary.live()
  const readiness = async (): Promise<Readiness> => {
    const answers = await ask<Readiness>(primary.serving(), 'readiness')
    const merged = mergeReadiness(answers, primary.serving().length)
    const redis = answers.find((a) => a.redis !== undefined)?.redis
    return redis === undefined ? merged : { ...merged, redis }
  }
  return {
    metrics: {
      registry: primary.registry,
      contentType: primary.registry.contentType,
      // Counters summed; gauges as each one declares (prom-client's `aggregator`: sum by default,
      // min for up/ready, first for info gauges).
      text: async () => {
        const all = await ask<Array<MetricObjectWithValues<MetricValue<string>>>>(live(), 'metrics')
        return await AggregatorRegistry.aggregate([await primary.registry.getMetricsAsJSON() as Array<MetricObjectWithValues<MetricValue<string>>>, ...all]).metrics()
      }
    },
    readiness,
    redis: async () => (await ask<RedisStatus | undefined>(primary.serving().slice(0, 1), 'redis'))[0],
    connections: async () => (await ask<ConnectionView[]>(live(), 'connections')).flat(),
    kick: async (clientId) => {
      const all = await ask<{ closedHere: number, announced: boolean }>(live(), 'kick', clientId)
      return { closedHere: all.reduce((n, a) => n + a.closedHere, 0), announced: all.some((a) => a.announced) }
    },
    overview: async () => mergeOverview(await ask<Overview>(live(), 'overview'), primary.instanceId, (await readiness()).checks),
    client: async (clientId) => {
      const all = await ask<{ connections: ConnectionView[], history: ClientEnd[] }>(live(), 'client', clientId)
      return { clientId, connections: all.flatMap((a) => a.connections), history: mergeHistory(all.map((a) => a.history)) }
    },
    diagnostics: async () => ({ instance: primary.instanceId, at: new Date().toISOString(), findings: mergeFindings(await ask<Finding[]>(live(), 'diagnose')) }),
    plugins: async (req) => {
      const query = req.query.toString()
      // Reads from the first worker; writes (a trace started or stopped) to every worker, under
      // one ID, so that a trace covers every worker's clients and one DELETE ends it everywhere.
      if (req.method === 'GET') {
        const [answer] = await ask<{ status: number, body: unknown, events: boolean } | undefined>(primary.serving().slice(0, 1), 'plugins', { ...req, query })
        if (answer === undefined) return undefined
        if (answer.events) return { status: 501, body: { error: 'live streams are served by one process: with workers >= 2, follow the trace files (trace view), or run workers: 1' } }
        return { status: answer.status, body: answer.body }
      }
      const body = req.method === 'POST' && req.path === '/traces' && typeof req.body === 'object' && req.body !== null ? { ...req.body, id: randomBytes(4).toString('hex') } : req.body
      const answers = await ask<{ status: number, body: unknown } | undefined>(live(), 'plugins', { ...req, query, body })
      const answer = answers.find((a) => a !== undefined && a.status < 300) ?? answers.find((a) => a !== undefined)
      return answer === undefined ? undefined : { status: answer.status, body: answer.body }
    },
    openConnections: () => 0,
    reload: async () => await primary.reload('admin'),
    drain: async (index, rate) => (await ask<BrokerView | undefined>(live(), 'drain', index, rate))[0],
    upstreams: async () => (await ask<UpstreamsView>(primary.serving().slice(0, 1), 'upstreams'))[0] as UpstreamsView
  }
}
