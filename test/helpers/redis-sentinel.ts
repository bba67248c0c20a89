import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pollUntil, startServer } from './processes.js'
import type { ServerHandle } from './processes.js'
import { HOST, REDIS_SERVER, pairs, redisCall, roleOf, servesAs } from './redis-admin.js'
import type { Endpoint, Failover, Killed, RedisTarget } from './redis-admin.js'
import { startRedis, tlsTarget } from './redis.js'
import type { Redis as RedisServer, RedisTlsFiles } from './redis.js'

/**
 * A Sentinel set on loopback: one primary, replicas (`--replicaof`), and sentinels
 * (`redis-server sentinel.conf --sentinel`) monitoring it under one master name. Imported
 * through redis-topologies.ts. Optionally the Sentinels have a password of their own, and
 * every process serves TLS only; the helper's own probes then AUTH and speak TLS.
 */

export interface RedisSentinelOptions {
  replicas?: number
  sentinels?: number
  /** Master name the sentinels monitor. Default 'guard-primary'. */
  name?: string
  /** down-after-milliseconds: how long a silent primary takes to be subjectively down. Default 1000. */
  downAfterMs?: number
  /** failover-timeout; a failed attempt is retried after twice this. Default 2000. */
  failoverTimeoutMs?: number
  /**
   * The Sentinels' requirepass (and their sentinel-pass, so they can talk to each other); the
   * data nodes stay without a password. Default none.
   */
  sentinelPassword?: string
  /** Every data node and Sentinel on TLS only, replication and Sentinel links too; no client certificates asked. */
  tls?: Omit<RedisTlsFiles, 'authClients' | 'client'>
}

type Settings = Required<Omit<RedisSentinelOptions, 'sentinelPassword' | 'tls'>> & Pick<RedisSentinelOptions, 'sentinelPassword' | 'tls'>

export interface RedisSentinelSet {
  /** For ioredis: `new Redis({ sentinels, name })`. */
  readonly sentinels: Endpoint[]
  readonly name: string
  /** The current primary (changes after waitForFailover()). */
  readonly primary: { port: number; pid: number }
  /** Every PID this set started (to check none is left after stop()). */
  pids(): number[]
  dirs(): string[]
  /** Poll until every sentinel sees the primary, every replica and every other sentinel, and replicas are linked. */
  ready(deadlineMs?: number): Promise<void>
  /** Poll until every replica has processed the primary's whole replication stream. */
  waitForSync(deadlineMs?: number): Promise<void>
  killPrimary(): Promise<Killed>
  /** After killPrimary: every sentinel names the same new master, and it answers ROLE master. */
  waitForFailover(deadlineMs?: number): Promise<Failover>
  stop(): Promise<void>
}

function sentinelConf(port: number, dir: string, name: string, primaryPort: number, o: Settings): string {
  const quorum = Math.floor(o.sentinels / 2) + 1
  const pw = o.sentinelPassword
  const tls = o.tls === undefined
    ? [`port ${port}`]
    : ['port 0', `tls-port ${port}`, 'tls-replication yes', 'tls-auth-clients no', `tls-cert-file ${o.tls.cert}`, `tls-key-file ${o.tls.key}`, `tls-ca-cert-file ${o.tls.ca}`]
  return [
    ...tls, `bind ${HOST}`, 'daemonize no', 'logfile ""', `dir ${dir}`,
    ...(pw === undefined ? [] : [`requirepass ${pw}`, `sentinel sentinel-pass ${pw}`]),
    `sentinel monitor ${name} ${HOST} ${primaryPort} ${quorum}`,
    `sentinel down-after-milliseconds ${name} ${o.downAfterMs}`,
    `sentinel failover-timeout ${name} ${o.failoverTimeoutMs}`,
    `sentinel parallel-syncs ${name} 1`, ''
  ].join('\n')
}

/** How the helper reaches a Sentinel: its password, TLS. */
function sentinelAt(port: number, o: Settings): RedisTarget {
  return { ...tlsTarget(port, o.tls), ...(o.sentinelPassword === undefined ? {} : { password: o.sentinelPassword }) }
}

async function startSentinel(name: string, primaryPort: number, o: Settings): Promise<ServerHandle> {
  const dir = await mkdtemp(join(tmpdir(), 'mqtt-guard-sentinel-'))
  const conf = join(dir, 'sentinel.conf')
  return startServer({
    name: 'redis-sentinel', command: REDIS_SERVER, dir, logFile: join(dir, 'sentinel.log'), startTimeoutMs: 10_000,
    // the sentinel rewrites its config file (discovered peers, epochs), so it must be its own
    argv: async port => {
      await writeFile(conf, sentinelConf(port, dir, name, primaryPort, o))
      return [conf, '--sentinel']
    },
    probe: (port, child) => servesAs(sentinelAt(port, o), child.pid),
    url: port => `${o.tls === undefined ? 'redis' : 'rediss'}://${HOST}:${port}`
  })
}

