// Runs the plugins' hooks for each packet as an ordered chain: the first verdict other than
// `continue` ends it. Hooks are indexed by direction and packet type, so the Connection can ask
// "does anyone look at this packet?" and forward the original bytes undecoded when nobody does.
// Synchronous hooks never allocate a promise; the chain switches to async only at the first
// hook that returns one.

import type { Packet } from 'mqtt-packet'
import { GuardError, isGuardError } from '../errors.js'
import { FRAME_TYPE } from '../wire/codec.js'
import type {
  CloseInfo, ConnectionInfo, Direction, Hook, HookResult, OverviewPart, PacketEvent, PacketTap, Plugin, Verdict
} from './api.js'

/** The chain's decision: the verdict, the packet as the plugins left it, and who decided. */
export interface Outcome {
  verdict: Verdict
  packet: Packet
  changed: boolean
  plugin: string | undefined
}

interface ChainLink { plugin: string, hook: Hook<Packet> }

const CONTINUE: Verdict = { action: 'continue' }

/** Every key a Plugin may have: one missing or extra here fails to compile. */
const PLUGIN_KEYS: Record<keyof Plugin, true> = {
  name: true, admin: true, tap: true, in: true, out: true, observe: true, onClose: true, willAtClose: true,
  reload: true, reconfigure: true, diagnose: true, overview: true, close: true
}

/**
 * A function under a name the host does not know is a hook that would never run: `in.publsh`,
 * `onclose`. Like fastify's hook check, it is an error when the plugin is registered, naming
 * what is accepted. (Data of the plugin's own on the object, say a counter, is left alone.)
 */
export function checkPlugin (plugin: Plugin): void {
  const unknown = (where: string, key: string, accepted: string[]): GuardError => new GuardError(
    'GUARD_ERR_PLUGIN_LOAD', `plugin ${plugin.name}: unknown hook ${where}${key} (accepted: ${accepted.join(', ')})`, { plugin: plugin.name })
  for (const [key, value] of Object.entries(plugin)) {
    if (typeof value === 'function' && !(key in PLUGIN_KEYS)) throw unknown('', key, Object.keys(PLUGIN_KEYS))
  }
  for (const direction of ['in', 'out'] as const) {
    for (const [cmd, hook] of Object.entries(plugin[direction] ?? {})) {
      if (!(cmd in FRAME_TYPE)) throw unknown(`${direction}.`, cmd, Object.keys(FRAME_TYPE))
      if (hook !== undefined && typeof hook !== 'function') {
        throw new GuardError('GUARD_ERR_PLUGIN_LOAD', `plugin ${plugin.name}: hook ${direction}.${cmd} is not a function`, { plugin: plugin.name })
      }
    }
  }
}

function isPromise<T> (value: unknown): value is Promise<T> {
  return value !== null && typeof value === 'object' && typeof (value as Promise<T>).then === 'function'
}

export class PluginHost {
  // chains[direction][packet type 1..15]
  private readonly chains: Record<Direction, ChainLink[][]> = { in: [], out: [] }
  private readonly observers: Array<{ plugin: string, observe: (event: PacketEvent) => void }> = []
  // Bit `type` set when some hook or observer wants packets of that type, per direction: fixed
  // once the plugins are registered, read per packet without indexing by direction name.
  private readonly wantedIn: number
  private readonly wantedOut: number

  constructor (readonly plugins: readonly Plugin[]) {
    for (const direction of ['in', 'out'] as const) {
      for (let type = 0; type < 16; type++) this.chains[direction][type] = []
    }
    for (const plugin of plugins) this.register(plugin)
    // Like middleware layers: client → broker packets meet the plugins in config order, and
    // broker → client packets in reverse order, so the answer to a packet a plugin changed
    // (a SUBACK for a SUBSCRIBE it trimmed) reaches that plugin before any plugin before it.
    for (const chain of this.chains.out) chain.reverse()
    this.wantedIn = this.mask('in')
    this.wantedOut = this.mask('out')
  }

  private mask (direction: Direction): number {
    let mask = 0
    for (let type = 0; type < 16; type++) {
      if (this.observers.length > 0 || (this.chains[direction][type]?.length ?? 0) > 0) mask |= 1 << type
    }
    return mask
  }

  private register (plugin: Plugin): void {
    checkPlugin(plugin)
    for (const direction of ['in', 'out'] as const) {
      const hooks = plugin[direction]
      if (hooks === undefined) continue
      for (const [cmd, hook] of Object.entries(hooks)) {
        if (hook === undefined) continue
        const type = FRAME_TYPE[cmd as keyof typeof FRAME_TYPE]
        this.chains[direction][type]?.push({ plugin: plugin.name, hook: hook as Hook<Packet> })
      }
    }
    if (plugin.observe !== undefined) this.observers.push({ plugin: plugin.name, observe: plugin.observe })
  }

  /** True when some hook or observer must see packets of this type in this direction. */
  wants (direction: Direction, type: number): boolean {
    return ((this.wanted(direction) >> type) & 1) !== 0
  }

  /** The types some hook or observer wants in this direction, one bit per packet type. */
  wanted (direction: Direction): number {
    return direction === 'in' ? this.wantedIn : this.wantedOut
  }

