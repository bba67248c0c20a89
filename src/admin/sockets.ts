// What the admin endpoint may take from the process: at most admin.maxConnections sockets, and
// beyond its first ALWAYS_SOCKETS never the last admin.reserveDescriptors descriptors, which
// belong to the MQTT listeners. A
// socket that has not finished its request (or sits idle between requests) is the first to go
// when a new one needs its place, so a thousand half-open sockets cannot keep /healthz out.
// Refusals are counted by reason and logged at most once per LOG_EVERY_MS, as a summary.

import { readdirSync, readFileSync } from 'node:fs'
import type net from 'node:net'
import type { Logger } from 'pino'
import type { AdminSpec } from '../config/config.js'

export const REFUSAL_REASONS = ['connections', 'idle_closed', 'descriptors', 'timeout', 'viewers', 'cross_origin', 'bad_request', 'body_too_large'] as const
export type RefusalReason = typeof REFUSAL_REASONS[number]

const LOG_EVERY_MS = 10_000
const ALWAYS_SOCKETS = 4

/** The soft RLIMIT_NOFILE (`ulimit -n`), from /proc on Linux; undefined elsewhere. */
export function descriptorLimit (): number | undefined {
  try {
    const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    return line === null || line[1] === 'unlimited' ? undefined : Number(line[1])
  } catch {
    return undefined
  }
}

function descriptorsOpen (): number {
  try {
    return readdirSync('/proc/self/fd').length
  } catch {
    return 0
  }
}

/** Refusals by reason, and a log line that summarises them at a bounded rate. */
export class RefusalLog {
  readonly counts = Object.fromEntries(REFUSAL_REASONS.map((r) => [r, 0])) as Record<RefusalReason, number>
  private pending: Partial<Record<RefusalReason, number>> = {}
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly log: Logger) {}

  refuse (reason: RefusalReason): void {
    this.counts[reason]++
    this.pending[reason] = (this.pending[reason] ?? 0) + 1
    if (this.timer === undefined) this.flush()
  }

  /** Logs what is pending; the next line no sooner than LOG_EVERY_MS from now. */
  private flush (): void {
    const refused = this.pending
    this.pending = {}
    if (Object.keys(refused).length === 0) {
      this.timer = undefined
      return
    }
    this.log.warn({ refused, perSeconds: LOG_EVERY_MS / 1000 }, 'admin requests refused')
    this.timer = setTimeout(() => { this.flush() }, LOG_EVERY_MS)
    this.timer.unref()
  }

  close (): void {
    clearTimeout(this.timer)
  }
}

interface Held { busy: boolean, since: number }

export class AdminSockets {
  private readonly sockets = new Map<net.Socket, Held>()
  private readonly limit = descriptorLimit()
  /** Descriptors open before the admin endpoint's first socket (listeners, Redis, files). */
  private readonly base = descriptorsOpen()

  constructor (
    private readonly spec: Pick<AdminSpec, 'maxConnections' | 'reserveDescriptors'>,
    private readonly refusals: RefusalLog,
    /** MQTT connections open now: two descriptors each (client and broker side). */
    private readonly mqttConnections: () => number
  ) {}

  get open (): number { return this.sockets.size }

  /** A warning when `ulimit -n` leaves less than the reserve plus the admin cap. */
  checkLimit (log: Logger): void {
    if (this.limit === undefined) return
    const need = this.base + this.spec.reserveDescriptors + this.spec.maxConnections
    if (this.limit < need) {
      log.warn({ ulimit: this.limit, open: this.base, reserveDescriptors: this.spec.reserveDescriptors, maxConnections: this.spec.maxConnections },
        'ulimit -n is low: the descriptors open now, admin.reserveDescriptors and admin.maxConnections do not fit; raise it (LimitNOFILE) or lower the admin settings')
    }
  }

  /** Whether `socket` may stay; closes it (or an idle one in its place) when not. */
  admit (socket: net.Socket): boolean {
    // A few sockets whatever the reserve: when descriptors run short, /healthz and doctor are
    // how the operator finds out.
    const short = this.sockets.size >= ALWAYS_SOCKETS && this.descriptorsLeft() <= this.spec.reserveDescriptors
    if (short || this.sockets.size >= this.spec.maxConnections) {
      const idle = this.oldestIdle()
      if (idle === undefined) return this.refuse(socket, short ? 'descriptors' : 'connections')
      this.refusals.refuse('idle_closed')
      this.sockets.delete(idle)
      idle.destroy()
    }
    this.sockets.set(socket, { busy: false, since: Date.now() })
    socket.once('close', () => { this.sockets.delete(socket) })
    return true
  }

  /** A request arrived on `socket`: it is not idle until its answer is done. */
  busy (socket: net.Socket, res: { once: (event: 'close', f: () => void) => unknown }): void {
    const held = this.sockets.get(socket)
    if (held === undefined) return
    held.busy = true
    res.once('close', () => {
      held.busy = false
      held.since = Date.now()
    })
  }

  private oldestIdle (): net.Socket | undefined {
    let oldest: [net.Socket, Held] | undefined
    for (const entry of this.sockets) {
      if (!entry[1].busy && (oldest === undefined || entry[1].since < oldest[1].since)) oldest = entry
    }
    return oldest?.[0]
  }

  private descriptorsLeft (): number {
    if (this.limit === undefined) return Infinity
    return this.limit - this.base - 2 * this.mqttConnections() - this.sockets.size
  }

  private refuse (socket: net.Socket, reason: RefusalReason): false {
    this.refusals.refuse(reason)
    socket.destroy()
    return false
  }
}
