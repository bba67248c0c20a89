// A reload's new options for the plugins that take them at run time (`reconfigure`): which
// entries are in force afterwards, and which changes need a restart. A plugin added, removed or
// reordered needs a restart today (issue 22 makes that list empty).

import type { Logger } from 'pino'
import type { Plugin } from './api.js'
import type { ResolvedPlugin } from './loader.js'

/**
 * New options for plugins that take them at run time. Returns the plugin entries in force
 * (the new one where the plugin took it) and adds what needs a restart to `restart`.
 */
export async function reconfigurePlugins (configured: readonly Plugin[], now: readonly ResolvedPlugin[], next: readonly ResolvedPlugin[], restart: string[], log: Logger): Promise<readonly ResolvedPlugin[]> {
  const same = (a: ResolvedPlugin | undefined, b: ResolvedPlugin | undefined): boolean => a?.name === b?.name && a?.module === b?.module
  if (next.length !== now.length || next.some((entry, i) => !same(entry, now[i]))) {
    restart.push('plugins')
    return now
  }
  const inForce = [...now]
  for (const [i, entry] of next.entries()) {
    if (JSON.stringify(entry.options) === JSON.stringify(now[i]?.options)) continue
    const plugin = configured[i]
    if (plugin?.reconfigure === undefined) {
      restart.push(`${entry.key} (${plugin?.name ?? entry.name ?? entry.module ?? '?'})`)
      continue
    }
    try {
      await plugin.reconfigure(entry.validated)
      inForce[i] = entry
      log.info({ plugin: plugin.name, key: entry.key }, 'plugin reconfigured')
    } catch (err) {
      log.error({ plugin: plugin.name, err: (err as Error).message }, 'plugin not reconfigured: its previous options stay in force')
    }
  }
  return Object.freeze(inForce)
}
