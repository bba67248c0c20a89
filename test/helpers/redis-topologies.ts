import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ServerHandle, pollUntil, spawnLogged, terminate } from './processes.js'
import type { LoggedChild, ServerSpec } from './processes.js'
import { HOST, REDIS_SERVER, infoField, pairs, redisCall, roleOf, servesAs } from './redis-admin.js'
import type { Endpoint, Failover, Killed } from './redis-admin.js'

/**
 * Real Redis topologies for failover tests, on loopback: a Cluster (N primaries, each with
 * replicas, formed by `redis-cli --cluster create`) and a Sentinel set (one primary, replicas,
 * sentinels). Every process is a child killed by PID; every node has its own temp dir, removed
 * by stop(). Timeouts are short so a start takes a few seconds and a failover well under 10 s.
 */

const REDIS_CLI = process.env['REDIS_CLI_BIN'] ?? 'redis-cli'
// The cluster bus listens on port + 10000 (redis.conf `cluster-port` 0 = default).
const BUS_OFFSET = 10_000

function canBind(port: number): Promise<boolean> {
  return new Promise(resolve => {
    const srv = createServer()
    srv.once('error', () => resolve(false))
    srv.listen({ port, host: HOST, exclusive: true }, () => srv.close(() => resolve(true)))
  })
}

/**
 * A port P with P and P + 10000 both free and both below the kernel's ephemeral range (so no
 * outgoing connection can take them meanwhile), and P < 55535 whatever that range is.
 */
async function clusterPort(): Promise<number> {
  let ephemeralLow = 32768
  try {
    ephemeralLow = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
  } catch { /* not Linux: keep the default */ }
  const hi = Math.min(55_535, ephemeralLow - BUS_OFFSET > 11_000 ? ephemeralLow - BUS_OFFSET : 55_535)
  const lo = 10_240
  for (let i = 0; i < 200; i++) {
    const port = lo + Math.floor(Math.random() * (hi - lo))
    if ((await canBind(port)) && (await canBind(port + BUS_OFFSET))) return port
  }
  throw new Error(`no free port pair P, P+${BUS_OFFSET} in ${lo}..${hi}`)
}

const commonArgs = (port: number, dir: string): string[] => [
  '--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', dir,
  '--logfile', '', '--daemonize', 'no',
  // a new replica syncs at once instead of after the default 5 s diskless delay
  '--repl-diskless-sync-delay', '0'
]

/** Start one cluster node on a port chosen by clusterPort(); retry on a lost race (bounded). */
async function startClusterNode(nodeTimeoutMs: number): Promise<ServerHandle> {
  const dir = await mkdtemp(join(tmpdir(), 'mqtt-guard-rcluster-'))
  const spec: ServerSpec = {
    name: 'redis-server (cluster)', command: REDIS_SERVER, dir, logFile: join(dir, 'redis.log'), startTimeoutMs: 10_000,
    argv: port => [...commonArgs(port, dir), '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'),
      '--cluster-node-timeout', String(nodeTimeoutMs), '--cluster-replica-validity-factor', '0'],
    probe: (port, child) => servesAs(port, child.pid),
    url: port => `redis://${HOST}:${port}`
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await clusterPort()
    const child: LoggedChild = await spawnLogged(spec.command, await spec.argv(port), { cwd: dir, logFile: spec.logFile })
    const ok = await pollUntil(`cluster node on ${port}`, spec.startTimeoutMs, async () =>
      !child.running ? false : (await spec.probe(port, child)) ? true : undefined).catch(() => false)
    if (ok) return new ServerHandle(spec, port, child)
    await terminate(child, 1000)
    if (!/in use/i.test(child.log())) throw new Error(`cluster node on ${port} failed:\n${child.log().slice(-2000)}`)
  }
  throw new Error('cluster node: no free port pair after 5 attempts')
}

export type Role = 'primary' | 'replica' | 'down'

export interface ClusterNode {
  readonly port: number
  readonly pid: number
  readonly dir: string
  readonly running: boolean
  /** As of the last ready(), roles() or waitForFailover(). */
  role: Role
}

