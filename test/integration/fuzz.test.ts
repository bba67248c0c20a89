// A bounded, seeded fuzz run: random bytes and mutated valid packets of every type, MQTT 3.1.1
// and 5, each on a raw connection of its own, against a proxy in front of a private Mosquitto.
// Twice: once forwarding packets undecoded (no plugin wants them, the default), once decoding
// every packet (a plugin observes them all and awaits on each PUBLISH). Throughout, a 3.1.1 and
// a 5 MQTT.js client exchange numbered QoS 1 messages through the proxy and must lose nothing;
// every fuzz connection must end with one logged close, the proxy must keep serving, and every
// connection object must be collected afterwards. Where the spec or the proxy's own contract
// decides, a case also says how the proxy must close it (fuzz-packets.ts works that out from the
// fixed header, or from what the mutation did). bad-input.test.ts has the hand-picked cases.
//
// Replay: MQTT_GUARD_FUZZ_SEED=<seed> (printed first), and MQTT_GUARD_FUZZ_CASE=<index> for one.

import v8 from 'node:v8'
import { runInNewContext } from 'node:vm'
import { EventEmitter } from 'node:events'
import { setTimeout as delay } from 'node:timers/promises'
import type { MqttClient } from 'mqtt'
import type { Packet } from 'mqtt-packet'
import t from 'tap'
import type { Test } from 'tap'
import { ERRORS, type ErrorCode } from '../../src/errors.js'
import type { Plugin } from '../../src/plugin/api.js'
import { clientV, nextMessage, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { Dice, makeCase, mulberry32, type FuzzCase } from '../helpers/fuzz-packets.js'
import { startMosquitto } from '../helpers/mosquitto.js'
import { cleanupAll, pollUntil } from '../helpers/processes.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import type { LogLine } from '../helpers/log-sink.js'
import { RawMqttClient } from '../helpers/raw-client.js'

t.teardown(cleanupAll)

const SEED = Number(process.env['MQTT_GUARD_FUZZ_SEED'] ?? 0x6d717474) >>> 0
const ONLY = process.env['MQTT_GUARD_FUZZ_CASE'] === undefined ? undefined : Number(process.env['MQTT_GUARD_FUZZ_CASE'])
/** Per mode: at most this many cases, and no new case after this long. */
const CASES = 1500
const WALL_MS = 20_000
const CONCURRENCY = 20
/** How long a case waits for a close nobody promised before it closes the socket itself. */
const QUIET_MS = 300
/** How long a promised close may take. */
const PROMISED_MS = 3000
const LIMITS = { maxPacketSize: 65_536, connectTimeoutMs: 2000 }
const WARM_UP = 100
/** Heap growth allowed over the run: the log sink keeps every line (about 3 KiB a case). */
const HEAP_SLACK = 16 * 1024 * 1024

// A real collection, so that "memory returns to its baseline" is measured, not guessed.
v8.setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void
v8.setFlagsFromString('--no-expose-gc')

/**
 * Proxy gaps this fuzzer found, reported and not fixed here. Their cases keep what they were
 * promised, as TODO assertions: a fix shows up as passing TODOs, and the entry can go.
 */
const KNOWN_GAPS: Array<{ todo: string, applies: (c: FuzzCase) => boolean }> = [
  // None open. Fixed: a repeated MQTT 5 property whose first value was 0, false or empty was
  // not refused (mqtt-packet collects repeats only of truthy values); src/wire/frame-walk.ts.
]

/**
 * How a fuzz connection may end: the proxy's judgement, the broker's, or the client going away.
 * Not GUARD_ERR_PLUGIN (no plugin here fails: it would be an exception in the proxy's own code).
 */
const ENDINGS = new Set(['GUARD_ERR_MALFORMED', 'GUARD_ERR_PROTOCOL', 'GUARD_ERR_PACKET_TOO_LARGE', 'GUARD_ERR_UNSUPPORTED_PROTOCOL',
  'GUARD_ERR_TOPIC_INVALID', 'GUARD_ERR_TOPIC_ALIAS_INVALID', 'GUARD_ERR_CONNECT_TIMEOUT', 'GUARD_ERR_CONNACK_TIMEOUT',
  'client-closed', 'client-disconnect', 'client-error', 'broker-closed', 'broker-refused', 'broker-error'])

const hex = (b: Buffer): string => b.subarray(0, 48).toString('hex').replace(/(..)(?!$)/g, '$1 ') + (b.length > 48 ? ` … (${b.length} bytes)` : '')

/** Every packet decoded, and a PUBLISH hook that awaits: the lanes queue behind it. */
const decodeAll: Plugin = {
  name: 'fuzz-decode-all',
  observe: () => {},
  in: { publish: async () => { await new Promise(setImmediate) } }
}

/** A 3.1.1 and a 5 client send each other numbered QoS 1 messages until stopped. */
async function exchange (t: Test, url: string) {
  const tag = Math.random().toString(36).slice(2, 10)
  const clients = [await clientV(t, url, 4, { clientId: `fuzz-steady-4-${tag}` }), await clientV(t, url, 5, { clientId: `fuzz-steady-5-${tag}` })] as const
  const topics = [uniqueTopic('fuzz-from-4'), uniqueTopic('fuzz-from-5')] as const
  const sent = [0, 0]
  const received: number[][] = [[], []]
  const arrived = new EventEmitter()
  let closes = 0
  let running = true
  for (const [i, c] of clients.entries()) {
    c.on('close', () => { closes++ })
    c.on('message', (_topic, payload) => { received[i]?.push(Number(payload.toString())); arrived.emit('message') })
    await c.subscribeAsync(topics[1 - i] as string, { qos: 1 })
  }
  const loop = async (i: number, c: MqttClient): Promise<void> => {
    while (running) {
      await c.publishAsync(topics[i] as string, String(sent[i]), { qos: 1 })
      sent[i] = (sent[i] ?? 0) + 1
      await delay(3) // pacing, not synchronisation
    }
  }
  const loops = Promise.all(clients.map(async (c, i) => { await loop(i, c) }))
  const allIn = (): boolean => received[1]?.length === sent[0] && received[0]?.length === sent[1]
  return {
    stop: async () => {
      running = false
      const failure = await loops.then(() => undefined, (err: unknown) => err)
      if (!allIn()) {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => { reject(new Error(`received ${String(received.map((r) => r.length))} of ${String(sent)} after 5 s`)) }, 5000)
          arrived.on('message', () => { if (allIn()) { clearTimeout(timer); resolve() } })
        })
      }
      return { sent, received, closes, failure }
    }
  }
}

