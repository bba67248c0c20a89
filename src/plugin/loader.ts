// The configuration resolved once, and the plugins it names. `resolveConfig` loads each
// plugin's definition (`name`: a folder under plugins/, compiled to dist/plugins/<name>/index.js;
// `module`: a path relative to the config file, or a package name), validates its options (its
// zod schema, then its own checks, with paths resolved against the config file's folder),
// checks that an exposed listener has a plugin that authenticates, and freezes the result:
// the one ResolvedConfig that start, check-config and SIGHUP use. `loadPlugins` then creates
// the plugins from it, each with its validated options, child logger and key prefix.

import { readdir } from 'node:fs/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { Logger } from 'pino'
import type { Redis, Cluster } from 'ioredis'
import type { Registry } from 'prom-client'
import { GuardError, isGuardError } from '../errors.js'
import { checkExposure, deepFreeze, loadConfig, type GuardConfig, type Overrides, type PluginEntry } from '../config/config.js'
import { inputFile, isFilePath } from '../config/paths.js'
import { parseWith, underKey } from '../config/zod.js'
import type { Plugin, PluginDefinition, PrimaryChannel } from './api.js'
import { checkPlugin } from './host.js'
import { following } from '../log/log.js'

const BUILTIN_ROOT = new URL('../../plugins/', import.meta.url)

/** Every key a PluginDefinition may have: one missing or extra here fails to compile. */
const DEFINITION_KEYS: Record<keyof PluginDefinition, true> = {
  name: true, options: true, validate: true, create: true, authenticates: true, commands: true, primary: true
}

/** A plugin entry with its definition loaded and its options validated. */
export interface ResolvedPlugin extends PluginEntry {
  readonly definition: PluginDefinition
  /** The options after the plugin's schema and `validate`: what create() and reconfigure() get. */
  readonly validated: unknown
}

/** The configuration the proxy runs with: checked whole, frozen, replaced whole by a reload. */
export type ResolvedConfig = GuardConfig<ResolvedPlugin>

export interface LoadContext {
  configDir: string
  log: Logger
  redis: Redis | Cluster | undefined
  redisKeyPrefix: string
  instanceId: string
  metrics: Registry
  retap: () => void
  /** A worker of `workers: N` without Redis: each plugin's channel to its state in the primary. */
  primary?: ((plugin: string) => PrimaryChannel) | undefined
  /** A worker of `workers: N`: its number, from 1. */
  worker?: number | undefined
}

function specifier (entry: PluginEntry, configDir: string): string {
  if (entry.name !== undefined) return new URL(`${entry.name}/index.js`, BUILTIN_ROOT).href
  const module = entry.module as string
  // A missing file is the config's fault (exit 78, the key named), not a failed import.
  if (isFilePath(module)) return pathToFileURL(inputFile(configDir, module, `${entry.key}.module`)).href
  return module
}

export async function loadDefinition (entry: PluginEntry, configDir: string): Promise<PluginDefinition> {
  let imported: { default?: unknown }
  const from = specifier(entry, configDir)
  try {
    imported = await import(from) as { default?: unknown }
  } catch (err) {
    const what = entry.name !== undefined ? `no plugin named "${entry.name}" (looked in plugins/)` : `cannot load module "${entry.module}"`
    throw new GuardError('GUARD_ERR_PLUGIN_LOAD', `${entry.key}: ${what}: ${(err as Error).message}`, { cause: err })
  }
  const definition = imported.default as PluginDefinition | undefined
  if (definition === undefined || typeof definition.create !== 'function' || typeof definition.name !== 'string') {
    throw new GuardError('GUARD_ERR_PLUGIN_LOAD', `${entry.key}: module does not export a plugin definition (default export with name and create)`)
  }
  checkDefinition(definition, entry.key)
  return definition
}

/** A misspelt key (`validte`, `command`) would be silently ignored: refuse it, naming what is accepted. */
function checkDefinition (definition: PluginDefinition, where: string): void {
  const unknown = Object.keys(definition).find((key) => !(key in DEFINITION_KEYS))
  if (unknown !== undefined) {
    throw new GuardError('GUARD_ERR_PLUGIN_LOAD', `${where}: plugin ${definition.name}: unknown key ${unknown} in its definition (accepted: ${Object.keys(DEFINITION_KEYS).join(', ')})`, { plugin: definition.name })
  }
}