  get observing (): boolean {
    return this.observers.length > 0
  }

  /** Runs the chain. Returns synchronously unless a hook returned a promise. */
  run (direction: Direction, conn: ConnectionInfo, packet: Packet, type: number): Outcome | Promise<Outcome> {
    const chain = this.chains[direction][type]
    const outcome: Outcome = { verdict: CONTINUE, packet, changed: false, plugin: undefined }
    if (chain === undefined) return outcome
    return this.step(chain, 0, conn, outcome)
  }

  private step (chain: ChainLink[], from: number, conn: ConnectionInfo, outcome: Outcome): Outcome | Promise<Outcome> {
    for (let i = from; i < chain.length; i++) {
      const link = chain[i] as ChainLink
      let result: HookResult | Promise<HookResult>
      try {
        result = link.hook(conn, outcome.packet)
      } catch (err) {
        return this.failed(outcome, link.plugin, err)
      }
      if (isPromise<HookResult>(result)) {
        return result.then(
          (value) => this.apply(outcome, link.plugin, value) ? this.step(chain, i + 1, conn, outcome) : outcome,
          (err: unknown) => this.failed(outcome, link.plugin, err)
        )
      }
      if (!this.apply(outcome, link.plugin, result)) return outcome
    }
    return outcome
  }

  /** Records one hook's result; returns true when the chain goes on. */
  private apply (outcome: Outcome, plugin: string, result: HookResult): boolean {
    if (result === undefined || result === null) return true
    if (result.action === 'continue') {
      if (result.packet !== undefined && result.packet !== outcome.packet) {
        outcome.packet = result.packet
        outcome.changed = true
      }
      return true
    }
    outcome.verdict = result
    outcome.plugin = plugin
    return false
  }

  private failed (outcome: Outcome, plugin: string, err: unknown): Outcome {
    const cause = err instanceof Error ? err : new Error(String(err))
    // A plugin may refuse by throwing a GuardError; anything else is the plugin's fault.
    const code = isGuardError(err) ? err.code : 'GUARD_ERR_PLUGIN'
    const wrapped = isGuardError(err) ? err : new GuardError('GUARD_ERR_PLUGIN', `plugin ${plugin} failed: ${cause.message}`, { cause, plugin })
    wrapped.plugin ??= plugin
    outcome.verdict = { action: 'reject', code, reason: wrapped.message }
    outcome.plugin = plugin
    return outcome
  }

  /** The taps plugins want on this connection, as one (undefined when none does). */
  tapFor (conn: ConnectionInfo): PacketTap | undefined {
    const taps: PacketTap[] = []
    for (const plugin of this.plugins) {
      if (plugin.tap === undefined) continue
      try {
        const tap = plugin.tap(conn)
        if (tap !== undefined) taps.push(tap)
      } catch (err) {
        conn.log.error({ plugin: plugin.name, err }, 'plugin tap failed')
      }
    }
    if (taps.length <= 1) return taps[0]
    return {
      received: (...args) => { for (const t of taps) t.received(...args) },
      sent: (...args) => { for (const t of taps) t.sent(...args) }
    }
  }

  observe (event: PacketEvent): void {
    for (const { observe } of this.observers) {
      try {
        observe(event)
      } catch {
        // An observer must never break the packet path; it is the observer's bug to log.
      }
    }
  }

  onClose (conn: ConnectionInfo, info: CloseInfo): void {
    for (const plugin of this.plugins) {
      if (plugin.onClose === undefined) continue
      try {
        plugin.onClose(conn, info)
      } catch (err) {
        conn.log.error({ plugin: plugin.name, err }, 'plugin onClose failed')
      }
    }
  }

  /** The plugin that no longer lets the broker publish this client's will, if one; a plugin that throws says no. */
  willWithheldBy (conn: ConnectionInfo): string | undefined {
    for (const plugin of this.plugins) {
      if (plugin.willAtClose === undefined) continue
      try {
        if (!plugin.willAtClose(conn)) return plugin.name
      } catch (err) {
        conn.log.error({ plugin: plugin.name, err }, 'plugin willAtClose failed; the will is withheld')
        return plugin.name
      }
    }
    return undefined
  }

  /** The overview's figures plugins count; a plugin that throws adds nothing. */
  overview (): OverviewPart {
    const part: OverviewPart = {}
    for (const plugin of this.plugins) {
      try {
        Object.assign(part, plugin.overview?.())
      } catch {
        // The overview is a view: one plugin's bug must not hide the rest of it.
      }
    }
    return part
  }

  /** SIGHUP: every plugin re-reads its files; one plugin's failure does not stop the others. */
  async reload (log: { error: (obj: object, msg: string) => void }): Promise<void> {
    for (const plugin of this.plugins) {
      if (plugin.reload === undefined) continue
      try {
        await plugin.reload()
      } catch (err) {
        log.error({ plugin: plugin.name, err }, 'plugin reload failed; previous state kept')
      }
    }
  }

  async close (): Promise<void> {
    for (const plugin of [...this.plugins].reverse()) {
      if (plugin.close !== undefined) await plugin.close()
    }
  }
}
