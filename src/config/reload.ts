// The `reload` setting: how long what a reload replaced may keep serving the connections it
// has (the plugins, brokers and Redis of an older configuration, a removed listener's clients,
// later a retired worker) before those connections are drained.

import { int, strictOptions } from './zod.js'

export interface ReloadSpec {
  /** After this, connections still on a replaced configuration or a removed listener are closed (MQTT 5: DISCONNECT 0x8B). */
  readonly oldWorkerMaxAgeMs: number
}

export const RELOAD_DEFAULTS: ReloadSpec = { oldWorkerMaxAgeMs: 3_600_000 }

export const reloadSchema = strictOptions({
  oldWorkerMaxAgeMs: int(1000).optional().describe('How long connections on a replaced configuration or a removed listener are kept after a reload before they are drained (default one hour)')
}).optional()

export function resolveReload (given: { oldWorkerMaxAgeMs?: number | undefined } | undefined): ReloadSpec {
  return Object.freeze({ oldWorkerMaxAgeMs: given?.oldWorkerMaxAgeMs ?? RELOAD_DEFAULTS.oldWorkerMaxAgeMs })
}
