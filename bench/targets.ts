// The processes under test, each started fresh for each round on free loopback ports, and
// stopped by PID (SIGTERM, then SIGKILL) by the ServerHandle of test/helpers/processes.ts.
// The proxy's configurations are in variants.ts.

import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { cp, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { canConnect, startServer, type ServerHandle } from '../test/helpers/processes.js'
import { startRedis } from '../test/helpers/redis.js'
import { startRedisCluster } from '../test/helpers/redis-topologies.js'
import type { Watched } from './jobs.js'
import { PROXY_VARIANTS, type ConfigContext, type ProxyVariant } from './variants.js'

/** Repository root: this file is dist/bench/targets.js. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const DIST_BENCH = fileURLToPath(new URL('./', import.meta.url))
export const MOSQUITTO = process.env['MOSQUITTO_BIN'] ?? '/usr/sbin/mosquitto'
/** Debian's haproxy, the peer of issue #22 (test/setup/system-packages.sh installs it). */
const HAPROXY = process.env['HAPROXY_BIN'] ?? '/usr/sbin/haproxy'

/**
 * Runs "$0" "$@" with the soft descriptor limit raised to the hard one: 9 900 idle clients
 * need 9 900 descriptors in the generator and the broker, and 19 800 in a proxy or relay.
 * `exec` keeps the PID, so /proc readings and kills reach the real process.
 */
export const FD_WRAP = 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"'

export type TargetKind = 'mosquitto' | 'relay' | 'haproxy' | 'proxy' | 'aedes'

export interface TargetDef {
  id: string
  label: string
  kind: TargetKind
  variant?: ProxyVariant
  /** A built checkout (bin/, dist/, node_modules) the proxy runs from instead of this one's copy. */
  root?: string
  /** Undefined when the target can run; otherwise why it is skipped. */
  unavailable?: () => string | undefined
}

/** Another build of the proxy without plugins, to set against this one in the same run. */
export interface Baseline { root: string, name: string }

export function allTargets (baseline?: Baseline): TargetDef[] {
  const plain = PROXY_VARIANTS[0] as ProxyVariant
  const label = `mqtt-guard, no plugins, baseline build ${baseline?.name ?? ''}`.trim()
  const before: TargetDef[] = baseline === undefined
    ? []
    : [{ id: 'proxy-baseline', label, kind: 'proxy', variant: { ...plain, id: 'proxy-baseline', label, goals: 'none' }, root: baseline.root }]
  return [
    { id: 'mosquitto', label: 'Mosquitto direct', kind: 'mosquitto' },
    { id: 'relay', label: 'bare TCP relay', kind: 'relay' },
    { id: 'haproxy', label: 'HAProxy, TCP, CONNECT validated', kind: 'haproxy', unavailable: () => existsSync(HAPROXY) ? undefined : `${HAPROXY} not found (Debian package haproxy)` },
    ...PROXY_VARIANTS.map((variant): TargetDef => ({ id: variant.id, label: variant.label, kind: 'proxy', variant })),
    ...before,
    { id: 'aedes', label: 'aedes alone', kind: 'aedes' }
  ]
}

export interface RunningTarget {
  def: TargetDef
  port: number
  /** `target`: the process under test; `upstream`: the Mosquitto behind a relay or proxy. */
  watch: Watched
  stop: () => Promise<void>
  /** Several brokers behind the proxy: HOST:PORT of each (the generator pairs clients by them). */
  brokers?: string[]
}

/**
 * A private copy of the proxy's build (bin/, dist/src/, dist/plugins/, package.json, and a
 * node_modules link) so that every round runs the same code even while others rebuild dist/.
 */
export interface ProxyBuild { root: string, hash: string, remove: () => Promise<void> }

function filesUnder (dir: string): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((f) => join(dir, f))
    .filter((f) => statSync(f).isFile() && !f.endsWith('.map'))
    .sort()
}

export async function snapshotProxyBuild (): Promise<ProxyBuild> {
  const root = await tempDir('build')
  const parts = ['bin', join('dist', 'src'), join('dist', 'plugins')]
  const hash = createHash('sha256')
  for (const part of parts) {
    const from = join(ROOT, part)
    if (!existsSync(from)) continue
    await cp(from, join(root, part), { recursive: true })
    for (const file of filesUnder(join(root, part))) hash.update(file.slice(root.length)).update(readFileSync(file))
  }
  await cp(join(ROOT, 'package.json'), join(root, 'package.json'))
  await symlink(join(ROOT, 'node_modules'), join(root, 'node_modules'), 'dir')
  return { root, hash: hash.digest('hex').slice(0, 12), remove: async () => { await rm(root, { recursive: true, force: true }) } }
}