export interface RedisClusterOptions {
  primaries?: number
  replicasPerPrimary?: number
  /** cluster-node-timeout; failure detection and failover scale with it. Default 1000. */
  nodeTimeoutMs?: number
}

export interface RedisCluster {
  /** ['127.0.0.1:P', …], every node. */
  readonly seeds: string[]
  readonly startupNodes: Endpoint[]
  readonly nodes: ClusterNode[]
  /** Every PID this topology started (to check none is left after stop()). */
  pids(): number[]
  dirs(): string[]
  /** Poll until every running node says cluster_state:ok, all slots are served and replicas are linked. */
  ready(deadlineMs?: number): Promise<void>
  /** Query ROLE on every node and update `role`. */
  roles(): Promise<ClusterNode[]>
  keySlot(key: string): Promise<number>
  /** The node that serves the slot of `key` as primary, per CLUSTER KEYSLOT + CLUSTER SHARDS. */
  primaryOf(key: string): Promise<ClusterNode>
  /** Poll until every replica has processed its primary's whole replication stream. */
  waitForSync(deadlineMs?: number): Promise<void>
  killPrimaryOf(key: string): Promise<Killed & { slot: number }>
  /** After killPrimaryOf: a replica serves the slot as primary and every surviving node is ok. */
  waitForFailover(deadlineMs?: number): Promise<Failover>
  stop(): Promise<void>
}

interface Shard { slots: number[]; nodes: Map<string, unknown>[] }

function shards(reply: unknown): Shard[] {
  if (!Array.isArray(reply)) return []
  return reply.map(s => {
    const m = pairs(s)
    const nodes = m.get('nodes')
    return { slots: (m.get('slots') as number[] | undefined) ?? [], nodes: Array.isArray(nodes) ? nodes.map(pairs) : [] }
  })
}

const hasSlot = (s: Shard, slot: number): boolean =>
  s.slots.some((start, i) => i % 2 === 0 && slot >= start && slot <= (s.slots[i + 1] ?? -1))

/** The port of the healthy primary of `slot` in one node's CLUSTER SHARDS view. */
function ownerPort(view: Shard[], slot: number): number | undefined {
  const node = view.find(s => hasSlot(s, slot))?.nodes.find(n => n.get('role') === 'master' && n.get('health') === 'online')
  return node === undefined ? undefined : Number(node.get('port'))
}

