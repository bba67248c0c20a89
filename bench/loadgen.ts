// The load generator: a child process of the runner, driven over IPC, one job at a time.
// Lean on purpose: precomputed PUBLISH buffers, packets split by their fixed header only,
// PUBACKs batched per read. Everything is bounded by count and by a deadline.

import net from 'node:net'
import { rendezvousOrder } from '../src/upstream/balance.js'
import { treeCpuTicks, treeRssKiB } from './proc.js'
import { connectPacket, DISCONNECT, publishPacket, pubackPacket, Splitter, subscribePacket, TYPE, type Credentials, type PacketHandler } from './mqtt-bytes.js'
import type {
  CpuReading, FixedRateJob, FixedRateResult, IdleJob, IdleResult, Job, JobResult, LatencyJob, LatencyResult,
  Reply, Request, ThroughputJob, ThroughputResult, Watched
} from './jobs.js'

const HOST = '127.0.0.1'
const SETUP_TIMEOUT_MS = 10_000
const DRAIN_TIMEOUT_MS = 5_000

const delay = (ms: number): Promise<void> => new Promise((resolve) => { setTimeout(resolve, ms) })

/** One MQTT client connection: a socket, a splitter, a packet handler and an after-read hook. */
class Client {
  readonly socket: net.Socket
  onPacket: PacketHandler = () => {}
  afterRead: () => void = () => {}
  closed = false

  private constructor (port: number) {
    this.socket = net.connect({ port, host: HOST, noDelay: true })
    const splitter = new Splitter((buf, start, body, end) => { this.onPacket(buf, start, body, end) })
    this.socket.on('data', (chunk: Buffer) => {
      splitter.push(chunk)
      this.afterRead()
    })
    this.socket.on('close', () => { this.closed = true })
    this.socket.on('error', () => { this.closed = true })
  }

  /** Connects and waits for a successful CONNACK. */
  static async open (port: number, clientId: string, credentials?: Credentials): Promise<Client> {
    const client = new Client(port)
    await client.exchange(connectPacket(clientId, 0, credentials), TYPE.connack, (buf, body) => {
      const code = buf[body + 1] as number
      if (code !== 0) throw new Error(`CONNACK return code ${code} for ${clientId}`)
    })
    return client
  }

  async subscribe (topic: string, qos: 0 | 1): Promise<void> {
    await this.exchange(subscribePacket(1, topic, qos), TYPE.suback, (buf, body) => {
      if (buf[body + 2] === 0x80) throw new Error(`SUBSCRIBE ${topic} refused`)
    })
  }

  /** Sends `bytes` and waits (bounded) for the first packet of type `type`. */
  private async exchange (bytes: Buffer, type: number, check: (buf: Buffer, body: number) => void): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { finish(new Error(`no answer of type ${type} within ${SETUP_TIMEOUT_MS} ms`)) }, SETUP_TIMEOUT_MS)
      const onGone = (): void => { finish(new Error(`connection closed while waiting for packet type ${type}`)) }
      const finish = (err?: Error): void => {
        clearTimeout(timer)
        this.onPacket = () => {}
        this.socket.removeListener('close', onGone)
        if (err === undefined) resolve()
        else { this.socket.destroy(); reject(err) }
      }
      this.onPacket = (buf, start, body) => {
        if ((buf[start] as number) >> 4 !== type) return
        try {
          check(buf, body)
          finish()
        } catch (err) {
          finish(err as Error)
        }
      }
      this.socket.once('close', onGone)
      this.socket.write(bytes)
    })
  }

  close (): void {
    if (this.closed) return
    this.socket.end(DISCONNECT)
    setTimeout(() => { this.socket.destroy() }, 1000).unref()
  }
}

/** Where the payload of a PUBLISH starts, from its variable header. */
function payloadStart (buf: Buffer, start: number, body: number): number {
  const qos = ((buf[start] as number) >> 1) & 3
  return body + 2 + buf.readUInt16BE(body) + (qos > 0 ? 2 : 0)
}