const DATA_ARGS = ['--repl-diskless-sync-delay', '0']

export async function startRedisSentinel(opts: RedisSentinelOptions = {}): Promise<RedisSentinelSet> {
  const o: Settings = {
    replicas: 1, sentinels: 3, name: 'guard-primary', downAfterMs: 1000, failoverTimeoutMs: 2000, ...opts
  }
  const dataAt = (port: number): RedisTarget => tlsTarget(port, o.tls)
  const data: RedisServer[] = []
  const sentinels: ServerHandle[] = []
  const pids = new Set<number>()
  const stop = async (): Promise<void> => {
    await Promise.all([...sentinels, ...data].map(s => s.stop()))
  }
  try {
    const tls = o.tls === undefined ? {} : { tls: o.tls }
    data.push(await startRedis({ extraArgs: DATA_ARGS, ...tls }))
    const first = data[0] as RedisServer
    const replicaArgs = [...DATA_ARGS, '--replicaof', HOST, String(first.port)]
    data.push(...(await Promise.all(Array.from({ length: o.replicas }, () => startRedis({ extraArgs: replicaArgs, ...tls })))))
    sentinels.push(...(await Promise.all(Array.from({ length: o.sentinels }, () => startSentinel(o.name, first.port, o)))))
  } catch (err) {
    await stop()
    throw err
  }
  for (const s of [...data, ...sentinels]) pids.add(s.pid)
  let primary = data[0] as RedisServer
  let killed: Killed | undefined

  const sentinelOk = async (port: number): Promise<boolean> => {
    const m = pairs(await redisCall(sentinelAt(port, o), 'SENTINEL', 'MASTER', o.name))
    if (m.get('flags') !== 'master' || Number(m.get('port')) !== primary.port) return false
    if (Number(m.get('num-other-sentinels')) !== o.sentinels - 1 || Number(m.get('num-slaves')) !== o.replicas) return false
    const replicas = await redisCall(sentinelAt(port, o), 'SENTINEL', 'REPLICAS', o.name)
    return Array.isArray(replicas) && replicas.map(pairs).every(r => r.get('flags') === 'slave' && r.get('master-link-status') === 'ok')
  }
  const ready = async (deadlineMs = 15_000): Promise<void> => {
    await pollUntil('every sentinel to see the primary, its replicas and the other sentinels', deadlineMs, async () => {
      for (const s of sentinels) if (!(await sentinelOk(s.port))) return undefined
      return true
    })
  }
  const waitForSync = async (deadlineMs = 10_000): Promise<void> => {
    await pollUntil('replicas caught up with the primary', deadlineMs, async () => {
      const p = await roleOf(dataAt(primary.port))
      if (p === undefined || p[0] !== 'master') return undefined
      for (const r of data.filter(d => d !== primary && d.pid !== killed?.pid)) {
        const role = await roleOf(dataAt(r.port))
        if (role === undefined || role[3] !== 'connected' || Number(role[4]) < Number(p[1])) return undefined
      }
      return true
    })
  }
  const killPrimary = async (): Promise<Killed> => {
    const pid = primary.pid
    primary.kill('SIGKILL')
    await primary.exited()
    killed = { port: primary.port, pid, at: Date.now() }
    return killed
  }
  const waitForFailover = async (deadlineMs = 15_000): Promise<Failover> => {
    const k = killed
    if (k === undefined) throw new Error('waitForFailover() before killPrimary()')
    const port = await pollUntil('the sentinels to switch to a new master', deadlineMs, async () => {
      const seen = new Set<number>()
      for (const s of sentinels) {
        const addr = await redisCall(sentinelAt(s.port, o), 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', o.name)
        if (!Array.isArray(addr)) return undefined
        seen.add(Number(addr[1]))
      }
      const [p] = seen
      if (seen.size !== 1 || p === undefined || p === k.port) return undefined
      return (await roleOf(dataAt(p)))?.[0] === 'master' ? p : undefined
    })
    const ms = Date.now() - k.at
    primary = data.find(d => d.port === port) ?? primary
    return { port, pid: primary.pid, ms }
  }

  try {
    await ready()
  } catch (err) {
    await stop()
    throw err
  }
  return {
    sentinels: sentinels.map(s => ({ host: HOST, port: s.port })),
    name: o.name,
    get primary() { return { port: primary.port, pid: primary.pid } },
    pids: () => [...pids],
    dirs: () => [...data.map(d => d.dir), ...sentinels.map(s => s.spec.dir)],
    ready, waitForSync, killPrimary, waitForFailover, stop
  }
}
