// The processes under test, each started fresh for each round on free loopback ports, and
// stopped by PID (SIGTERM, then SIGKILL) by the ServerHandle of test/helpers/processes.ts.
// Add a proxy configuration by adding a row to PROXY_VARIANTS.

import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { cp, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { canConnect, startServer, type ServerHandle } from '../test/helpers/processes.js'
import { startRedis } from '../test/helpers/redis.js'
import { startRedisCluster } from '../test/helpers/redis-topologies.js'
import type { Watched } from './jobs.js'
import type { Credentials } from './mqtt-bytes.js'

/** Repository root: this file is dist/bench/targets.js. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const DIST_BENCH = fileURLToPath(new URL('./', import.meta.url))
export const MOSQUITTO = process.env['MOSQUITTO_BIN'] ?? '/usr/sbin/mosquitto'
/** Debian's mosquitto_passwd, which writes the password file the auth plugin reads. */
const MOSQUITTO_PASSWD = process.env['MOSQUITTO_PASSWD_BIN'] ?? '/usr/bin/mosquitto_passwd'
/** Debian's haproxy, the peer of issue #22 (test/setup/system-packages.sh installs it). */
const HAPROXY = process.env['HAPROXY_BIN'] ?? '/usr/sbin/haproxy'

/**
 * Runs "$0" "$@" with the soft descriptor limit raised to the hard one: 9 900 idle clients
 * need 9 900 descriptors in the generator and the broker, and 19 800 in a proxy or relay.
 * `exec` keeps the PID, so /proc readings and kills reach the real process.
 */
export const FD_WRAP = 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"'

/** Which targets a row is held to: issue #3's (no plugins, production set) or issue #6's (dedupe). */
export type Goals = 'no-plugins' | 'production' | 'dedupe' | 'trace' | 'trace-nomatch' | 'none'

/**
 * A target against another row of the same run (issue #20: the production set on a Cluster
 * against the same set on standalone Redis): in every throughput table, this row's median is
 * at least `share` × `target`'s median.
 */
export interface RelativeGoal {
  target: string
  /** Throughput tables: at least this × the other row's median (none: throughput only reported). */
  share?: number
  issue: string
  /** The fixed-rate table (CPU per message), when given: at most this × the other row's. */
  cpu?: number
}

/** The private Redis a variant's state goes to. */
export type BenchRedis =
  /** One redis-server, passed with --redis. */
  | 'standalone'
  /** A Cluster (redis-cli --cluster create), passed in the config file as `redis: { cluster }`. */
  | { cluster: { primaries: number, replicasPerPrimary: number } }

/** What a variant's config may refer to: the private Redis started for it. */
export interface ConfigContext {
  /** The standalone Redis (also passed with --redis). */
  redisUrl: string | undefined
  /** The Cluster's nodes, HOST:PORT. */
  redisCluster: string[] | undefined
}

export interface ProxyVariant {
  id: string
  label: string
  /** The config file's content (written as JSON, which is YAML); listen/upstream come as flags. */
  config: (ctx: ConfigContext) => Record<string, unknown>
  /** Start a private Redis for each start of the target, stopped with it. */
  redis?: BenchRedis
  goals: Goals
  relativeGoal?: RelativeGoal
  /** Undefined when the variant can run; otherwise why it is skipped. */
  unavailable?: () => string | undefined
  /** Writes what the config refers to (e.g. a password file) into the config's folder. */
  prepare?: (dir: string) => Promise<void>
  /** Brokers behind the proxy (issue 21): this many Mosquittos, given as `--upstream` list. */
  brokers?: number
  /** User name and password the load generator sends in every CONNECT. */
  credentials?: Credentials
}

const builtinPlugin = (name: string): string | undefined =>
  existsSync(join(ROOT, 'dist', 'plugins', name, 'index.js')) ? undefined : `plugin ${name} not built yet`

const BENCH_USER: Credentials = { username: 'bench', password: 'benchpass' }

/** A Mosquitto password file with the generator's user, written by mosquitto_passwd ($7$). */
async function writePasswd (dir: string): Promise<void> {
  await promisify(execFile)(MOSQUITTO_PASSWD, ['-c', '-b', join(dir, 'passwd'), BENCH_USER.username, BENCH_USER.password])
}

const passwdMissing = (): string | undefined => existsSync(MOSQUITTO_PASSWD) ? undefined : `${MOSQUITTO_PASSWD} not found (Debian package mosquitto)`

const PRODUCTION_PLUGINS = [
  { name: 'auth', passwordFile: './passwd' },
  { name: 'acl', rules: [{ allow: ['publish', 'subscribe', 'receive'], topic: 'bench/#' }] },
  { name: 'client-id' },
  { name: 'dedupe' }
]
const productionMissing = (): string | undefined => ['auth', 'acl', 'client-id', 'dedupe'].map(builtinPlugin).find((r) => r !== undefined) ?? passwdMissing()

export const PROXY_VARIANTS: ProxyVariant[] = [
  {
    id: 'proxy',
    label: 'mqtt-guard, no plugins',
    config: () => ({ plugins: [] }),
    goals: 'no-plugins'
  },
  {
    // Issue #21: the same proxy with three Mosquittos behind it (balance client-id, health
    // checks on), against one broker in the same run: throughput at least 0.95 ×, CPU per
    // message at most 1/0.95 ×. Each pair's publisher and subscriber hash to one broker.
    id: 'proxy-brokers',
    label: 'mqtt-guard, no plugins, 3 brokers',
    config: () => ({ plugins: [] }),
    brokers: 3,
    goals: 'none',
    relativeGoal: { target: 'proxy', share: 0.95, issue: '#21', cpu: 1 / 0.95 }
  },
  {
    // Issue #22: the model of `workers: N`. The same proxy as one process (`workers: 1`, the
    // default, said explicitly) and as a primary with two workers sharing the listener (round
    // robin from the primary). CPU is the whole process tree (bench/proc.ts), primary included.
    id: 'proxy-workers1',
    label: 'mqtt-guard, no plugins, workers: 1',
    config: () => ({ plugins: [], workers: 1 }),
    goals: 'none'
  },
  {
    // Held to issue #22: CPU per message at most 1.1 × workers: 1 of the same run; throughput
    // is reported (on 2 cores the generator and Mosquitto take the cores a second worker needs).
    id: 'proxy-workers2',
    label: 'mqtt-guard, no plugins, workers: 2',
    config: () => ({ plugins: [], workers: 2 }),
    goals: 'none',
    relativeGoal: { target: 'proxy-workers1', issue: '#22', cpu: 1.1 }
  },
  {
    id: 'proxy-hook',
    label: 'mqtt-guard, no-op PUBLISH hook',
    config: () => ({ plugins: [{ module: join(DIST_BENCH, 'plugins', 'noop-publish.js') }] }),
    goals: 'none'
  },
  {
    // The production set of issue #3: auth ($7$ password file), acl (one rule), client-id and
    // dedupe with their defaults, state in a private Redis.
    id: 'proxy-production',
    label: 'mqtt-guard, production plugins',
    redis: 'standalone',
    config: () => ({ plugins: PRODUCTION_PLUGINS }),
    goals: 'production',
    prepare: async (dir) => { await writePasswd(dir) },
    credentials: BENCH_USER,
    unavailable: productionMissing
  },
  {
    // Issue #20: the same set with its state on a Redis Cluster of 3 primaries, held to 0.9 ×
    // proxy-production of the same run. No replicas, like the standalone Redis it is compared
    // with: on this 2-core machine a replica's CPU is taken from the proxy, the broker and the
    // load generator, so it would measure the machine, not the Cluster client. The next row
    // has them.
    id: 'proxy-production-cluster',
    label: 'mqtt-guard, production plugins, Redis Cluster',
    redis: { cluster: { primaries: 3, replicasPerPrimary: 0 } },
    config: ({ redisCluster }) => ({ redis: { cluster: redisCluster, keyPrefix: 'mqtt-guard:' }, plugins: PRODUCTION_PLUGINS }),
    goals: 'none',
    relativeGoal: { target: 'proxy-production', share: 0.9, issue: '#20' },
    prepare: async (dir) => { await writePasswd(dir) },
    credentials: BENCH_USER,
    unavailable: productionMissing
  },
  {
    // The same Cluster as a fleet runs it, each primary with one replica: what replication
    // costs on the same cores (reported, not held to a goal).
    id: 'proxy-production-cluster-replicas',
    label: 'mqtt-guard, production plugins, Redis Cluster with replicas',
    redis: { cluster: { primaries: 3, replicasPerPrimary: 1 } },
    config: ({ redisCluster }) => ({ redis: { cluster: redisCluster, keyPrefix: 'mqtt-guard:' }, plugins: PRODUCTION_PLUGINS }),
    goals: 'none',
    prepare: async (dir) => { await writePasswd(dir) },
    credentials: BENCH_USER,
    unavailable: productionMissing
  },
  {
    // Issue #6: QoS 1 with dedupe on (records in a private Redis) against the proxy without it.
    id: 'proxy-dedupe',
    label: 'mqtt-guard, dedupe (Redis)',
    redis: 'standalone',
    config: () => ({ plugins: [{ name: 'dedupe' }] }),
    goals: 'dedupe',
    unavailable: () => builtinPlugin('dedupe')
  },
  {
    // Issue #8: a trace on every packet of every connection (payload none) into a file.
    id: 'proxy-trace',
    label: 'mqtt-guard, trace on (every packet)',
    config: () => ({ plugins: [{ name: 'trace', destination: './trace.jsonl', payload: 'none', rotateBytes: 64 * 1024 * 1024, keepFiles: 1, maxLinesPerSecond: 1_000_000 }] }),
    goals: 'trace',
    unavailable: () => builtinPlugin('trace')
  },
  {
    // Issue #8: a trace that matches no connection: the packet path must not notice it.
    id: 'proxy-trace-nomatch',
    label: 'mqtt-guard, trace matching nobody',
    config: () => ({ plugins: [{ name: 'trace', destination: './trace.jsonl', filters: { clientId: 'nobody-*' } }] }),
    goals: 'trace-nomatch',
    unavailable: () => builtinPlugin('trace')
  },
  {
    // Every CONNECT checked against a Mosquitto password file ($7$ hash), every PUBLISH,
    // SUBSCRIBE and delivery against one ACL rule (the generator's topics are bench/<tag>/<i>).
    id: 'proxy-auth-acl',
    label: 'mqtt-guard, auth + acl',
    config: () => ({
      plugins: [
        { name: 'auth', passwordFile: './passwd' },
        { name: 'acl', rules: [{ allow: ['publish', 'subscribe', 'receive'], topic: 'bench/#' }] }
      ]
    }),
    goals: 'none',
    prepare: async (dir) => { await writePasswd(dir) },
    credentials: BENCH_USER,
    unavailable: () => ['auth', 'acl'].map(builtinPlugin).find((r) => r !== undefined) ?? passwdMissing()
  }
]

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
  await writeFile(configFile, JSON.stringify(variant.config(ctx), null, 2) + '\n')
  await variant.prepare?.(dir)
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
