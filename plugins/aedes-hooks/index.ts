// aedes-hooks: runs a module written for an aedes broker (its authenticate, authorizePublish,
// authorizeSubscribe and authorizeForward functions, unchanged) in front of any broker.
// See README.md for how each function maps onto the proxy's hooks and refusal codes.

import path from 'node:path'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import type { IConnectPacket, IPublishPacket, ISubackPacket, ISubscribePacket } from 'mqtt-packet'
import { definePlugin, type Plugin, type PluginContext } from '../../src/plugin/api.js'
import { aedesHooksOptions, checkAedesHooksOptions, type AedesHooksOptions } from './options.js'
import { HOOK_NAMES, Hooks, type AedesFunctions } from './hooks.js'

export { validateOptions, type AedesHooksOptions } from './options.js'

/** A path arrives absolute (validation resolved it against the config's folder); a package resolves from there too. */
function specifier (hooks: string, configDir: string): string {
  if (hooks.startsWith('.') || path.isAbsolute(hooks)) return pathToFileURL(path.resolve(configDir, hooks)).href
  try {
    return pathToFileURL(createRequire(path.join(configDir, 'noop.js')).resolve(hooks)).href
  } catch {
    return hooks // e.g. an ESM-only package: let import() resolve it from here
  }
}

/** The functions, from named exports, or from `module.exports` / a default export object. */
export function pickFunctions (imported: Record<string, unknown>): AedesFunctions {
  const fallback = imported['default']
  const sources = [imported, typeof fallback === 'object' && fallback !== null ? fallback as Record<string, unknown> : {}]
  const fns: Record<string, unknown> = {}
  for (const name of HOOK_NAMES) {
    const fn = sources.map((s) => s[name]).find((f) => typeof f === 'function')
    if (fn !== undefined) fns[name] = fn
  }
  return fns as AedesFunctions
}

async function load (ctx: PluginContext<AedesHooksOptions>): Promise<AedesFunctions> {
  const imported = await import(specifier(ctx.options.hooks, ctx.configDir)) as Record<string, unknown>
  const fns = pickFunctions(imported)
  if (Object.keys(fns).length === 0) {
    throw new Error(`hooks: ${ctx.options.hooks} exports none of ${HOOK_NAMES.join(', ')}`)
  }
  return fns
}

export default definePlugin<AedesHooksOptions>({
  name: 'aedes-hooks',
  options: aedesHooksOptions,
  validate: checkAedesHooksOptions,
  // Its `authenticate` decides who may connect.
  authenticates: true,
  async create (ctx): Promise<Plugin> {
    const fns = await load(ctx)
    const hooks = new Hooks(fns, ctx.options.timeoutMs, ctx.name)
    ctx.log.info({ hooks: ctx.options.hooks, functions: Object.keys(fns), timeoutMs: ctx.options.timeoutMs }, 'aedes hooks loaded')
    const subscribing = fns.authorizeSubscribe !== undefined
    return {
      name: ctx.name,
      in: {
        // Always: it creates the connection's `client` object and checks the will.
        connect: async (conn, packet: IConnectPacket) => await hooks.connect(conn, packet),
        ...(fns.authorizePublish !== undefined && { publish: (conn, packet: IPublishPacket) => hooks.publish(conn, packet) }),
        ...(subscribing && { subscribe: async (conn, packet: ISubscribePacket) => await hooks.subscribe(conn, packet) })
      },
      out: {
        ...(subscribing && { suback: (conn, packet: ISubackPacket) => hooks.subacks.merge(conn, packet) }),
        ...(fns.authorizeForward !== undefined && { publish: (conn, packet: IPublishPacket) => hooks.forward(conn, packet) })
      }
    }
  }
})
