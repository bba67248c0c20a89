// One load generator of `npm run scale` (bench/scale.ts), a child process driven over IPC: it
// opens its share of idle MQTT 3.1.1 clients at a bounded rate (raw sockets, a hand-made
// CONNECT: an MQTT.js client would cost more memory and CPU than the proxy it measures), holds
// them, sends every one a PINGREQ at once when asked and reports the slowest PINGRESP, and
// closes them. Nothing here decides a verdict: it reports what it saw.

import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { connectPacket } from './mqtt-bytes.js'

export interface ConnectCommand {
  cmd: 'connect'
  /** The proxy's listeners: clients alternate between them (the loopback ephemeral ports run out at ~28 000 per destination). */
  ports: number[]
  tag: string
  /** Global index of this generator's first client (client IDs `tag-i`). */
  first: number
  count: number
  ratePerSecond: number
  concurrency: number
  keepaliveSeconds: number
  timeoutMs: number
  /** A refused CONNECT (CONNACK 3, a worker at limits.maxConnections) is tried again this often, as a device would. */
  retries: number
}
export interface PingCommand { cmd: 'ping', timeoutMs: number }
export type Command = ConnectCommand | PingCommand | { cmd: 'status' } | { cmd: 'close' }

export interface ConnectReport {
  opened: number
  failed: number
  /** Launched and neither answered nor closed by the timeout (a connection nobody serves). */
  unanswered: number
  /** CONNECTs refused and tried again (each retry counts). */
  retried: number
  seconds: number
  firstError: string | undefined
}
export interface PingReport { sent: number, answered: number, maxMs: number, p50Ms: number, p99Ms: number, writeLoopMs: number }
export interface StatusReport { open: number, closedAfterConnack: number }

const HOST = '127.0.0.1'
const PINGREQ = Buffer.from([0xc0, 0x00])
const CONNACK = 2
const PINGRESP = 13

/** One client: a socket and what it waits for. */
interface Client { socket: net.Socket, acked: boolean, pingAt: number }

const clients: Client[] = []
let closedAfterConnack = 0
/** Called with the client whose PINGRESP arrived (set while a ping round runs). */
let onPingresp: ((c: Client) => void) | undefined

/** Our packets are 2 or 4 bytes; a read may hold several (or, rarely, split one). */
function reader (c: Client, onConnack: (ok: boolean) => void): (chunk: Buffer) => void {
  let rest: Buffer | undefined
  return (chunk) => {
    const buf = rest === undefined ? chunk : Buffer.concat([rest, chunk])
    rest = undefined
    let i = 0
    while (i + 2 <= buf.length) {
      const len = 2 + (buf[i + 1] as number)
      if (i + len > buf.length) break
      const type = (buf[i] as number) >> 4
      if (type === CONNACK && !c.acked) onConnack(buf[i + 3] === 0)
      else if (type === PINGRESP) onPingresp?.(c)
      i += len
    }
    if (i < buf.length) rest = buf.subarray(i)
  }
}

async function connect (job: ConnectCommand): Promise<ConnectReport> {
  const started = performance.now()
  let launched = 0
  let inFlight = 0
  let opened = 0
  let failed = 0
  let firstError: string | undefined
  let retried = 0
  return await new Promise<ConnectReport>((resolve) => {
    // Past the timeout the report says how many are still waiting; the coordinator decides.
    const deadline = setTimeout(() => {
      clearInterval(tick)
      resolve({ opened, failed, unanswered: launched - opened - failed, seconds: (performance.now() - started) / 1000, retried, firstError: firstError ?? `${job.count - launched} never launched` })
    }, job.timeoutMs)
    const settle = (): void => {
      inFlight--
      if (opened + failed < job.count) return
      clearTimeout(deadline)
      clearInterval(tick)
      resolve({ opened, failed, unanswered: 0, retried, seconds: (performance.now() - started) / 1000, firstError })
    }
    const launch = (): void => { inFlight++; open(launched++, 0) }
    const open = (i: number, attempt: number): void => {
      const socket = net.connect({ host: HOST, port: job.ports[i % job.ports.length] as number })
      const c: Client = { socket, acked: false, pingAt: 0 }
      let done = false
      const fail = (why: string): void => {
        if (done) return
        done = true
        failed++
        firstError ??= why
        socket.destroy()
        settle()
      }
      socket.once('connect', () => { socket.write(connectPacket(`${job.tag}-${job.first + i}`, job.keepaliveSeconds)) })
      socket.on('data', reader(c, (ok) => {
        if (!ok && attempt < job.retries) {
          done = true
          retried++
          socket.destroy()
          setTimeout(() => { open(i, attempt + 1) }, 100 + Math.random() * 200)
          return
        }
        if (!ok) { fail('CONNACK refused'); return }
        c.acked = true
        clients.push(c)
        done = true
        opened++
        settle()
      }))
      socket.on('error', (err) => { fail(err.message) })
      socket.once('close', () => {
        if (c.acked) closedAfterConnack++
        else fail('closed before CONNACK')
      })
    }
    // A bounded rate (a schedule of ratePerSecond) and at most `concurrency` handshakes at once.
    const tick = setInterval(() => {
      const due = Math.min(job.count, Math.floor((performance.now() - started) / 1000 * job.ratePerSecond) + 1)
      while (launched < due && inFlight < job.concurrency) launch()
    }, 5)
  })
}

async function ping (timeoutMs: number): Promise<PingReport> {
  const open = clients.filter((c) => !c.socket.destroyed)
  const latencies: number[] = []
  const t0 = performance.now()
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs)
    onPingresp = (c) => {
      if (c.pingAt !== t0) return
      c.pingAt = -1
      latencies.push(performance.now() - t0)
      if (latencies.length === open.length) { clearTimeout(timer); resolve() }
    }
  })
  // Every PINGREQ at once: each client's time counts from the start of this loop.
  for (const c of open) { c.pingAt = t0; c.socket.write(PINGREQ) }
  const writeLoopMs = performance.now() - t0
  await done
  onPingresp = undefined
  latencies.sort((a, b) => a - b)
  const at = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN
  return { sent: open.length, answered: latencies.length, maxMs: latencies.at(-1) ?? NaN, p50Ms: at(0.5), p99Ms: at(0.99), writeLoopMs }
}

/** Destroys every socket; bounded wait for their close events. */
async function closeAll (): Promise<number> {
  const closing = clients.map(async (c) => await new Promise<void>((resolve) => {
    if (c.socket.closed) { resolve(); return }
    c.socket.once('close', () => { resolve() })
    c.socket.destroy()
  }))
  await Promise.race([Promise.all(closing), new Promise((resolve) => setTimeout(resolve, 10_000))])
  return clients.length
}

async function handle (command: Command): Promise<unknown> {
  switch (command.cmd) {
    case 'connect': return await connect(command)
    case 'ping': return await ping(command.timeoutMs)
    case 'status': return { open: clients.filter((c) => !c.socket.destroyed).length, closedAfterConnack } satisfies StatusReport
    case 'close': return await closeAll()
  }
}

process.on('message', (msg: { id: number, command: Command }) => {
  handle(msg.command).then(
    (result) => { process.send?.({ id: msg.id, ok: true, result }) },
    (err: unknown) => { process.send?.({ id: msg.id, ok: false, error: err instanceof Error ? err.message : String(err) }) }
  )
})
// The coordinator gone (it ended, or was killed): nobody will ask us to close.
process.on('disconnect', () => { process.exit(0) })
