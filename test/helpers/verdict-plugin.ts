// A scriptable plugin for tests: each rule says, for one direction and packet type, which
// packets it applies to and which verdict to give, synchronously or after an await.

import type { PacketCmd, Packet } from 'mqtt-packet'
import type { ConnectionInfo, Direction, Hook, HookResult, PacketHooks, Plugin } from '../../src/plugin/api.js'

export interface VerdictRule {
  direction: Direction
  cmd: PacketCmd
  when?: (packet: Packet) => boolean
  verdict: (packet: Packet, conn: ConnectionInfo) => HookResult
  /** Answer after a macrotask, as a hook awaiting Redis would. */
  async?: boolean
}

export interface VerdictPlugin extends Plugin {
  /** Every packet the plugin saw, in order: `in:publish:a/b`. */
  readonly seen: string[]
}

function describe (direction: Direction, packet: Packet): string {
  const topic = packet.cmd === 'publish' ? `:${packet.topic}` : ''
  return `${direction}:${packet.cmd}${topic}`
}

export function verdictPlugin (rules: VerdictRule[], name = 'verdicts'): VerdictPlugin {
  const seen: string[] = []
  const hooks: Record<Direction, PacketHooks> = { in: {}, out: {} }
  for (const direction of ['in', 'out'] as const) {
    const cmds = new Set(rules.filter((r) => r.direction === direction).map((r) => r.cmd))
    for (const cmd of cmds) {
      const mine = rules.filter((r) => r.direction === direction && r.cmd === cmd)
      const hook: Hook<Packet> = (conn, packet) => {
        seen.push(describe(direction, packet))
        const rule = mine.find((r) => r.when === undefined || r.when(packet))
        if (rule === undefined) return undefined
        if (rule.async !== true) return rule.verdict(packet, conn)
        return new Promise<HookResult>((resolve) => { setImmediate(() => { resolve(rule.verdict(packet, conn)) }) })
      }
      ;(hooks[direction] as Record<string, Hook<Packet>>)[cmd] = hook
    }
  }
  return { name, in: hooks.in, out: hooks.out, seen }
}