function publishId (buf: Buffer, body: number): number {
  return buf.readUInt16BE(body + 2 + buf.readUInt16BE(body))
}

/** Writes the PUBACKs gathered during one read as one buffer. */
function flushAcks (socket: net.Socket, acks: number[]): void {
  if (acks.length === 0) return
  const out = Buffer.allocUnsafe(acks.length * 4)
  for (let i = 0; i < acks.length; i++) {
    const id = acks[i] as number
    out[i * 4] = 0x40
    out[i * 4 + 1] = 2
    out[i * 4 + 2] = id >> 8
    out[i * 4 + 3] = id & 0xff
  }
  acks.length = 0
  socket.write(out)
}

// ---- CPU of the watched processes over a window --------------------------------------------

interface CpuMark { ticks: Record<string, number>, own: NodeJS.CpuUsage, at: bigint }

function markCpu (watch: Watched): CpuMark {
  // Each watched process with its descendants: a target with workers is its whole tree.
  return { ticks: treeCpuTicks(watch), own: process.cpuUsage(), at: process.hrtime.bigint() }
}

function cpuSince (mark: CpuMark, watch: Watched, clkTck: number, messages: number): { cpu: Record<string, CpuReading>, seconds: number, generatorUtilisation: number } {
  const seconds = Number(process.hrtime.bigint() - mark.at) / 1e9
  const cpu: Record<string, CpuReading> = {}
  const ticks = treeCpuTicks(watch)
  for (const role of Object.keys(watch)) {
    const used = ((ticks[role] ?? 0) - (mark.ticks[role] ?? 0)) / clkTck
    cpu[role] = { seconds: used, utilisation: used / seconds, usPerMessage: messages > 0 ? used * 1e6 / messages : 0 }
  }
  const own = process.cpuUsage(mark.own)
  return { cpu, seconds, generatorUtilisation: (own.user + own.system) / 1e6 / seconds }
}

// ---- pairs of publisher and subscriber -----------------------------------------------------

interface Pair {
  pub: Client
  sub: Client
  sent: number
  delivered: number
  /** QoS 1: one immutable PUBLISH per packet ID; `free` lists the IDs without a pending PUBACK. */
  pool: Buffer[]
  free: number[]
  acks: number[]
}

/**
 * The client IDs of pair i. With several brokers behind the target (balance client-id), the
 * subscriber's ID is the first `<tag>-s<i>-<k>` that hashes to the publisher's broker, the
 * way the proxy hashes (src/upstream/balance.ts), so the pair meets on one broker.
 */
function pairIds (tag: string, i: number, brokers: string[] | undefined): [string, string] {
  const pub = `${tag}-p${i}`
  if (brokers === undefined || brokers.length < 2) return [pub, `${tag}-s${i}`]
  const targets = brokers.map((key) => ({ key: key.toLowerCase(), weight: 1 }))
  const home = rendezvousOrder(targets, pub)[0]
  for (let k = 0; ; k++) {
    const sub = `${tag}-s${i}-${k}`
    if (rendezvousOrder(targets, sub)[0] === home) return [pub, sub]
  }
}

async function openPairs (job: { port: number, tag: string, credentials?: Credentials | undefined, brokers?: string[] | undefined }, count: number, qos: 0 | 1, payloadBytes: number, window: number): Promise<{ pairs: Pair[], qos0: Buffer[] }> {
  const payload = Buffer.alloc(payloadBytes, 0x61)
  const qos0: Buffer[] = []
  const pairs = await Promise.all(Array.from({ length: count }, async (_, i): Promise<Pair> => {
    const topic = `bench/${job.tag}/${i}`
    const [pubId, subId] = pairIds(job.tag, i, job.brokers)
    const [pub, sub] = await Promise.all([Client.open(job.port, pubId, job.credentials), Client.open(job.port, subId, job.credentials)])
    await sub.subscribe(topic, qos)
    qos0[i] = publishPacket(topic, payload, 0).bytes
    const pool: Buffer[] = []
    const free: number[] = []
    if (qos === 1) {
      for (let id = 1; id <= window; id++) {
        pool[id] = publishPacket(topic, payload, 1, id).bytes
        free.push(id)
      }
    }
    return { pub, sub, sent: 0, delivered: 0, pool, free, acks: [] }
  }))
  return { pairs, qos0 }
}