export async function startRedisCluster(opts: RedisClusterOptions = {}): Promise<RedisCluster> {
  const primaries = opts.primaries ?? 3
  const perPrimary = opts.replicasPerPrimary ?? 1
  const total = primaries * (1 + perPrimary)
  const started = await Promise.allSettled(Array.from({ length: total }, () => startClusterNode(opts.nodeTimeoutMs ?? 1000)))
  const handles = started.flatMap(r => (r.status === 'fulfilled' ? [r.value] : []))
  const pids = new Set(handles.map(h => h.pid))
  const stop = async (): Promise<void> => { await Promise.all(handles.map(h => h.stop())) }
  const failed = started.find(r => r.status === 'rejected')
  if (failed !== undefined) {
    await stop()
    throw (failed as PromiseRejectedResult).reason
  }
  const nodes: ClusterNode[] = handles.map(h => ({
    port: h.port, dir: h.spec.dir, role: 'primary',
    get pid() { return h.pid },
    get running() { return h.running }
  }))
  const seeds = nodes.map(n => `${HOST}:${n.port}`)
  const live = (): ClusterNode[] => nodes.filter(n => n.running)
  const anyLive = (): number => {
    const n = live()[0]
    if (n === undefined) throw new Error('no cluster node is running')
    return n.port
  }
  let killed: (Killed & { slot: number }) | undefined

  const clusterOk = async (port: number): Promise<boolean> => {
    const info = await redisCall(port, 'CLUSTER', 'INFO')
    return infoField(info, 'cluster_state') === 'ok' && infoField(info, 'cluster_slots_ok') === '16384'
  }
  const roles = async (): Promise<ClusterNode[]> => {
    for (const n of nodes) {
      const r = n.running ? await roleOf(n.port) : undefined
      n.role = r === undefined ? 'down' : r[0] === 'master' ? 'primary' : 'replica'
    }
    return nodes
  }
  const linked = async (n: ClusterNode): Promise<boolean> => {
    const r = await roleOf(n.port)
    return r !== undefined && (r[0] === 'master' || r[3] === 'connected')
  }
  const ready = async (deadlineMs = 15_000): Promise<void> => {
    await pollUntil('cluster_state:ok on every node, replicas linked', deadlineMs, async () => {
      for (const n of live()) if (!(await clusterOk(n.port)) || !(await linked(n))) return undefined
      return true
    })
    await roles()
  }
  const keySlot = async (key: string): Promise<number> => {
    const slot = await redisCall(anyLive(), 'CLUSTER', 'KEYSLOT', key)
    if (typeof slot !== 'number') throw new Error(`CLUSTER KEYSLOT ${key}: no answer`)
    return slot
  }
  const primaryOf = async (key: string): Promise<ClusterNode> => {
    const slot = await keySlot(key)
    const port = ownerPort(shards(await redisCall(anyLive(), 'CLUSTER', 'SHARDS')), slot)
    const node = nodes.find(n => n.port === port)
    if (node === undefined) throw new Error(`no healthy primary for slot ${slot}`)
    return node
  }
  const waitForSync = async (deadlineMs = 10_000): Promise<void> => {
    await pollUntil('replicas caught up with their primaries', deadlineMs, async () => {
      for (const n of live()) {
        const r = await roleOf(n.port)
        if (r === undefined || r[0] !== 'slave') continue
        const primary = await roleOf(Number(r[2]))
        if (r[3] !== 'connected' || primary === undefined || Number(r[4]) < Number(primary[1])) return undefined
      }
      return true
    })
  }
  const killPrimaryOf = async (key: string): Promise<Killed & { slot: number }> => {
    const node = await primaryOf(key)
    const slot = await keySlot(key)
    const handle = handles.find(h => h.port === node.port)
    if (handle === undefined) throw new Error(`node ${node.port} is not ours`)
    const pid = handle.pid
    handle.kill('SIGKILL')
    await handle.exited()
    killed = { port: node.port, pid, slot, at: Date.now() }
    return killed
  }
  const waitForFailover = async (deadlineMs = 15_000): Promise<Failover> => {
    const k = killed
    if (k === undefined) throw new Error('waitForFailover() before killPrimaryOf()')
    const port = await pollUntil(`a replica to take over slot ${k.slot}`, deadlineMs, async () => {
      let owner: number | undefined
      for (const n of live()) {
        const p = ownerPort(shards(await redisCall(n.port, 'CLUSTER', 'SHARDS')), k.slot)
        if (p === undefined || p === k.port || (owner !== undefined && p !== owner) || !(await clusterOk(n.port))) return undefined
        owner = p
      }
      return owner !== undefined && (await roleOf(owner))?.[0] === 'master' ? owner : undefined
    })
    const ms = Date.now() - k.at
    await roles()
    const node = nodes.find(n => n.port === port)
    return { port, pid: node?.pid ?? -1, ms }
  }

  try {
    await promisify(execFile)(REDIS_CLI, ['--cluster', 'create', ...seeds, '--cluster-replicas', String(perPrimary), '--cluster-yes'],
      { timeout: 30_000 })
    await ready()
  } catch (err) {
    await stop()
    throw err
  }
  return {
    seeds, nodes, startupNodes: nodes.map(n => ({ host: HOST, port: n.port })),
    pids: () => [...pids], dirs: () => nodes.map(n => n.dir), ready, roles, keySlot, primaryOf, waitForSync, killPrimaryOf, waitForFailover, stop
  }
}

export { startRedisSentinel } from './redis-sentinel.js'
export type { RedisSentinelOptions, RedisSentinelSet } from './redis-sentinel.js'
export type { Endpoint, Failover, Killed } from './redis-admin.js'