interface Outcome {
  c: FuzzCase
  id: string
  /** The proxy (or the broker behind it) closed the socket before the case gave up waiting. */
  closed: boolean
  /** Packets the client received after the fuzz bytes went out. */
  after: Packet[]
}

/** What the proxy must close a case with in this mode, if the case promises anything. */
function expectedFor (c: FuzzCase, decoding: boolean): string[] | undefined {
  return c.framing ?? (decoding || c.connect === undefined ? c.decoded : undefined)
}

/** One case on a fresh connection: CONNECT first (relay cases), the fuzz bytes, a close or a deadline. */
async function runCase (proxy: TestProxy, c: FuzzCase, decoding: boolean, track: (id: string) => void): Promise<Outcome> {
  const from = proxy.logs.lines.length
  const raw = await RawMqttClient.open(proxy.port, c.version)
  try {
    const opened = await proxy.logs.waitFor((l) => l.msg === 'connection opened' && l.port === raw.localPort && proxy.logs.lines.indexOf(l) >= from, 5000)
    const id = String(opened['conn'])
    track(id)
    if (c.connect !== undefined) {
      const connack = raw.next('connack', 5000)
      raw.send(c.connect)
      const { reasonCode, returnCode } = await connack
      if ((reasonCode ?? returnCode) !== 0) throw new Error(`valid CONNECT refused: ${String(reasonCode ?? returnCode)}`)
    }
    const mark = raw.packets.length
    let at = 0
    for (const cut of [...c.splits, c.bytes.length]) {
      raw.send(c.bytes.subarray(at, cut))
      at = cut
      if (cut < c.bytes.length) await new Promise(setImmediate) // separate reads, as a slow client makes them
    }
    const promised = c.mustClose || expectedFor(c, decoding) !== undefined
    const closed = await raw.waitClose(promised ? PROMISED_MS : QUIET_MS).then(() => true, () => false)
    return { c, id, closed, after: raw.packets.slice(mark) }
  } finally {
    await raw.destroy()
  }
}