/** The plugins shipped in plugins/, by folder name, for their commands (`mqtt-guard --help`). */
export async function builtinDefinitions (): Promise<PluginDefinition[]> {
  const folders = (await readdir(BUILTIN_ROOT, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort()
  return await Promise.all(folders.map(async (name) => await loadDefinition(builtinEntry(name), fileURLToPath(BUILTIN_ROOT))))
}

function builtinEntry (name: string): PluginEntry {
  return { key: `plugins/${name}`, name, module: undefined, options: {}, context: { configDir: process.cwd(), redis: false } }
}

/**
 * The plugin's schema (its errors keyed from zod's issue path), then its own checks (a config
 * error it throws is put under the entry's key); errors name `plugins[i].key`.
 */
export function validateOptions (definition: PluginDefinition, entry: PluginEntry): unknown {
  const options = definition.options === undefined ? entry.options : parseWith(definition.options, entry.options, entry.key)
  if (definition.validate === undefined) return options
  try {
    return definition.validate(options, entry.context)
  } catch (err) {
    throw underKey(entry.key, err)
  }
}

/** One entry with its definition: its options validated, the whole frozen (the definition is the module's and left alone). */
export function resolvePlugin (entry: PluginEntry, definition: PluginDefinition): ResolvedPlugin {
  const validated = deepFreeze(validateOptions(definition, entry))
  return Object.freeze({ ...deepFreeze(entry), definition, validated })
}

/**
 * The one place a configuration is checked whole, before anything listens (start,
 * check-config) or replaces what runs (SIGHUP): every plugin loads, its options are valid, and
 * a non-loopback listener has a plugin that authenticates (or allowAnonymous).
 */
export async function resolveConfig (config: GuardConfig): Promise<ResolvedConfig> {
  const plugins: ResolvedPlugin[] = []
  for (const entry of config.plugins) plugins.push(resolvePlugin(entry, await loadDefinition(entry, config.configDir)))
  checkExposure(config, plugins.some((p) => p.definition.authenticates === true))
  return deepFreeze({ ...config, plugins: Object.freeze(plugins) })
}

/** The config file, MQTT_GUARD_* variables and flags (`flags` over `env` over the file), resolved. */
export async function readConfig (flags: Overrides, env: Overrides = {}): Promise<ResolvedConfig> {
  return await resolveConfig(loadConfig(flags, env))
}

/** Creates the plugins of a resolved config, in its order; their options were validated when it was resolved. */
export async function loadPlugins (entries: readonly ResolvedPlugin[], ctx: LoadContext): Promise<Plugin[]> {
  const plugins: Plugin[] = []
  for (const entry of entries) {
    const definition = entry.definition
    try {
      const plugin = await createPlugin(definition, entry.validated, ctx)
      plugins.push(plugin)
      checkPlugin(plugin)
    } catch (err) {
      await Promise.allSettled(plugins.map(async (p) => await p.close?.()))
      // A check only create() can make (it needs the running context) is still the config's.
      if (isGuardError(err) && err.code === 'GUARD_ERR_CONFIG') throw underKey(entry.key, err)
      if (isGuardError(err) && err.code === 'GUARD_ERR_PLUGIN_LOAD') throw new GuardError(err.code, `${entry.key}: ${err.message}`, { cause: err, plugin: definition.name })
      throw new GuardError('GUARD_ERR_PLUGIN_LOAD', `${entry.key}: plugin ${definition.name} failed to start: ${(err as Error).message}`, { cause: err, plugin: definition.name })
    }
  }
  return plugins
}

async function createPlugin (definition: PluginDefinition, options: unknown, ctx: LoadContext): Promise<Plugin> {
  return await definition.create({
    name: definition.name,
    options,
    log: following(ctx.log, ctx.log.child({ plugin: definition.name })),
    redis: ctx.redis,
    keyPrefix: `${ctx.redisKeyPrefix}${definition.name}:`,
    instanceId: ctx.instanceId,
    configDir: ctx.configDir,
    metrics: ctx.metrics,
    retap: ctx.retap,
    primary: ctx.redis === undefined && definition.primary !== undefined ? ctx.primary?.(definition.name) : undefined,
    worker: ctx.worker
  })
}
