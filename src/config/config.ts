// Configuration: defaults < YAML file < MQTT_GUARD_* environment < command-line flags.
// The core settings are checked here; every error names the key and what is wrong, and the
// process exits before it listens. Relative paths resolve against the config file's folder.
// The plugins' options are checked once their modules are loaded: src/plugin/loader.ts
// resolveConfig makes the one frozen ResolvedConfig that start, check-config and SIGHUP use.

import { readFileSync } from 'node:fs'
import path from 'node:path'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { configError } from '../errors.js'
import { listenEntry, parseHostPort, parseListen, type ListenSpec } from './listen.js'
import { bool, expected, oneOf, parseWith, strictOptions, text } from './zod.js'
import type { OptionsContext } from './paths.js'
import { ADMIN_DEFAULTS, LOOPBACK, adminSchema, parseAdmin, type AdminSpec } from './admin.js'
import { LIMIT_DEFAULTS, limitsSchema, resolveLimits, type Limits } from './limits.js'
import { parseRedis, redisSchema, type RedisSpec } from './redis.js'
import { parseUpstream, upstreamSchema, type UpstreamSpec } from './upstream.js'
import { reloadSchema, resolveReload, type ReloadSpec } from './reload.js'
import { resolveWorkers, workersSchema } from './workers.js'

export type { ListenSpec } from './listen.js'
export { zodToConfigError } from './zod.js'

export type { BrokerSpec, PoolBroker, TlsFiles, UpstreamSpec, Balance, Failover, HealthCheck } from './upstream.js'

export interface PluginEntry {
  /** `plugins[i]`, for error messages. */
  readonly key: string
  /** Folder under plugins/ (name) or a path/package (module). */
  readonly name: string | undefined
  readonly module: string | undefined
  /** As given in the file (what a reload compares); the plugin gets them validated. */
  readonly options: Readonly<Record<string, unknown>>
  /** Where its paths start and what else is configured, for its option checks. */
  readonly context: OptionsContext
}

export type { AdminSpec } from './admin.js'
export type { Limits } from './limits.js'
export type { ReloadSpec } from './reload.js'
export type { RedisEndpoint, RedisSpec, RedisTls, RedisTopology } from './redis.js'

/**
 * The settings, from defaults, file, environment and flags. `P` is what a plugin entry holds:
 * as given (PluginEntry, from buildConfig), or loaded and validated (src/plugin/loader.ts
 * ResolvedPlugin, in the ResolvedConfig the proxy runs with).
 */
export interface GuardConfig<P extends PluginEntry = PluginEntry> {
  readonly configFile: string | undefined
  readonly configDir: string
  readonly listen: readonly ListenSpec[]
  readonly admin: AdminSpec | undefined
  readonly upstream: UpstreamSpec
  readonly redis: RedisSpec | undefined
  readonly limits: Limits
  readonly reload: ReloadSpec
  /** Processes serving the listeners: 1, or a primary and this many workers (`auto` resolved). */
  readonly workers: number
  readonly log: { readonly level: string }
  readonly allowAnonymous: boolean
  readonly plugins: readonly P[]
}

/** Values given on the command line or in the environment; each overrides the file. */
export interface Overrides {
  config?: string | undefined
  listen?: string | undefined
  upstream?: string | undefined
  redis?: string | undefined
  logLevel?: string | undefined
  workers?: string | undefined
  /** HOST:PORT, or false/off to turn the admin endpoint off. */
  admin?: string | undefined
  adminToken?: string | undefined
}

export const DEFAULTS = {
  listen: '127.0.0.1:1884',
  admin: ADMIN_DEFAULTS.listen,
  upstream: 'embedded',
  limits: LIMIT_DEFAULTS,
  log: { level: 'info' }
} as const

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

/** The config file's own keys; each plugin's options have their schema in its folder. */
export const fileSchema = strictOptions({
  listen: z.union([z.string(), z.array(listenEntry, expected('a non-empty list of listeners')).min(1)], expected('HOST:PORT, a URL, or a non-empty list of them or of { url, cert, key, ... }'))
    .optional().describe('Where clients connect: HOST:PORT, mqtt://, mqtts://, ws://, wss:// URLs, or a list (default 127.0.0.1:1884)'),
  admin: adminSchema,
  upstream: upstreamSchema,
  redis: redisSchema,
  limits: limitsSchema,
  reload: reloadSchema,
  workers: workersSchema,
  log: strictOptions({ level: oneOf(LOG_LEVELS).optional() }).optional(),
  allowAnonymous: bool().optional().describe('Permit a non-loopback listener without the auth plugin'),
  // Each entry's other keys are the plugin's options, checked by the plugin's own schema.
  plugins: z.array(z.looseObject({ name: text('a folder name under plugins/').optional(), module: text('a path or a package name').optional() },
    expected('a plugin entry { name | module, ...options }')), expected('a list of plugin entries')).optional()
})

export { parseHostPort }