/** Runs cases with bounded concurrency until there are no more or it is `stopAt`. */
async function runBatch (cases: () => FuzzCase | undefined, stopAt: number, each: (c: FuzzCase) => Promise<void>): Promise<void> {
  const worker = async (): Promise<void> => {
    for (let c = cases(); c !== undefined && Date.now() < stopAt; c = cases()) await each(c)
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
}

/** What went wrong with one case, or undefined; `line` is its 'connection closed' log line. */
function judge (o: Outcome, line: Record<string, unknown> | undefined, decoding: boolean): string | undefined {
  const expected = expectedFor(o.c, decoding)
  const reason = String(line?.['reason'])
  if (!ENDINGS.has(reason)) return `closed with ${reason} (${String(line?.['detail'])})`
  if (expected !== undefined && !expected.includes(reason)) return `closed with ${reason}, expected ${expected.join(' or ')}`
  if ((expected !== undefined || o.c.mustClose) && !o.closed) return `still open after ${PROMISED_MS} ms`
  const connack = o.after.find((p) => p.cmd === 'connack')
  if (o.c.connack !== undefined && connack?.returnCode !== o.c.connack) return `CONNACK ${String(connack?.returnCode)}, expected ${o.c.connack}`
  const disconnect = o.after.find((p) => p.cmd === 'disconnect')
  if (expected !== undefined && o.c.version === 5 && o.c.connect !== undefined) {
    // After CONNACK an MQTT 5 server says why before it closes: DISCONNECT with the reason code (4.13.2)
    const want = ERRORS[reason as ErrorCode].reason
    if (disconnect?.reasonCode !== want) return `DISCONNECT ${String(disconnect?.reasonCode)}, expected ${String(want)} for ${reason}`
  }
  return undefined
}

/** A run's cases, in order from the seed; only case ONLY when that is set. */
function caseSource (): () => FuzzCase | undefined {
  const dice = new Dice(mulberry32(SEED))
  let next = 0
  return () => {
    while (next < CASES) {
      const c = makeCase(next++, dice, LIMITS.maxPacketSize)
      if (ONLY === undefined || c.index === ONLY) return c
    }
    return undefined
  }
}

/** Heap in use after a full collection. */
function heapUsed (): number {
  gc()
  return process.memoryUsage().heapUsed
}

const openSockets = (): number => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length

interface Run { outcomes: Outcome[], errors: string[], refs: Map<string, WeakRef<object>>, baseline: number, elapsed: number }

/**
 * Runs the cases against `proxy`: a warm-up, then the heap baseline, then the rest. Each case's
 * Connection object is watched through a WeakRef, to tell later whether anything still holds it.
 */
async function fuzz (proxy: TestProxy, decoding: boolean): Promise<Run> {
  const startedAt = Date.now()
  const cases = caseSource()
  const run: Run = { outcomes: [], errors: [], refs: new Map(), baseline: 0, elapsed: 0 }
  const track = (id: string): void => {
    for (const conn of proxy.server.connections) if (conn.id === id) run.refs.set(id, new WeakRef(conn))
  }
  const each = async (c: FuzzCase): Promise<void> => {
    try {
      run.outcomes.push(await runCase(proxy, c, decoding, track))
    } catch (err) {
      run.errors.push(`#${c.index} ${c.name}: ${err instanceof Error ? err.message : String(err)} (bytes ${hex(c.bytes)})`)
    }
  }
  let warming = WARM_UP
  await runBatch(() => warming-- > 0 ? cases() : undefined, startedAt + WALL_MS, each)
  run.baseline = heapUsed()
  await runBatch(cases, startedAt + WALL_MS, each)
  run.elapsed = Date.now() - startedAt
  return run
}

/** Each fuzz connection's 'connection closed' lines, waiting a little for any not logged yet. */
async function closeLines (proxy: TestProxy, ids: string[]): Promise<Map<string, LogLine[]>> {
  const byConn = (): Map<string, LogLine[]> => {
    const map = new Map<string, LogLine[]>()
    for (const l of proxy.logs.lines) if (l.msg === 'connection closed') map.set(String(l['conn']), [...map.get(String(l['conn'])) ?? [], l])
    return map
  }
  const now = byConn()
  for (const id of ids.filter((i) => !now.has(i))) {
    await proxy.logs.waitFor((l) => l.conn === id && l.msg === 'connection closed', 5000).catch(() => undefined)
  }
  return byConn()
}

/** Every fuzz connection closed once, with a reason, and as its case promised. */
async function checkCloses (t: Test, proxy: TestProxy, outcomes: Outcome[], decoding: boolean): Promise<void> {
  const lines = await closeLines(proxy, outcomes.map((o) => o.id))
  const problems: string[] = []
  const gaps = KNOWN_GAPS.map(() => [] as string[])
  const reasons = new Map<string, number>()
  for (const o of outcomes) {
    const mine = lines.get(o.id) ?? []
    const reason = String(mine[0]?.['reason'])
    reasons.set(reason, (reasons.get(reason) ?? 0) + 1)
    const problem = mine.length === 1 ? judge(o, mine[0], decoding) : `${mine.length} 'connection closed' lines`
    if (problem === undefined) continue
    const said = `#${o.c.index} ${o.c.name}: ${problem} (conn ${o.id}, bytes ${hex(o.c.bytes)})`
    const gap = mine.length === 1 ? KNOWN_GAPS.findIndex((g) => g.applies(o.c)) : -1
    if (gap >= 0) gaps[gap]?.push(said)
    else problems.push(said)
  }
  t.comment(`closed with ${[...reasons].sort((a, b) => b[1] - a[1]).map(([r, n]) => `${r} ${n}`).join(', ')}`)
  t.same(problems.slice(0, 25), [], `${problems.length} of ${outcomes.length} cases closed other than promised (first 25 shown)`)
  for (const [i, { todo }] of KNOWN_GAPS.entries()) {
    t.same(gaps[i]?.slice(0, 5), [], `known gap: ${gaps[i]?.length} cases`, { todo })
  }
  t.same(proxy.logs.lines.filter((l) => l.level >= 50), [], 'nothing logged at error or fatal')
}

/** The steady clients lost nothing, and fresh clients still get through. */
async function checkService (t: Test, proxy: TestProxy, steady: Awaited<ReturnType<typeof exchange>>, mode: string): Promise<void> {
  const { sent, received, closes, failure } = await steady.stop()
  t.equal(failure, undefined, 'no steady publish failed')
  t.equal(closes, 0, 'the steady clients were never disconnected')
  for (const [i, from] of [[1, 0], [0, 1]] as const) {
    const n = sent[from] ?? 0
    t.ok(ONLY !== undefined || n > 100, `the v${from === 0 ? 4 : 5} client published ${n} messages during the run`)
    t.same(received[i], Array.from({ length: n }, (_, k) => k), `all ${n} arrived once, in order`)
  }
  for (const version of [4, 5] as const) {
    const fresh = await clientV(t, proxy.url, version, { clientId: `fuzz-fresh-${mode}-${version}` })
    const topic = uniqueTopic(`fuzz-fresh-${version}`)
    await fresh.subscribeAsync(topic, { qos: 1 })
    const got = nextMessage(fresh, topic)
    await fresh.publishAsync(topic, 'still here', { qos: 1 })
    t.equal((await got).payload, 'still here', `a fresh v${version} client still gets through`)
    await fresh.endAsync()
  }
}

/** Afterwards nothing is left: connections, sockets, Connection objects, heap. */
async function checkReleased (t: Test, proxy: TestProxy, run: Run, sockets: number): Promise<void> {
  // No event says "every socket closed" or "collected": these are polled, with a deadline.
  const settled = (): boolean => proxy.server.connections.size <= 2 && openSockets() <= sockets
  await pollUntil('connections and sockets to close', 5000, () => settled() ? true : undefined).catch(() => undefined)
  t.ok(proxy.server.connections.size <= 2, `${proxy.server.connections.size} connections left (at most the steady clients')`)
  t.ok(openSockets() <= sockets, `${openSockets()} TCP sockets open, ${sockets} before the run`)
  const alive = (): string[] => [...run.refs].filter(([, ref]) => ref.deref() !== undefined).map(([id]) => id)
  await pollUntil('fuzz connections to be collected', 5000, async () => {
    gc()
    await new Promise(setImmediate) // a WeakRef clears after the job that collected its target
    return alive().length === 0 ? true : undefined
  }).catch(() => undefined)
  t.same(alive().slice(0, 20), [], `all ${run.refs.size} fuzz connections were collected`)
  const after = heapUsed()
  t.ok(after - run.baseline < HEAP_SLACK, `heap ${(run.baseline / 2 ** 20).toFixed(1)} MiB after warm-up, ${(after / 2 ** 20).toFixed(1)} MiB after the run`)
}

const mosquitto = await startMosquitto({ v5: true })
t.teardown(() => mosquitto.stop())
t.comment(`seed ${SEED} (replay: MQTT_GUARD_FUZZ_SEED=${SEED})`)

for (const mode of ['forwarding', 'decoding'] as const) {
  t.test(`fuzz, proxy ${mode} packets`, async (t) => {
    const decoding = mode === 'decoding'
    const proxy = await startProxy({ config: { upstream: mosquitto.url, limits: LIMITS }, extraPlugins: decoding ? [decodeAll] : [] })
    t.teardown(() => proxy.stop())
    const steady = await exchange(t, proxy.url)
    const sockets = openSockets()
    const run = await fuzz(proxy, decoding)
    t.comment(`${mode}: ${run.outcomes.length + run.errors.length} cases in ${run.elapsed} ms`)
    t.same(run.errors, [], 'every case ran: connected, and its valid CONNECT was accepted')
    t.ok(ONLY !== undefined || run.outcomes.length >= 200, `${run.outcomes.length} cases ran`)
    await checkCloses(t, proxy, run.outcomes, decoding)
    await checkService(t, proxy, steady, mode)
    await checkReleased(t, proxy, run, sockets)
  })
}
