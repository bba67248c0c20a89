// The proxy configurations the bench runs (one row each in the report): what each loads, the
// Redis it needs, the files it refers to, and the goals it is held to. targets.ts starts them.
// Add a configuration by adding a row to PROXY_VARIANTS.

import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { Credentials } from './mqtt-bytes.js'
import { identityServices, runningServices } from './identity-services.js'

/** Repository root: this file is dist/bench/variants.js. */
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const DIST_BENCH = fileURLToPath(new URL('./', import.meta.url))
/** Debian's mosquitto_passwd, which writes the password file the auth plugin reads. */
const MOSQUITTO_PASSWD = process.env['MOSQUITTO_PASSWD_BIN'] ?? '/usr/bin/mosquitto_passwd'

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
    // Issue #23: the production set with JWT instead of the password file: every CONNECT's
    // password is an RS256 token checked against a JWKS (served by the bench process, fetched
    // once and cached). Set against proxy-production in the same run: CPU per connection
    // (idle) and publish throughput.
    id: 'proxy-production-jwt',
    label: 'mqtt-guard, production plugins, JWT auth (cached JWKS)',
    redis: 'standalone',
    config: () => {
      const idp = runningServices()
      return { plugins: [{ name: 'auth', jwt: { jwksUrl: idp.jwksUrl, algorithms: ['RS256'], issuer: idp.issuer, audience: idp.audience } }, ...PRODUCTION_PLUGINS.slice(1)] }
    },
    goals: 'none',
    prepare: async () => { await identityServices() },
    get credentials (): Credentials { return { username: 'bench', password: runningServices().token } },
    unavailable: productionMissing
  },
  {
    // Issue #23: the production set with the acl asking an HTTP authorization hook (EMQX's
    // format) instead of a YAML rule; the hook's answers are cached per client and topic, so
    // after each client's first publish and subscribe the packet path makes no request.
    id: 'proxy-production-http-authz',
    label: 'mqtt-guard, production plugins, HTTP authz (warm cache)',
    redis: 'standalone',
    config: () => {
      const hook = runningServices()
      return { plugins: PRODUCTION_PLUGINS.map((p) => p.name === 'acl' ? { name: 'acl', http: { url: hook.authzUrl, cacheMs: 600_000 } } : p) }
    },
    goals: 'none',
    prepare: async (dir) => { await Promise.all([writePasswd(dir), identityServices()]) },
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
