// Makes a generation's parts: at start all of them, at a reload what the plan says is new (the
// rest is kept from the generation in force). A part that cannot be made is refused: the reload
// keeps the running one, and its answer says why. Nothing made for a refused step stays open.

import type { Logger } from 'pino'
import type { Plugin, PrimaryChannel } from '../plugin/api.js'
import { loadPlugins, type ResolvedConfig, type ResolvedPlugin } from '../plugin/loader.js'
import { PluginHost } from '../plugin/host.js'
import { embeddedUpstream, tcpUpstream, type Upstream } from '../upstream/upstream.js'
import { createEmbeddedBroker } from '../upstream/embedded.js'
import { brokerPool } from '../upstream/pool-start.js'
import { openSharedRedis, type SharedRedis } from '../redis/shared.js'
import { DEFAULT_KEY_PREFIX } from '../config/redis.js'
import type { GuardMetrics } from '../observe/metrics.js'
import type { Change, ReloadPlan } from './plan.js'
import type { GenerationParts } from './generation.js'

/** What making parts needs of the server. */
export interface PartsContext {
  log: Logger
  instanceId: string
  metrics: GuardMetrics
  /** The plugins around the configured ones: the core `limits` first, plugins made in code last. */
  first: Plugin[]
  last: Plugin[]
  /** Asks every live connection for its taps again. */
  retap: () => void
  /** A pool's CONNECT → CONNACK time. */
  connack: (url: string, seconds: number) => void
  /** A worker of `workers: N`: each plugin's channel to its state in the primary. */
  primary?: ((plugin: string) => PrimaryChannel) | undefined
  /** A worker of `workers: N`: its number, from 1. */
  worker?: number | undefined
}

/** The broker side for `config`. */
async function openUpstream (config: ResolvedConfig, ctx: PartsContext): Promise<Upstream> {
  if (config.upstream.kind === 'embedded') return embeddedUpstream(await createEmbeddedBroker(config.redis, ctx.log))
  if (config.upstream.kind === 'pool') return brokerPool(config.upstream, ctx.instanceId, ctx.log, ctx.connack)
  return tcpUpstream(config.upstream)
}

function redisCounter (ctx: PartsContext): (n?: number) => void {
  return (n) => { ctx.metrics.redisErrors.inc({ source: 'connection' }, n) }
}

async function makePlugins (entries: readonly ResolvedPlugin[], config: ResolvedConfig, shared: SharedRedis | undefined, ctx: PartsContext): Promise<Plugin[]> {
  return await loadPlugins(entries, {
    configDir: config.configDir,
    log: ctx.log,
    redis: shared?.client,
    redisKeyPrefix: config.redis?.keyPrefix ?? DEFAULT_KEY_PREFIX,
    instanceId: ctx.instanceId,
    metrics: ctx.metrics.registry,
    retap: ctx.retap,
    primary: ctx.primary,
    worker: ctx.worker
  })
}

export function hostOf (plugins: readonly Plugin[], ctx: PartsContext): PluginHost {
  return new PluginHost([...ctx.first, ...plugins, ...ctx.last])
}

/** Every part of `config`, for the first generation. Nothing stays open when one fails. */
export async function startParts (config: ResolvedConfig, ctx: PartsContext): Promise<GenerationParts> {
  const shared = config.redis === undefined ? undefined : openSharedRedis(config.redis, ctx.log, redisCounter(ctx))
  let plugins: Plugin[] = []
  try {
    plugins = await makePlugins(config.plugins, config, shared, ctx)
    const upstream = await openUpstream(config, ctx)
    return { config, plugins, host: hostOf(plugins, ctx), upstream, shared }
  } catch (err) {
    await new PluginHost(plugins).close().catch(() => {})
    shared?.client.disconnect()
    throw err
  }
}

/** What a reload's parts came to: the parts in force afterwards, and what was refused. */
export interface ReloadedParts {
  parts: GenerationParts
  /** The configuration in force for these parts (refused steps keep the running values). */
  inForce: Pick<ResolvedConfig, 'upstream' | 'redis' | 'plugins'>
  refused: Change[]
  /** Plugins that took new options in place. */
  reconfigured: number
}

/**
 * The parts `plan` asks for: the Redis client and the plugins first (a plugin that fails to
 * start refuses the plugin changes, and a new Redis with them, since the plugins are made on
 * it), then the upstream. `now` is the generation in force.
 */
export async function reloadParts (now: GenerationParts, next: ResolvedConfig, plan: ReloadPlan, ctx: PartsContext): Promise<ReloadedParts> {
  const refused: Change[] = []
  let redis = now.config.redis
  let shared = now.shared
  let entries: readonly ResolvedPlugin[] = now.config.plugins
  let plugins: readonly Plugin[] = now.plugins
  let reconfigured = 0
  if (plan.newGeneration || plan.plugins.some((s) => s.reconfigure)) {
    const newShared = plan.redis && next.redis !== undefined ? openSharedRedis(next.redis, ctx.log, redisCounter(ctx)) : plan.redis ? undefined : shared
    const made: Plugin[] = []
    try {
      for (const step of plan.plugins) {
        if (step.keep === undefined) made.push(...await makePlugins([step.entry], next, newShared, ctx))
      }
      // Everything new started: the kept plugins take their new options.
      const inForce: ResolvedPlugin[] = []
      const chain: Plugin[] = []
      let i = 0
      for (const step of plan.plugins) {
        const plugin = step.keep ?? made[i++] as Plugin
        chain.push(plugin)
        inForce.push(step.entry)
        if (!step.reconfigure) continue
        try {
          await plugin.reconfigure?.(step.entry.validated)
          reconfigured++
          ctx.log.info({ plugin: plugin.name, key: step.entry.key }, 'plugin reconfigured')
        } catch (err) {
          const before = now.config.plugins[now.plugins.indexOf(plugin)]
          if (before !== undefined) inForce[inForce.length - 1] = before
          refused.push({ setting: `${step.entry.key} (${plugin.name})`, what: 'new options', reach: 'refused', detail: (err as Error).message })
        }
      }
      // The same instances in the same order: the running chain (and its host) stays.
      plugins = chain.length === now.plugins.length && chain.every((p, j) => p === now.plugins[j]) ? now.plugins : chain
      entries = inForce
      shared = newShared
      redis = next.redis
    } catch (err) {
      await Promise.allSettled(made.map(async (p) => await p.close?.()))
      if (newShared !== shared) newShared?.client.disconnect()
      refused.push({ setting: 'plugins', what: 'the new plugin list', reach: 'refused', detail: `${(err as Error).message}; the running plugins stay in force` })
      if (plan.redis) refused.push({ setting: 'redis', what: 'the Redis settings', reach: 'refused', detail: 'the plugins could not be made on it; the running Redis stays in force' })
    }
  }
  let upstream = now.upstream
  let upstreamSpec = now.config.upstream
  if (plan.upstream) {
    try {
      upstream = await openUpstream({ ...next, redis }, ctx)
      upstreamSpec = next.upstream
    } catch (err) {
      refused.push({ setting: 'upstream', what: 'the brokers', reach: 'refused', detail: `${(err as Error).message}; the running brokers stay in force` })
    }
  }
  const config = Object.freeze({ ...now.config, upstream: upstreamSpec, redis, plugins: entries }) as ResolvedConfig
  const host = plugins === now.plugins ? now.host : hostOf(plugins, ctx)
  return { parts: { config, plugins, host, upstream, shared }, inForce: { upstream: upstreamSpec, redis, plugins: entries }, refused, reconfigured }
}
