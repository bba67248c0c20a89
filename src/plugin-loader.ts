// Loads the plugins named in config, in config order: `name` is a folder under plugins/
// (compiled to dist/plugins/<name>/index.js), `module` a path (relative to the config file) or
// a package name. Each gets its options validated, its own child logger and key prefix.

import path from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Logger } from 'pino'
import type { Redis, Cluster } from 'ioredis'
import type { Registry } from 'prom-client'
import { configError, GuardError } from './errors.js'
import type { PluginEntry } from './config.js'
import type { Plugin, PluginDefinition } from './plugin-api.js'

const BUILTIN_ROOT = new URL('../plugins/', import.meta.url)

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
  if (module.startsWith('.') || path.isAbsolute(module)) return pathToFileURL(path.resolve(configDir, module)).href
  return module
}

export async function loadDefinition (entry: PluginEntry, configDir: string): Promise<PluginDefinition> {
  let imported: { default?: unknown }
  try {
    imported = await import(specifier(entry, configDir)) as { default?: unknown }
  } catch (err) {
    const what = entry.name !== undefined ? `no plugin named "${entry.name}" (looked in plugins/)` : `cannot load module "${entry.module}"`
    throw new GuardError('GUARD_ERR_PLUGIN_LOAD', `${entry.key}: ${what}: ${(err as Error).message}`, { cause: err })
  }
  const definition = imported.default as PluginDefinition | undefined
  if (definition === undefined || typeof definition.create !== 'function' || typeof definition.name !== 'string') {
    throw new GuardError('GUARD_ERR_PLUGIN_LOAD', `${entry.key}: module does not export a plugin definition (default export with name and create)`)
  }
  return definition
}

/** Validates options with the plugin's own validator; errors name `plugins[i].key`. */
export function validateOptions (definition: PluginDefinition, entry: PluginEntry): unknown {
  if (definition.validate === undefined) return entry.options
  try {
    return definition.validate(entry.options)
  } catch (err) {
    // "hooks: expected a string" from the plugin becomes "plugins[0].hooks: expected a string".
    const message = (err as Error).message
    const keyed = /^([A-Za-z_][\w.[\]]*): (.*)$/s.exec(message)
    if (keyed !== null) throw configError(`${entry.key}.${keyed[1] as string}`, keyed[2] as string)
    throw configError(entry.key, message)
  }
}

export async function loadPlugins (entries: PluginEntry[], ctx: LoadContext): Promise<Plugin[]> {
  const definitions = await Promise.all(entries.map(async (entry) => await loadDefinition(entry, ctx.configDir)))
  const optionsList = definitions.map((definition, i) => validateOptions(definition, entries[i] as PluginEntry))
  const plugins: Plugin[] = []
  for (const [i, definition] of definitions.entries()) {
    const entry = entries[i] as PluginEntry
    try {
      plugins.push(await createPlugin(definition, optionsList[i], ctx))
    } catch (err) {
      await Promise.allSettled(plugins.map(async (p) => await p.close?.()))
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