function closePairs (pairs: Pair[]): void {
  for (const p of pairs) { p.pub.close(); p.sub.close() }
}

/** Waits until every pair has seen all it published delivered and acknowledged (bounded). */
async function drain (pairs: Pair[], window: number): Promise<number> {
  const end = Date.now() + DRAIN_TIMEOUT_MS
  const settled = (): boolean => pairs.every((p) => p.delivered >= p.sent && (p.pool.length === 0 || p.free.length === window))
  while (!settled() && Date.now() < end && !pairs.some((p) => p.pub.closed || p.sub.closed)) await delay(10)
  return pairs.reduce((n, p) => n + Math.max(0, p.sent - p.delivered), 0)
}

function countDelivered (pairs: Pair[]): number {
  return pairs.reduce((n, p) => n + p.delivered, 0)
}

/** Subscriber side: count PUBLISHes, gather PUBACKs, flush them after the read. */
function wireSubscriber (pair: Pair, qos: 0 | 1, afterDelivery: () => void): void {
  pair.sub.onPacket = (buf, start, body) => {
    if ((buf[start] as number) >> 4 !== TYPE.publish) return
    pair.delivered++
    if (qos === 1) pair.acks.push(publishId(buf, body))
  }
  pair.sub.afterRead = () => {
    flushAcks(pair.sub.socket, pair.acks)
    afterDelivery()
  }
}

function wirePubacks (pair: Pair, afterRead: () => void): void {
  pair.pub.onPacket = (buf, start, body) => {
    if ((buf[start] as number) >> 4 === TYPE.puback) pair.free.push(buf.readUInt16BE(body))
  }
  pair.pub.afterRead = afterRead
}

async function throughput (job: ThroughputJob): Promise<ThroughputResult> {
  const { pairs, qos0 } = await openPairs(job, job.pairs, job.qos, job.payloadBytes, job.window)
  let running = false
  const pump = (pair: Pair, i: number): void => {
    if (!running) return
    const socket = pair.pub.socket
    socket.cork()
    while (pair.sent - pair.delivered < job.endToEndWindow) {
      if (job.qos === 0) {
        socket.write(qos0[i] as Buffer)
      } else {
        const id = pair.free.pop()
        if (id === undefined) break
        socket.write(pair.pool[id] as Buffer)
      }
      pair.sent++
    }
    socket.uncork()
  }
  try {
    pairs.forEach((pair, i) => {
      wireSubscriber(pair, job.qos, () => { pump(pair, i) })
      wirePubacks(pair, () => { pump(pair, i) })
    })
    running = true
    pairs.forEach(pump)
    await delay(job.warmupMs)
    const mark = markCpu(job.watch)
    const before = countDelivered(pairs)
    await delay(job.durationMs)
    const delivered = countDelivered(pairs) - before
    const { cpu, seconds, generatorUtilisation } = cpuSince(mark, job.watch, job.clkTck, delivered)
    running = false
    const lost = await drain(pairs, job.window)
    if (pairs.some((p) => p.pub.closed || p.sub.closed)) throw new Error('a connection closed during the run')
    return { delivered, seconds, rate: delivered / seconds, lost, cpu, generatorUtilisation }
  } finally {
    running = false
    closePairs(pairs)
  }
}