function readFile (file: string): unknown {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw configError('', `cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
  try {
    return parseYaml(text) ?? {}
  } catch (err) {
    throw configError('', `config file ${file} is not valid YAML: ${(err as Error).message}`)
  }
}

export function envOverrides (env: NodeJS.ProcessEnv): Overrides {
  return {
    config: env.MQTT_GUARD_CONFIG,
    listen: env.MQTT_GUARD_LISTEN,
    upstream: env.MQTT_GUARD_UPSTREAM,
    redis: env.MQTT_GUARD_REDIS,
    logLevel: env.MQTT_GUARD_LOG_LEVEL,
    workers: env.MQTT_GUARD_WORKERS,
    admin: env.MQTT_GUARD_ADMIN,
    adminToken: env.MQTT_GUARD_ADMIN_TOKEN
  }
}

/** Loads and validates. `flags` override `env`, which override the file. */
export function loadConfig (flags: Overrides, env: Overrides = {}): GuardConfig {
  const configFile = flags.config ?? env.config
  const raw = configFile === undefined ? {} : readFile(configFile)
  return buildConfig(raw, { ...dropUndefined(env), ...dropUndefined(flags) }, configFile)
}

function dropUndefined (o: Overrides): Overrides {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== ''))
}

export function buildConfig (raw: unknown, overrides: Overrides, configFile?: string): GuardConfig {
  const file = parseWith(fileSchema, raw)
  const configDir = configFile === undefined ? process.cwd() : path.dirname(path.resolve(configFile))
  const level = overrides.logLevel ?? file.log?.level ?? DEFAULTS.log.level
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw configError('log.level', `expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`)
  const redis = parseRedis(overrides.redis ?? file.redis, configDir)
  const context: OptionsContext = { configDir, redis: redis !== undefined }
  const config: GuardConfig = {
    configFile,
    configDir,
    listen: parseListen(overrides.listen ?? file.listen ?? DEFAULTS.listen, 'listen', configDir),
    admin: parseAdmin(file.admin, overrides.admin, overrides.adminToken),
    upstream: parseUpstream(overrides.upstream ?? file.upstream, configDir),
    redis,
    limits: resolveLimits(file.limits),
    reload: resolveReload(file.reload),
    workers: overrides.workers !== undefined ? resolveWorkers(overrides.workers, true) : resolveWorkers(file.workers, false),
    log: { level },
    allowAnonymous: file.allowAnonymous ?? false,
    plugins: (file.plugins ?? []).map((entry, i) => pluginEntry(entry, `plugins[${i}]`, context))
  }
  // Each worker would run its own embedded broker, and a message would reach only the
  // subscribers of the worker it was published on, unless Redis carries it between them.
  if (config.workers > 1 && config.upstream.kind === 'embedded' && config.redis === undefined) {
    throw configError('workers', `${config.workers} workers each run their own embedded broker: set upstream to your broker (mqtt://HOST:PORT), or redis (the embedded brokers then share sessions and messages through it), or workers: 1`)
  }
  // Without plugins nothing authenticates: refused here already. With plugins, their definitions
  // say whether one does, once loaded (src/plugin/loader.ts checkPlugins).
  if (config.plugins.length === 0) checkExposure(config, false)
  return config
}

function pluginEntry (entry: Record<string, unknown>, key: string, context: OptionsContext): PluginEntry {
  const { name, module, ...options } = entry as { name?: string, module?: string }
  if ((name === undefined) === (module === undefined)) throw configError(key, 'give exactly one of "name" (a folder under plugins/) or "module" (a path or package)')
  if (name !== undefined && !/^[a-z][a-z0-9-]*$/.test(name)) throw configError(`${key}.name`, `"${name}" is not a plugin folder name`)
  return { key, name, module, options, context }
}

/**
 * A listener others can reach must not be an open door by accident. Whether a plugin
 * authenticates is its definition's to say (`authenticates: true`), so with plugins configured
 * the plugin loader asks them and calls this once they are loaded.
 */
export function checkExposure (config: Pick<GuardConfig, 'listen' | 'allowAnonymous'>, hasAuth: boolean): void {
  if (hasAuth || config.allowAnonymous) return
  const exposed = config.listen.find((l) => !LOOPBACK.test(l.host))
  if (exposed !== undefined) {
    throw configError('listen', `${exposed.host}:${exposed.port} is not a loopback address and no auth plugin is configured; add the auth plugin or set allowAnonymous: true`)
  }
}

/**
 * Freezes a config value whole: every plain object and array in it. Functions, RegExps and
 * class instances (a compiled trust list, an idPattern) are left as they are: they are not data.
 */
export function deepFreeze<T> (value: T): T {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return value
  const proto = Object.getPrototypeOf(value) as unknown
  if (!Array.isArray(value) && proto !== Object.prototype && proto !== null) return value
  for (const child of Object.values(value)) deepFreeze(child)
  return Object.freeze(value)
}