export interface StartOptions {
  /** Where bin/mqtt-guard.js and dist/ are taken from (a snapshot); default the repository. */
  proxyRoot?: string
  /** Run the proxy (or the relay) under `node --cpu-prof` writing into this folder. */
  profileDir?: string
  profileName?: string
}

// Every temp dir made here is removed at exit, even one whose server was still starting when a
// signal ended the run (the handles remove theirs on stop; removing twice is harmless).
const tempDirs = new Set<string>()
process.on('exit', () => { for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true }) })

async function tempDir (name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `mqtt-guard-bench-${name}-`))
  tempDirs.add(dir)
  return dir
}

/** A private Mosquitto that neither drops nor logs per connection. */
export async function startBenchMosquitto (): Promise<ServerHandle> {
  const dir = await tempDir('mosquitto')
  const conf = join(dir, 'mosquitto.conf')
  const lines = [
    'allow_anonymous true',
    'persistence false',
    'max_connections -1',
    'max_queued_messages 1000000',
    'max_queued_bytes 0',
    'set_tcp_nodelay true',
    'connection_messages false',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type information'
  ]
  // As root, mosquitto 2 would switch to user "mosquitto", which cannot read the 0700 temp dir.
  if (process.getuid?.() === 0) lines.push('user root')
  return await startServer({
    name: 'mosquitto',
    command: 'bash',
    dir,
    logFile: join(dir, 'mosquitto.log'),
    startTimeoutMs: 15_000,
    async argv (port) {
      await writeFile(conf, [`listener ${port} 127.0.0.1`, ...lines].join('\n') + '\n')
      return ['-c', FD_WRAP, MOSQUITTO, '-c', conf]
    },
    probe: async (port, child) => /mosquitto version \S+ running/.test(child.log()) && await canConnect(port),
    url: (port) => `mqtt://127.0.0.1:${port}`
  })
}

function profileArgs (options: StartOptions): string[] {
  if (options.profileDir === undefined) return []
  return ['--cpu-prof', '--cpu-prof-dir', options.profileDir, '--cpu-prof-interval', '250', ...(options.profileName === undefined ? [] : ['--cpu-prof-name', options.profileName])]
}

/** A Node process of ours that prints "listening" once bound (relay, aedes). */
/**
 * The peer of issue #22: HAProxy as a user would set it up to "validate and forward" MQTT, TCP
 * mode, one thread, the CONNECT checked with `mqtt_is_valid` before the broker is dialled (as
 * mqtt-guard reads it first), then relayed untouched. Debian's `haproxy` (test/setup/
 * system-packages.sh); the target is skipped when it is missing.
 */
async function startHaproxy (upstreamPort: number): Promise<ServerHandle> {
  const dir = await tempDir('haproxy')
  const conf = join(dir, 'haproxy.cfg')
  return await startServer({
    name: 'haproxy',
    command: 'bash',
    dir,
    logFile: join(dir, 'haproxy.log'),
    startTimeoutMs: 15_000,
    argv: async (port) => {
      await writeFile(conf, [
        // Two descriptors per client: 9 950 fit the bench's 20 000 (the idle scenario holds 9 900).
        'global', '  nbthread 1', '  maxconn 9950',
        'defaults', '  mode tcp', '  maxconn 9950', '  timeout connect 5s', '  timeout client 1h', '  timeout server 1h',
        'frontend mqtt', `  bind 127.0.0.1:${port}`,
        '  tcp-request inspect-delay 10s',
        '  tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }',
        '  default_backend broker',
        'backend broker', `  server broker 127.0.0.1:${upstreamPort}`, ''
      ].join('\n'))
      return ['-c', FD_WRAP, HAPROXY, '-db', '-f', conf]
    },
    probe: async (port, child) => child.running && await canConnect(port),
    url: (port) => `mqtt://127.0.0.1:${port}`
  })
}

async function startNodeScript (name: string, script: string, args: (port: number) => string[], options: StartOptions = {}): Promise<ServerHandle> {
  const dir = await tempDir(name)
  return await startServer({
    name,
    command: 'bash',
    dir,
    logFile: join(dir, `${name}.log`),
    startTimeoutMs: 15_000,
    argv: (port) => ['-c', FD_WRAP, process.execPath, ...profileArgs(options), join(DIST_BENCH, script), ...args(port)],
    probe: async (port, child) => /listening on/.test(child.log()) && await canConnect(port),
    url: (port) => `mqtt://127.0.0.1:${port}`
  })
}

