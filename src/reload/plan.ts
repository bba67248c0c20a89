// What a reload changes: the configuration in force against the one read again, setting by
// setting, and for the plugins which running instance each new entry keeps, takes new options
// in place, or needs anew. Pure: the server (src/server.ts) carries the plan out.

import type { Plugin } from '../plugin/api.js'
import type { ResolvedConfig, ResolvedPlugin } from '../plugin/loader.js'
import type { ListenSpec } from '../config/config.js'
import { changedLimits } from '../config/limits.js'

/**
 * When a change reaches a connection: `now` (every connection, from its next packet or line),
 * `new connections` (those accepted from here on; open ones keep what they had), or `refused`.
 */
export type Reach = 'now' | 'new connections' | 'refused'

/** One line of a reload's answer. */
export interface Change {
  /** The setting as the file names it: `limits.maxConnections`, `listen`, `plugins[1] (acl)`. */
  setting: string
  /** What changed, in a few words. */
  what: string
  reach: Reach
  /** Why a change was refused, or what open connections keep. */
  detail?: string
}

/** The answer of a reload (POST /reload, `mqtt-guard reload`, the log line `reloaded`). */
export interface ReloadReport {
  at: string
  /** Reloads since the proxy started, this one included. */
  reload: number
  /** What asked: SIGHUP, admin (POST /reload), code. */
  source: string
  /** False: the configuration was refused whole (its errors in `refused`) and nothing changed. */
  applied: boolean
  changed: Change[]
  refused: Change[]
  /** The generation new connections get (0 until a reload replaces plugins, brokers or Redis). */
  generation: number
  /** Connections still on the plugins, brokers or Redis of an earlier generation. */
  olderConnections: number
}

/** One entry of the new plugin list: the running instance it keeps, or undefined (made anew). */
export interface PluginStep {
  entry: ResolvedPlugin
  keep: Plugin | undefined
  /** The kept instance takes the entry's new options through `reconfigure`. */
  reconfigure: boolean
}

export interface ReloadPlan {
  limits: Array<keyof ResolvedConfig['limits']>
  logLevel: boolean
  admin: boolean
  listen: { added: ListenSpec[], removed: ListenSpec[] }
  upstream: boolean
  redis: boolean
  plugins: PluginStep[]
  /** Plugins of the running list that no step keeps. */
  dropped: Plugin[]
  /** The plugin chain, the broker side or Redis differ: new connections need a new generation. */
  newGeneration: boolean
}

/** Settings compared as JSON: functions (compiled trust lists) are not settings. */
export function sameSetting (a: unknown, b: unknown): boolean {
  const plain = (value: unknown): string => JSON.stringify(value ?? null, (_k, v: unknown) => typeof v === 'function' ? undefined : v)
  return plain(a) === plain(b)
}

const listenKey = (spec: ListenSpec): string => JSON.stringify(spec, (_k, v: unknown) => typeof v === 'function' ? undefined : v)

/**
 * The plan from `now` (its plugin entries created as `running`, in order) to `next`. A plugin
 * entry keeps the running instance of the same plugin (name or module) when its options are the
 * same, or when they differ and the plugin takes new ones (`reconfigure`); otherwise, and for
 * every plugin when Redis changed (plugins hold the Redis client they were made with), a new
 * instance serves new connections and the old one stays with the connections it has.
 */
export function planReload (now: ResolvedConfig, running: readonly Plugin[], next: ResolvedConfig): ReloadPlan {
  const redis = !sameSetting(now.redis, next.redis)
  const upstream = !sameSetting(now.upstream, next.upstream)
  const nowKeys = new Map(now.listen.map((l) => [listenKey(l), l]))
  const nextKeys = new Map(next.listen.map((l) => [listenKey(l), l]))
  const listen = {
    added: next.listen.filter((l) => !nowKeys.has(listenKey(l))),
    removed: now.listen.filter((l) => !nextKeys.has(listenKey(l)))
  }
  const used = new Set<number>()
  const identity = (e: ResolvedPlugin): string => `${e.name ?? ''}\0${e.module ?? ''}`
  const plugins: PluginStep[] = next.plugins.map((entry, i) => {
    if (redis) return { entry, keep: undefined, reconfigure: false }
    // The same position first (the usual reload), then the first unused entry of the same plugin.
    const candidates = [i, ...now.plugins.keys()].filter((j) => !used.has(j) && now.plugins[j] !== undefined && identity(now.plugins[j] as ResolvedPlugin) === identity(entry))
    const j = candidates[0]
    if (j === undefined) return { entry, keep: undefined, reconfigure: false }
    const plugin = running[j] as Plugin
    const same = sameSetting(entry.options, now.plugins[j]?.options)
    if (!same && plugin.reconfigure === undefined) return { entry, keep: undefined, reconfigure: false }
    used.add(j)
    return { entry, keep: plugin, reconfigure: !same }
  })
  const kept = plugins.map((s) => s.keep)
  const dropped = running.filter((p) => !kept.includes(p))
  const sameChain = kept.length === running.length && kept.every((p, i) => p === running[i])
  return {
    limits: changedLimits(now.limits, next.limits),
    logLevel: now.log.level !== next.log.level,
    admin: !sameSetting(now.admin, next.admin),
    listen,
    upstream,
    redis,
    plugins,
    dropped,
    newGeneration: upstream || redis || !sameChain
  }
}

