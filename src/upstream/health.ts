// Whether a broker of a pool takes new clients: active checks (a real MQTT CONNECT, and its
// CONNACK within the timeout) and passive ones (the pool's own dials and the brokers' CONNACKs
// to clients) move a broker between up and down after `failures` failures in a row, and back
// after `recoveries` passed active checks in a row. A TCP accept alone proves nothing: a
// broker that accepts and never answers CONNECT is down.

import type { Duplex } from 'node:stream'
import type { BrokerSocket } from './broker-socket.js'

/** A CONNACK that says the broker cannot serve: 3.1.1 code 3, MQTT 5 0x88 / 0x89. */
export function unavailableCode (code: number): boolean {
  return code === 3 || code === 0x88 || code === 0x89
}

/** CONNECT, MQTT 3.1.1, clean session, keepalive 0, the given client ID (ASCII, < 16 kB). */
export function probeConnect (clientId: string): Buffer {
  const id = Buffer.from(clientId, 'latin1')
  const variable = Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 0, 0, id.length >> 8, id.length & 0xff])
  const remaining = variable.length + id.length
  // Remaining Length is a variable-length integer [MQTT-2.2.3]: two bytes from 128 on.
  const length = remaining < 128 ? [remaining] : [(remaining & 0x7f) | 0x80, remaining >> 7]
  return Buffer.concat([Buffer.from([0x10, ...length]), variable, id])
}

const DISCONNECT = Buffer.from([0xe0, 0])

export type ProbeResult = { ok: true, ms: number, code: number } | { ok: false, ms: number, error: string }

/**
 * One active check: connect, CONNECT, wait for the 4-byte CONNACK. Any answer but "server
 * unavailable" passes (a broker that refuses the probe's credentials is up).
 */
export async function probeBroker (broker: BrokerSocket, clientId: string, timeoutMs: number): Promise<ProbeResult> {
  const start = performance.now()
  const ms = (): number => Math.round(performance.now() - start)
  let socket: Duplex
  try {
    socket = await broker.open(undefined, timeoutMs)
  } catch (err) {
    return { ok: false, ms: ms(), error: (err as Error).message }
  }
  return await new Promise<ProbeResult>((resolve) => {
    let got = Buffer.alloc(0)
    const done = (r: ProbeResult): void => {
      clearTimeout(timer)
      socket.removeAllListeners('data')
      if (r.ok) socket.end(DISCONNECT)
      socket.destroy()
      resolve(r)
    }
    const timer = setTimeout(() => { done({ ok: false, ms: ms(), error: `no CONNACK within ${timeoutMs} ms` }) }, Math.max(1, timeoutMs - ms()))
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk])
      if (got.length < 4) return
      if (got[0] !== 0x20) return done({ ok: false, ms: ms(), error: `answered CONNECT with packet type ${(got[0] ?? 0) >> 4}, not CONNACK` })
      const code = got[3] ?? 0
      done(unavailableCode(code) ? { ok: false, ms: ms(), error: `CONNACK ${code} (server unavailable)` } : { ok: true, ms: ms(), code })
    })
    socket.once('error', (err: Error) => { done({ ok: false, ms: ms(), error: err.message }) })
    socket.once('close', () => { done({ ok: false, ms: ms(), error: 'closed the connection before CONNACK' }) })
    socket.write(probeConnect(clientId))
  })
}

export type BrokerState = 'up' | 'down'

/** One broker's health: counts, thresholds, and what changed. */
export class BrokerHealth {
  state: BrokerState = 'up'
  failuresInRow = 0
  passesInRow = 0
  lastError: string | undefined
  lastCheckMs: number | undefined
  lastCheckAt: number | undefined
  /** Times it went down (the failovers it caused). */
  downs = 0
  /** When the state last changed, and the changes of the last ten minutes (flapping). */
  changedAt = Date.now()
  readonly changes: number[] = []

  constructor (private readonly failures: number, private readonly recoveries: number) {}

  /** A failed check, active or passive. True when this one marked the broker down. */
  failed (error: string): boolean {
    this.lastError = error
    this.passesInRow = 0
    this.failuresInRow++
    if (this.state === 'up' && this.failuresInRow >= this.failures) return this.change('down')
    return false
  }

  /** A passed check. Passive successes (a client's CONNACK 0) only reset the failure count. */
  passed (active: boolean): boolean {
    this.failuresInRow = 0
    if (this.state === 'up' || !active) return false
    this.passesInRow++
    if (this.passesInRow >= this.recoveries) return this.change('up')
    return false
  }

  /** State changes within the last `windowMs`. */
  recentChanges (windowMs = 600_000, now = Date.now()): number {
    while (this.changes.length > 0 && (this.changes[0] ?? 0) < now - windowMs) this.changes.shift()
    return this.changes.length
  }

  private change (to: BrokerState): true {
    this.state = to
    this.changedAt = Date.now()
    this.changes.push(this.changedAt)
    this.failuresInRow = 0
    this.passesInRow = 0
    if (to === 'down') this.downs++
    return true
  }
}