async function latency (job: LatencyJob): Promise<LatencyResult> {
  const { pairs } = await openPairs(job, 1, job.qos, job.payloadBytes, 0)
  const pair = pairs[0] as Pair
  const { bytes, payloadOffset } = publishPacket(`bench/${job.tag}/0`, Buffer.alloc(Math.max(8, job.payloadBytes), 0x61), job.qos, 1)
  const total = job.warmup + job.samples
  const times = new Float64Array(job.samples)
  let count = 0
  let delivered = true
  let acked = true
  try {
    return await new Promise<LatencyResult>((resolve, reject) => {
      const deadline = setTimeout(() => { finish() }, job.maxMs)
      const finish = (): void => {
        clearTimeout(deadline)
        const n = Math.max(0, count - job.warmup)
        if (n === 0) { reject(new Error('no latency sample within the time limit')); return }
        const sorted = times.slice(0, n).sort()
        const at = (q: number): number => (sorted[Math.min(n - 1, Math.floor(q * n))] as number) / 1000
        let sum = 0
        for (const v of sorted) sum += v
        resolve({ samples: n, p50Us: at(0.5), p99Us: at(0.99), meanUs: sum / n / 1000, maxUs: (sorted[n - 1] as number) / 1000 })
      }
      const next = (): void => {
        if (!delivered || !acked) return
        if (count >= total) { finish(); return }
        delivered = false
        acked = job.qos === 0
        bytes.writeBigUInt64BE(process.hrtime.bigint(), payloadOffset)
        pair.pub.socket.write(bytes)
      }
      pair.sub.onPacket = (buf, start, body) => {
        if ((buf[start] as number) >> 4 !== TYPE.publish) return
        const elapsed = process.hrtime.bigint() - buf.readBigUInt64BE(payloadStart(buf, start, body))
        if (count >= job.warmup) times[count - job.warmup] = Number(elapsed)
        count++
        if (job.qos === 1) pair.sub.socket.write(pubackPacket(publishId(buf, body)))
        delivered = true
        next()
      }
      pair.pub.onPacket = (buf, start) => {
        if ((buf[start] as number) >> 4 !== TYPE.puback) return
        acked = true
        next()
      }
      const gone = (): void => { clearTimeout(deadline); reject(new Error('a connection closed during the run')) }
      pair.pub.socket.once('close', gone)
      pair.sub.socket.once('close', gone)
      next()
    })
  } finally {
    closePairs(pairs)
  }
}

async function fixedRate (job: FixedRateJob): Promise<FixedRateResult> {
  const { pairs } = await openPairs(job, job.pairs, 1, job.payloadBytes, job.window)
  let scheduled = 0
  let behind = 0
  let rr = 0
  const maxPerTick = Math.ceil(job.rate / 100)
  const started = process.hrtime.bigint()
  const tick = (): void => {
    const due = Math.floor(Number(process.hrtime.bigint() - started) / 1e9 * job.rate) - scheduled
    const n = Math.min(due, maxPerTick)
    scheduled += due
    for (let k = 0; k < n; k++) {
      const pair = pairs[rr] as Pair
      rr = (rr + 1) % pairs.length
      const id = pair.free.pop()
      if (id === undefined) { behind++; continue }
      pair.pub.socket.write(pair.pool[id] as Buffer)
      pair.sent++
    }
    behind += due - n
  }
  let timer: NodeJS.Timeout | undefined
  try {
    for (const pair of pairs) {
      wireSubscriber(pair, 1, () => {})
      wirePubacks(pair, () => {})
    }
    timer = setInterval(tick, 1)
    await delay(job.warmupMs)
    const mark = markCpu(job.watch)
    const before = countDelivered(pairs)
    const behindBefore = behind
    await delay(job.durationMs)
    const delivered = countDelivered(pairs) - before
    const { cpu, seconds, generatorUtilisation } = cpuSince(mark, job.watch, job.clkTck, delivered)
    const windowUs: [number, number] = [Number(mark.at / 1000n), Number(process.hrtime.bigint() / 1000n)]
    clearInterval(timer)
    const lost = await drain(pairs, job.window)
    if (pairs.some((p) => p.pub.closed || p.sub.closed)) throw new Error('a connection closed during the run')
    return { delivered, seconds, rate: delivered / seconds, behind: behind - behindBefore, lost, cpu, generatorUtilisation, windowUs }
  } finally {
    clearInterval(timer)
    closePairs(pairs)
  }
}

