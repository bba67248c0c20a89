// The `workers` setting: how many processes serve the listeners. 1 (the default) is one process
// with no primary; N >= 2 or `auto` (the cores this process may use) is a primary that forks
// and supervises N workers sharing the listeners (src/cluster/).

import { availableParallelism } from 'node:os'
import { z } from 'zod'
import { configError } from '../errors.js'
import { expected } from './zod.js'

/** Workers at most: more than the machine has cores only adds scheduling. */
export const MAX_WORKERS = 64

export const workersSchema = z.union([z.int().min(1).max(MAX_WORKERS), z.literal('auto')], expected(`an integer from 1 to ${MAX_WORKERS}, or auto`)).optional()
  .describe('Processes serving the listeners: 1 (one process), N (a primary and N workers), or auto (one per core)')

/** The count `given` means (auto: the cores available here), from the file or `--workers` / MQTT_GUARD_WORKERS. */
export function resolveWorkers (given: number | 'auto' | string | undefined, fromText: boolean): number {
  if (given === undefined) return 1
  if (given === 'auto') return Math.min(MAX_WORKERS, availableParallelism())
  const n = typeof given === 'number' ? given : /^\d+$/.test(given) ? Number(given) : NaN
  if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS) {
    throw configError('workers', `expected an integer from 1 to ${MAX_WORKERS}, or auto${fromText ? ' (--workers, MQTT_GUARD_WORKERS)' : ''}, got ${JSON.stringify(given)}`)
  }
  return n
}