async function startProxy (variant: ProxyVariant, upstreamPorts: number[], ctx: ConfigContext, options: StartOptions): Promise<ServerHandle> {
  const { redisUrl } = ctx
  const dir = await tempDir(variant.id)
  const configFile = join(dir, 'config.yaml')
  // First what the config refers to (a file, a service whose address the config names).
  await variant.prepare?.(dir)
  await writeFile(configFile, JSON.stringify(variant.config(ctx), null, 2) + '\n')
  const nodeArgs = profileArgs(options)
  return await startServer({
    name: variant.id,
    command: 'bash',
    dir,
    logFile: join(dir, 'proxy.log'),
    startTimeoutMs: 15_000,
    argv: (port) => [
      '-c', FD_WRAP, process.execPath, ...nodeArgs, join(options.proxyRoot ?? ROOT, 'bin', 'mqtt-guard.js'), 'start',
      '--config', configFile,
      '--listen', `127.0.0.1:${port}`,
      '--upstream', upstreamPorts.map((p) => `mqtt://127.0.0.1:${p}`).join(','),
      ...(redisUrl === undefined ? [] : ['--redis', redisUrl]),
      '--admin', 'off',
      '--log-level', 'warn'
    ],
    // At log level warn the proxy says nothing when it listens: a TCP connect from outside
    // while our child still runs (a lost port race makes it exit with "address already in use").
    probe: async (port, child) => child.running && await canConnect(port),
    url: (port) => `mqtt://127.0.0.1:${port}`
  })
}

/** Starts the target and whatever it needs (its upstream Mosquitto, Redis). */
export async function startTarget (def: TargetDef, options: StartOptions = {}): Promise<RunningTarget> {
  const started: Array<{ stop: () => Promise<void> }> = []
  const stop = async (): Promise<void> => {
    // Reverse order: the target first, then what it depends on.
    for (const s of started.reverse()) await s.stop()
    started.length = 0
  }
  try {
    if (def.kind === 'mosquitto') {
      const mosquitto = await startBenchMosquitto()
      started.push(mosquitto)
      return { def, port: mosquitto.port, watch: { target: mosquitto.pid }, stop }
    }
    if (def.kind === 'aedes') {
      const aedes = await startNodeScript('aedes', 'aedes-server.js', (port) => [String(port)])
      started.push(aedes)
      return { def, port: aedes.port, watch: { target: aedes.pid }, stop }
    }
    const upstream = await startBenchMosquitto()
    started.push(upstream)
    if (def.kind === 'haproxy') {
      const haproxy = await startHaproxy(upstream.port)
      started.push(haproxy)
      return { def, port: haproxy.port, watch: { target: haproxy.pid, upstream: upstream.pid }, stop }
    }
    if (def.kind === 'relay') {
      const relay = await startNodeScript('relay', 'relay.js', (port) => [String(port), String(upstream.port)], options)
      started.push(relay)
      return { def, port: relay.port, watch: { target: relay.pid, upstream: upstream.pid }, stop }
    }
    const variant = def.variant as ProxyVariant
    const ctx: ConfigContext = { redisUrl: undefined, redisCluster: undefined }
    // The Redis processes are watched too (roles redis, redis-<port>): their CPU per message.
    const redisWatch: Watched = {}
    if (variant.redis === 'standalone') {
      const redis = await startRedis()
      started.push(redis)
      ctx.redisUrl = redis.url
      redisWatch['redis'] = redis.pid
    } else if (variant.redis !== undefined) {
      // A cluster-node-timeout well above any stall a loaded machine causes: no failover mid-run.
      const cluster = await startRedisCluster({ ...variant.redis.cluster, nodeTimeoutMs: 5000 })
      started.push(cluster)
      ctx.redisCluster = cluster.seeds
      for (const node of cluster.nodes) redisWatch[`redis-${node.port}`] = node.pid
    }
    // Several brokers: the others are watched as upstream-2, upstream-3, ...
    const more = []
    for (let i = 1; i < (variant.brokers ?? 1); i++) {
      const m = await startBenchMosquitto()
      started.push(m)
      more.push(m)
    }
    const ports = [upstream.port, ...more.map((m) => m.port)]
    const proxy = await startProxy(variant, ports, ctx, options)
    started.push(proxy)
    const brokerWatch = Object.fromEntries(more.map((m, i) => [`upstream-${i + 2}`, m.pid]))
    return { def, port: proxy.port, watch: { target: proxy.pid, upstream: upstream.pid, ...brokerWatch, ...redisWatch }, stop, ...(more.length > 0 ? { brokers: ports.map((p) => `127.0.0.1:${p}`) } : {}) }
  } catch (err) {
    await stop()
    throw err
  }
}
