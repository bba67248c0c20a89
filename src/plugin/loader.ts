// Loads the plugins named in config, in config order: `name` is a folder under plugins/
// (compiled to dist/plugins/<name>/index.js), `module` a path (relative to the config file) or
// a package name. Each gets its options validated (its zod schema, then its own checks, with
// paths resolved against the config file's folder), its own child logger and key prefix.

import { readdir } from 'node:fs/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { Logger } from 'pino'
import type { Redis, Cluster } from 'ioredis'
import type { Registry } from 'prom-client'
import { configError, GuardError, isGuardError } from '../errors.js'
import { checkExposure, type GuardConfig, type PluginEntry } from '../config/config.js'
import { inputFile, isFilePath } from '../config/paths.js'
import { parseWith } from '../config/zod.js'
import type { Plugin, PluginDefinition } from './api.js'
import { checkPlugin } from './host.js'

const BUILTIN_ROOT = new URL('../../plugins/', import.meta.url)

/** Every key a PluginDefinition may have: one missing or extra here fails to compile. */
const DEFINITION_KEYS: Record<keyof PluginDefinition, true> = {
  name: true, options: true, validate: true, create: true, authenticates: true, commands: true
}

export interface LoadContext {
  configDir: string
  log: Logger
  redis: Redis | Cluster | undefined
  redisKeyPrefix: string
  instanceId: string
  metrics: Registry
  retap: () => void
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

/** "hooks: expected a string" from a plugin becomes "plugins[0].hooks: expected a string". */
function keyed (entry: PluginEntry, err: unknown): GuardError {
  const message = (err as Error).message
  const match = /^([A-Za-z_][\w.[\]]*): (.*)$/s.exec(message)
  if (match !== null) return configError(`${entry.key}.${match[1] as string}`, match[2] as string)
  return configError(entry.key, message)
}

/** The plugin's schema, then its own checks; errors name `plugins[i].key`. */
export function validateOptions (definition: PluginDefinition, entry: PluginEntry): unknown {
  const options = definition.options === undefined ? entry.options : parseWith(definition.options, entry.options, entry.key)
  if (definition.validate === undefined) return options
  try {
    return definition.validate(options, entry.context)
  } catch (err) {
    throw keyed(entry, err)
  }
}

/**
 * What `start` and `check-config` check before anything listens: every plugin loads, its options
 * are valid, and a non-loopback listener has a plugin that authenticates (or allowAnonymous).
 */
export async function checkPlugins (config: GuardConfig): Promise<void> {
  const definitions: PluginDefinition[] = []
  for (const entry of config.plugins) {
    const definition = await loadDefinition(entry, config.configDir)
    validateOptions(definition, entry)
    definitions.push(definition)
  }
  checkExposure(config, definitions.some((d) => d.authenticates === true))
}

export async function loadPlugins (entries: PluginEntry[], ctx: LoadContext): Promise<Plugin[]> {
  const definitions = await Promise.all(entries.map(async (entry) => await loadDefinition(entry, ctx.configDir)))
  const optionsList = definitions.map((definition, i) => validateOptions(definition, entries[i] as PluginEntry))
  const plugins: Plugin[] = []
  for (const [i, definition] of definitions.entries()) {
    const entry = entries[i] as PluginEntry
    try {
      const plugin = await createPlugin(definition, optionsList[i], ctx)
      plugins.push(plugin)
      checkPlugin(plugin)
    } catch (err) {
      await Promise.allSettled(plugins.map(async (p) => await p.close?.()))
      // A check only create() can make (it needs the running context) is still the config's.
      if (isGuardError(err) && err.code === 'GUARD_ERR_CONFIG') throw keyed(entry, err)
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
    log: ctx.log.child({ plugin: definition.name }),
    redis: ctx.redis,
    keyPrefix: `${ctx.redisKeyPrefix}${definition.name}:`,
    instanceId: ctx.instanceId,
    configDir: ctx.configDir,
    metrics: ctx.metrics,
    retap: ctx.retap
  })
}