async function idle (job: IdleJob): Promise<IdleResult> {
  const before = treeRssKiB(job.watch)
  const sockets: net.Socket[] = []
  const acked = new Set<net.Socket>()
  let launched = 0
  let failed = 0
  let lostAfterConnack = 0
  const mark = markCpu(job.watch)
  const started = process.hrtime.bigint()
  try {
    await new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => { reject(new Error(`only ${acked.size} of ${job.connections} connections within ${job.timeoutMs} ms`)) }, job.timeoutMs)
      const settled = (): void => {
        if (acked.size + failed < job.connections) { launch(); return }
        clearTimeout(deadline)
        resolve()
      }
      const launch = (): void => {
        if (launched >= job.connections) return
        const i = launched++
        const socket = net.connect({ port: job.port, host: HOST })
        sockets.push(socket)
        let done = false
        socket.once('connect', () => { socket.write(connectPacket(`${job.tag}-${i}`, 0, job.credentials)) })
        socket.on('data', (chunk: Buffer) => {
          if (done) return
          done = true
          if (chunk[0] === 0x20 && chunk[3] === 0) acked.add(socket)
          else { failed++; socket.destroy() }
          settled()
        })
        socket.on('error', () => {})
        socket.once('close', () => {
          if (acked.has(socket)) { lostAfterConnack++; return }
          if (done) return
          done = true
          failed++
          settled()
        })
      }
      for (let k = 0; k < job.concurrency; k++) launch()
    })
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    const { cpu } = cpuSince(mark, job.watch, job.clkTck, acked.size)
    const windowUs: [number, number] = [Number(mark.at / 1000n), Number(process.hrtime.bigint() / 1000n)]
    await delay(job.holdMs)
    const rss: IdleResult['rss'] = {}
    const afterAll = treeRssKiB(job.watch)
    for (const role of Object.keys(job.watch)) {
      const after = afterAll[role] ?? 0
      const beforeKiB = before[role] ?? 0
      rss[role] = { beforeKiB, afterKiB: after, perConnectionKiB: acked.size > 0 ? (after - beforeKiB) / acked.size : 0 }
    }
    return { requested: job.connections, opened: acked.size, failed, held: acked.size - lostAfterConnack, seconds, rate: acked.size / seconds, cpu, rss, windowUs }
  } finally {
    await closeAll(sockets)
  }
}

/** Destroys every socket and waits (bounded) for their 'close' events. */
async function closeAll (sockets: net.Socket[]): Promise<void> {
  const open = sockets.filter((s) => !s.destroyed || !s.closed)
  await Promise.race([
    Promise.all(open.map((s) => new Promise<void>((resolve) => {
      if (s.closed) { resolve(); return }
      s.once('close', () => { resolve() })
      s.destroy()
    }))),
    delay(DRAIN_TIMEOUT_MS)
  ])
}

export async function runJob (job: Job): Promise<JobResult> {
  switch (job.kind) {
    case 'throughput': return await throughput(job)
    case 'latency': return await latency(job)
    case 'fixed-rate': return await fixedRate(job)
    case 'idle': return await idle(job)
  }
}

// Driven by the runner over IPC; exits when the runner goes away.
if (process.send !== undefined) {
  process.on('disconnect', () => { process.exit(0) })
  process.on('message', (message: Request) => {
    runJob(message.job).then(
      (result) => { process.send?.({ id: message.id, ok: true, result } satisfies Reply) },
      (err: unknown) => { process.send?.({ id: message.id, ok: false, error: err instanceof Error ? err.message : String(err) } satisfies Reply) }
    )
  })
}