/** The lines of the answer that follow from the plan alone (what was carried out adds its own). */
export function describePlan (plan: ReloadPlan, now: ResolvedConfig, next: ResolvedConfig): Change[] {
  const changes: Change[] = []
  for (const key of plan.limits) {
    changes.push({ setting: `limits.${key}`, what: `${String(now.limits[key])} → ${String(next.limits[key])}`, reach: 'new connections', detail: 'open connections keep the limits they were accepted with' })
  }
  if (plan.logLevel) changes.push({ setting: 'log.level', what: `${now.log.level} → ${next.log.level}`, reach: 'now' })
  if (now.reload.oldWorkerMaxAgeMs !== next.reload.oldWorkerMaxAgeMs) {
    changes.push({ setting: 'reload.oldWorkerMaxAgeMs', what: `${now.reload.oldWorkerMaxAgeMs} → ${next.reload.oldWorkerMaxAgeMs}`, reach: 'now', detail: 'bounds what this reload and later ones replace; earlier reloads keep the bound they had' })
  }
  if (now.allowAnonymous !== next.allowAnonymous) changes.push({ setting: 'allowAnonymous', what: `${String(now.allowAnonymous)} → ${String(next.allowAnonymous)}`, reach: 'now' })
  if (plan.upstream) {
    changes.push({ setting: 'upstream', what: 'the brokers changed', reach: 'new connections', detail: 'open connections stay on the broker they are on (reload.oldWorkerMaxAgeMs bounds how long)' })
  }
  if (plan.redis) {
    changes.push({
      setting: 'redis',
      what: now.redis === undefined ? 'Redis added' : next.redis === undefined ? 'Redis removed' : 'the Redis settings changed',
      reach: 'new connections',
      detail: 'every plugin is made anew on the new Redis for new connections; open connections keep the plugins and Redis they started with' +
        (next.upstream.kind === 'embedded' && now.upstream.kind === 'embedded' ? '; the embedded broker keeps the persistence it started with' : '')
    })
  }
  for (const step of plan.plugins) {
    const label = `${step.entry.key} (${step.entry.definition.name})`
    if (step.keep !== undefined) {
      if (step.reconfigure) changes.push({ setting: label, what: 'new options', reach: 'now', detail: 'taken in place: open connections get them from their next packet' })
      continue
    }
    const before = now.plugins.find((e) => e.definition.name === step.entry.definition.name && e.module === step.entry.module)
    changes.push(before === undefined
      ? { setting: label, what: 'added', reach: 'new connections', detail: 'open connections go on without it' }
      : { setting: label, what: plan.redis ? 'made anew on the new Redis' : 'new options (the plugin takes them only when it starts)', reach: 'new connections', detail: 'open connections keep the running instance and its options' })
  }
  for (const entry of now.plugins) {
    if (next.plugins.some((e) => e.definition.name === entry.definition.name && e.module === entry.module)) continue
    changes.push({ setting: `${entry.key} (${entry.definition.name})`, what: 'removed', reach: 'new connections', detail: 'open connections keep it until they close' })
  }
  const order = (list: readonly ResolvedPlugin[]): string => list.map((e) => e.definition.name).join(',')
  if (!plan.redis && now.plugins.length === next.plugins.length && order(now.plugins) !== order(next.plugins)) {
    changes.push({ setting: 'plugins', what: `order ${order(now.plugins)} → ${order(next.plugins)}`, reach: 'new connections' })
  }
  return changes
}
