// failover: rehome (issue 21) with three real Mosquittos and an in-process proxy: a client whose
// broker fails keeps its socket; the proxy moves its upstream leg to the client's next broker.
// - the test: one Mosquitto SIGKILLed under QoS 1 traffic from 60 MQTT.js clients
//   (3.1.1 and 5, reconnectPeriod 0, so that any close is final; the broker is SIGSTOPped 150 ms
//   before, so that QoS 1 PUBLISHes are unacknowledged at the kill): no client socket closes,
//   every subscription works on the new broker (a message published there, directly, after the
//   move reaches each client), and every QoS 1 message a moved client published from the
//   failure on is acknowledged and received; a trace shows the second CONNECT on the broker leg,
//   made by the proxy, naming the new broker; figures in the test output;
// - a broker that closes one connection on purpose while it is alive (a takeover: the same
//   client ID connecting to that Mosquitto directly): the proxied client is closed, not moved;
// - drain (POST /upstreams/{n}/drain) on a rehome pool moves the broker's clients without
//   closing them and without their wills being published by the drained broker; GET /upstreams
//   shows the drain and no connection left; DELETE ends it;
// - a hung broker (SIGSTOP) marked down by the health checks: the client's exchanges still open
//   at the move (a QoS 2 delivery past the client's PUBREC, a SUBSCRIBE, an UNSUBSCRIBE) are
//   completed after it.
// Which broker a client went to is read from the 'connection opened' and 'connection re-homed to
// another broker' log lines; the order of brokers from the rendezvous hash (the default balance).

import t, { type Test } from 'tap'
import path from 'node:path'
import { readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import mqtt, { type MqttClient } from 'mqtt'
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { RawMqttClient } from '../helpers/raw-client.js'
import { pollUntil } from '../helpers/processes.js'
import { tempDir } from '../helpers/auth-clients.js'
import { parseExposition, valueOf } from '../helpers/metrics-scrape.js'
import type { LogLine } from '../helpers/log-sink.js'
import type { BrokerView } from '../../src/upstream/pool.js'
import { FAST, MARK_DOWN_MS, SLACK_MS, hashOrder as brokersOf, idsPreferring as idsFor, poolOf, urlOf } from '../helpers/broker-pool.js'
import type { TraceLine } from '../../plugins/trace/format.js'

const MARK_UP_MS = FAST.recoveries * FAST.intervalMs + FAST.timeoutMs + SLACK_MS
const REHOMED = 'connection re-homed to another broker'

let m: Mosquitto[] = []
t.before(async () => {
  m = await Promise.all([startMosquitto(), startMosquitto(), startMosquitto()])
})
t.teardown(async () => { await Promise.all(m.map(async (b) => { await b.stop() })) })

const ports = (): number[] => m.map((b) => b.port)
const urls = (): string[] => ports().map(urlOf)
/** Broker indices in the client's order of preference. */
const hashOrder = (clientId: string): number[] => brokersOf(ports(), clientId)

/** `count` client IDs (`prefix-N`) whose first broker is broker `index`. */
const idsPreferring = (index: number, count: number, prefix: string): string[] => idsFor(ports(), index, count, prefix)

/** The client's next broker when `gone` is not available. */
const nextBroker = (clientId: string, gone: number): number => hashOrder(clientId).filter((i) => i !== gone)[0] as number

async function rehomeProxy (t: Test, extra: Record<string, unknown> = {}): Promise<TestProxy> {
  const proxy = await startProxy({ config: { upstream: { brokers: urls(), healthCheck: FAST, failover: 'rehome' }, admin: '127.0.0.1:0', ...extra } })
  t.teardown(() => proxy.stop())
  return proxy
}


const admin = (proxy: TestProxy, p: string): string => `http://127.0.0.1:${proxy.server.admin?.port ?? 0}${p}`

async function rehomesTotal (proxy: TestProxy): Promise<number | undefined> {
  const res = await fetch(admin(proxy, '/metrics'))
  return valueOf(parseExposition(await res.text()), 'mqtt_guard_upstream_rehomes_total')
}

/** The broker the proxy logged for the connection of `clientId`. */
async function landedOn (proxy: TestProxy, clientId: string): Promise<string> {
  const line = await proxy.logs.waitFor((l) => l.msg === 'connection opened' && l.clientId === clientId, 5000)
  return String(line.broker)
}

const rehomedLines = (proxy: TestProxy): LogLine[] => proxy.logs.lines.filter((l) => l.msg === REHOMED)
const closedLines = (proxy: TestProxy, ids: ReadonlySet<string>): LogLine[] => proxy.logs.lines.filter((l) => l.msg === 'connection closed' && ids.has(String(l.clientId)))
const describeClosed = (lines: LogLine[]): string => lines.map((l) => `${String(l.clientId)}: ${String(l.reason)} (${String(l.detail)})`).join('; ')

/** A plain MQTT.js client straight to a Mosquitto, bypassing the proxy. */
async function direct (t: Test, broker: Mosquitto, clientId: string): Promise<MqttClient> {
  const c = await mqtt.connectAsync(broker.url, { clientId, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000 })
  t.teardown(async () => { await c.endAsync(true) })
  return c
}

interface Sent { publishedAt: number, ackedAt: number | undefined }

interface Peer {
  id: string
  version: 4 | 5
  c: MqttClient
  topic: string
  first: number
  seq: number
  closes: number
  errors: string[]
  sent: Map<string, Sent>
  /** payload → times received */
  got: Map<string, number>
}

t.test('the issue\'s test: a Mosquitto killed under QoS 1 traffic from 60 clients; with rehome no client socket closes and nothing accepted after the kill is lost', { timeout: 90_000 }, async (t) => {
  const victimIndex = 0
  const victim = m[victimIndex] as Mosquitto
  const dir = await tempDir(t, 'mqtt-guard-rehome-')
  const traceFile = path.join(dir, 'trace.jsonl')
  // 20 clients per broker; two of each traced (rh-t-N).
  const ids = [0, 1, 2].flatMap((b) => [...idsPreferring(b, 2, 'rh-t'), ...idsPreferring(b, 18, 'rh')])
  const proxy = await rehomeProxy(t, { plugins: [{ name: 'trace', destination: traceFile, filters: { clientId: 'rh-t-*' } }] })
  let restarted = false
  t.teardown(async () => { if (!restarted) await victim.restart() })

  const peers: Peer[] = []
  for (let i = 0; i < ids.length; i += 10) {
    await Promise.all(ids.slice(i, i + 10).map(async (id, k) => {
      const version = (i + k) % 2 === 0 ? 4 : 5
      const c = await mqtt.connectAsync(proxy.url, { clientId: id, protocolVersion: version, clean: true, reconnectPeriod: 0, connectTimeout: 5000 })
      t.teardown(async () => { await c.endAsync(true) })
      const peer: Peer = { id, version, c, topic: `rehome/kill/${id}`, first: hashOrder(id)[0] as number, seq: 0, closes: 0, errors: [], sent: new Map(), got: new Map() }
      c.on('close', () => { peer.closes++ })
      c.on('error', (err) => { peer.errors.push(err.message) })
      c.on('message', (_topic, payload) => {
        const p = payload.toString()
        peer.got.set(p, (peer.got.get(p) ?? 0) + 1)
      })
      await c.subscribeAsync(peer.topic, { qos: 1 })
      peers.push(peer)
    }))
  }
  peers.sort((a, b) => a.id.localeCompare(b.id))
  t.equal(peers.length, 60, '60 clients connected and subscribed')
  for (const p of peers) {
    const on = await landedOn(proxy, p.id)
    if (on !== urlOf(ports()[p.first] as number)) t.fail(`${p.id} on ${on}, not on its first broker`)
  }
  const moved = peers.filter((p) => p.first === victimIndex)
  const stayed = peers.filter((p) => p.first !== victimIndex)
  t.equal(moved.length, 20, `${moved.length} of ${peers.length} clients on the broker to be killed (${moved.filter((p) => p.version === 5).length} MQTT 5)`)

  // Each client publishes QoS 1 to its own topic (and so receives it) every 250 ms: the clients
  // of the killed broker are publishers through the proxy on that broker.
  const tick = (): void => {
    for (const p of peers) {
      if (!p.c.connected) continue
      const payload = `${p.id}:${++p.seq}`
      const s: Sent = { publishedAt: Date.now(), ackedAt: undefined }
      p.sent.set(payload, s)
      p.c.publish(p.topic, payload, { qos: 1 }, (err) => { if (err == null) s.ackedAt = Date.now() })
    }
  }
  const ticker = setInterval(tick, 250)
  t.teardown(() => { clearInterval(ticker) })
  await pollUntil('traffic flowing to every client', 10_000, () => peers.every((p) => p.got.size >= 2) ? true : undefined)

  // The failure: the broker stops answering (SIGSTOP), a burst of QoS 1 from its clients goes to
  // it unanswered, then it is killed. What it had not acknowledged is in flight at the kill:
  // the proxy must resend it. 150 ms is under what the health checks need to mark it down
  // (two failed checks 300 ms apart): the kill, not the checks, starts the move.
  const failAt = Date.now()
  victim.kill('SIGSTOP')
  const burst = new Set<string>()
  for (const p of moved) {
    for (let k = 0; k < 3; k++) {
      const payload = `${p.id}:burst-${k}`
      const s: Sent = { publishedAt: Date.now(), ackedAt: undefined }
      p.sent.set(payload, s)
      burst.add(payload)
      p.c.publish(p.topic, payload, { qos: 1 }, (err) => { if (err == null) s.ackedAt = Date.now() })
    }
  }
  await new Promise((resolve) => { setTimeout(resolve, 150) })
  const killAt = Date.now()
  victim.kill('SIGKILL')
  const all = await pollUntil(`${moved.length} clients re-homed`, 10_000, () => {
    const lines = rehomedLines(proxy)
    return lines.length >= moved.length ? lines : undefined
  }).catch((err: Error) => {
    const lines = rehomedLines(proxy)
    const done = new Set(lines.map((l) => String(l.clientId)))
    const ids = new Set(moved.map((p) => p.id))
    t.fail(`${err.message}: ${lines.length} re-homed; not re-homed: ${moved.filter((p) => !done.has(p.id)).map((p) => p.id).join(', ')}; closed: ${describeClosed(closedLines(proxy, ids)) || 'none'}`)
    return lines
  })
  const lastMovedAt = Math.max(...all.map((l) => Date.parse(String(l.time))))
  const moveMs = all.map((l) => Number(l.ms))
  const resent = all.reduce((n, l) => n + Number(l.resent), 0)
  t.comment(`killed broker ${victimIndex} (stopped ${killAt - failAt} ms before): ${all.length} of ${moved.length} clients re-homed; the last ${lastMovedAt - killAt} ms after the kill; each move took ${Math.min(...moveMs)}–${Math.max(...moveMs)} ms (log 'ms'); ${resent} PUBLISHes resent with DUP`)
  t.same(all.map((l) => String(l.clientId)).sort(), moved.map((p) => p.id).sort(), 'one re-home per client of the killed broker, none for the others')
  const wrong = all.filter((l) => l.to !== urlOf(ports()[nextBroker(String(l.clientId), victimIndex)] as number) || l.from !== urlOf(victim.port))
  t.same(wrong.map((l) => `${String(l.clientId)}: ${String(l.from)} → ${String(l.to)}`), [], 'each from the killed broker to its next broker in hash order')

  // Traffic goes on for a while on the new brokers, then stops; the last PUBACKs and deliveries come in.
  await new Promise((resolve) => { setTimeout(resolve, 1500) })
  clearInterval(ticker)
  const unsettled = (): Array<[Peer, string]> => peers.flatMap((p) => [...p.sent].filter(([payload, s]) => s.publishedAt >= failAt && (s.ackedAt === undefined || !p.got.has(payload))).map(([payload]) => [p, payload] as [Peer, string]))
  await pollUntil('the PUBACKs and deliveries of what was published after the kill', 5000, () => unsettled().length === 0 ? true : undefined).catch(() => {})

  // Every subscription works on the new broker: a message published straight to the broker each
  // client is on now, after the move, reaches it.
  const publishers = new Map<number, MqttClient>()
  for (const i of [0, 1, 2].filter((b) => b !== victimIndex)) publishers.set(i, await direct(t, m[i] as Mosquitto, `rehome-direct-${i}`))
  await Promise.all(peers.map(async (p) => {
    const on = p.first === victimIndex ? nextBroker(p.id, victimIndex) : p.first
    await publishers.get(on)?.publishAsync(p.topic, `fresh:${p.id}`, { qos: 1 })
  }))
  await pollUntil('the fresh message to every client', 5000, () => peers.every((p) => p.got.has(`fresh:${p.id}`)) ? true : undefined).catch(() => {})
  const noFresh = peers.filter((p) => !p.got.has(`fresh:${p.id}`)).map((p) => p.id)
  t.same(noFresh, [], 'every client receives a message published on its (new) broker after the move: its subscription works there')

  const closes = peers.reduce((n, p) => n + p.closes, 0)
  t.equal(closes, 0, `no client socket closed ('close' events: ${closes})`)
  t.same(peers.filter((p) => !p.c.connected).map((p) => p.id), [], 'all 60 still connected')
  t.same(closedLines(proxy, new Set(peers.map((p) => p.id))).map((l) => `${String(l.clientId)}: ${String(l.reason)}`), [], 'the proxy closed none of them')

  // The figures: QoS 1 published from the failure on by the clients that moved (publishers
  // through the proxy on the killed broker) and by the others.
  const count = (ps: Peer[], pred: (payload: string, s: Sent, p: Peer) => boolean): number => ps.reduce((n, p) => n + [...p.sent].filter(([payload, s]) => pred(payload, s, p)).length, 0)
  const after = (_payload: string, s: Sent): boolean => s.publishedAt >= failAt
  const figures = (ps: Peer[]): { published: number, acked: number, received: number, lost: number, duplicates: number } => ({
    published: count(ps, after),
    acked: count(ps, (x, s) => after(x, s) && s.ackedAt !== undefined),
    received: count(ps, (x, s, p) => after(x, s) && p.got.has(x)),
    lost: count(ps, (x, s, p) => after(x, s) && s.ackedAt !== undefined && !p.got.has(x)),
    duplicates: ps.reduce((n, p) => n + [...p.got.values()].filter((k) => k > 1).length, 0)
  })
  const fm = figures(moved)
  const fs = figures(stayed)
  // Published before the failure and not acknowledged at it: resent, or lost with the broker
  // (one it had acknowledged but not yet delivered).
  const atFail = count(moved, (_x, s) => s.publishedAt < failAt && (s.ackedAt === undefined || s.ackedAt >= failAt))
  const atFailLost = count(moved, (x, s, p) => s.publishedAt < failAt && (s.ackedAt === undefined || s.ackedAt >= failAt) && !p.got.has(x))
  t.comment(`QoS 1 after the failure (SIGSTOP, then SIGKILL), ${moved.length} moved clients: ${fm.published} published (${burst.size} of them the burst to the stopped broker), ${fm.acked} acked, ${fm.received} received, ${fm.lost} acked but not received, ${fm.duplicates} received twice or more`)
  t.comment(`QoS 1 after the failure, ${stayed.length} other clients: ${fs.published} published, ${fs.acked} acked, ${fs.received} received, ${fs.lost} lost, ${fs.duplicates} duplicates`)
  t.comment(`in flight at the failure (published before it, PUBACK after it or never), moved clients: ${atFail}; not received: ${atFailLost}`)
  t.equal(count(moved, (x, s) => burst.has(x) && s.ackedAt !== undefined), burst.size, `the burst to the stopped broker (${burst.size}): all acknowledged (resent to the new broker)`)
  t.equal(count(moved, (x, _s, p) => burst.has(x) && p.got.has(x)), burst.size, 'the burst: all received')
  t.ok(resent >= burst.size, `the proxy resent at least the burst (${resent} resent)`)
  t.ok(fm.published > moved.length, 'the moved clients published after the failure')
  t.equal(fm.acked, fm.published, 'every QoS 1 message a moved client published after the failure got its PUBACK')
  t.equal(fm.lost, 0, 'none of them lost: each was received by its subscriber')
  t.equal(fm.received, fm.published, 'all received')
  t.equal(fs.acked, fs.published, 'the other clients: all acked')
  t.equal(fs.received, fs.published, 'the other clients: all received')
  t.same(peers.flatMap((p) => p.errors.map((e) => `${p.id}: ${e}`)), [], 'no client saw an error')

  const total = await rehomesTotal(proxy)
  t.comment(`mqtt_guard_upstream_rehomes_total ${String(total)}`)
  t.equal(total, moved.length, 'mqtt_guard_upstream_rehomes_total counts the moves')
  t.match(poolOf(proxy).view().brokers[victimIndex], { state: 'down', connections: 0 }, 'the killed broker: down, no connection')

  // The trace: the traced clients that moved have a second CONNECT on the broker leg, made by the proxy.
  const traced = moved.filter((p) => p.id.startsWith('rh-t-'))
  t.equal(traced.length, 2, `${traced.length} traced clients moved (${traced.map((p) => p.id).join(', ')})`)
  const lines = await pollUntil('the trace lines', 5000, async () => {
    if (!existsSync(traceFile)) return undefined
    const all = (await readFile(traceFile, 'utf8')).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as TraceLine)
    return traced.every((p) => all.filter((l) => l.clientId === p.id && l.type === 'connect' && l.leg === 'broker').length >= 2) ? all : undefined
  }).catch(async () => existsSync(traceFile) ? (await readFile(traceFile, 'utf8')).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as TraceLine) : [])
  for (const p of traced) {
    const connects = lines.filter((l) => l.clientId === p.id && l.type === 'connect' && l.leg === 'broker').map((l) => ({ dir: l.dir, verdict: l.verdict, broker: l.broker }))
    t.equal(connects.length, 2, `${p.id}: two CONNECTs on the broker leg`)
    t.same(connects[1], { dir: 'up', verdict: 'proxy', broker: urlOf(ports()[nextBroker(p.id, victimIndex)] as number) }, `${p.id}: the second, made by the proxy, names the client's next broker`)
    // format.ts: `broker` is on every CONNECT of the broker leg with several brokers, the client's own too.
    t.same(connects[0], { dir: 'up', verdict: 'sent', broker: urlOf(victim.port) }, `${p.id}: the first, the client's own, names the killed broker`)
    const resub = lines.find((l) => l.clientId === p.id && l.type === 'subscribe' && l.leg === 'broker' && l.verdict === 'proxy')
    t.match(resub, { filters: [{ topic: p.topic, qos: 1 }] }, `${p.id}: the proxy's SUBSCRIBE to the new broker`)
    t.notOk(lines.some((l) => l.clientId === p.id && l.leg === 'client' && l.dir === 'down' && (l.type === 'connack' || l.type === 'suback') && l.us > killAt * 1000), `${p.id}: no second CONNACK or SUBACK shown to the client`)
  }

  await victim.restart()
  restarted = true
  await pollUntil('the restarted broker marked up', MARK_UP_MS, () => poolOf(proxy).view().brokers[victimIndex]?.state === 'up' ? true : undefined)
})

for (const version of [4, 5] as const) {
  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: a live broker that closes one connection (a takeover) gets that client closed, not moved`, { timeout: 30_000 }, async (t) => {
    const proxy = await rehomeProxy(t)
    const index = 1
    const [id] = idsPreferring(index, 1, `takeover-${version}`) as [string]
    const c = await RawMqttClient.connected(proxy.port, version, id)
    t.teardown(async () => { await c.destroy() })
    t.equal(await landedOn(proxy, id), urlOf(ports()[index] as number), `${id} on broker ${index}`)
    const before = await rehomesTotal(proxy)
    // The same client ID straight to that Mosquitto: it takes the session over and closes the proxy's.
    const thief = await RawMqttClient.connected((m[index] as Mosquitto).port, version, id)
    t.teardown(async () => { await thief.destroy() })
    const closed = await c.waitClose(5000).then(() => true, () => false)
    t.ok(closed, 'the proxied client is closed')
    const line = await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.clientId === id, 5000).catch(() => undefined)
    t.match(line, { reason: 'broker-closed', detail: /health check/ }, 'closed because the broker closed it and still answers its health check')
    t.notOk(rehomedLines(proxy).some((l) => l.clientId === id), 'not re-homed: the broker still answers its health check')
    t.equal(await rehomesTotal(proxy), before, 'mqtt_guard_upstream_rehomes_total unchanged')
    // Mosquitto 2.0 closes a taken-over connection without DISCONNECT (also to MQTT 5 clients):
    // the client sees what it would see connected to Mosquitto directly.
    t.same(c.packets.map((p) => p.cmd), ['connack'], 'nothing else reached the client: no DISCONNECT made up by the proxy')
    t.match(poolOf(proxy).view().brokers[index], { state: 'up' }, 'the broker stays up')
    t.notOk(thief.isClosed, 'the direct client keeps the session')
  })
}

t.test('drain: POST /upstreams/{n}/drain moves the broker\'s clients without closing them; DELETE ends it', { timeout: 60_000 }, async (t) => {
  const proxy = await rehomeProxy(t)
  const index = 2
  const drained = m[index] as Mosquitto
  const ids = idsPreferring(index, 6, 'drain')
  interface Client { id: string, c: MqttClient, topic: string, closes: number, got: string[] }
  const clients: Client[] = []
  // A watcher on the drained broker itself: a will published there means the broker saw the
  // client vanish, which it did not.
  const watcher = await direct(t, drained, 'drain-will-watcher')
  const wills: string[] = []
  watcher.on('message', (topic) => { wills.push(topic) })
  await watcher.subscribeAsync('rehome/will/#', { qos: 1 })
  for (const [i, id] of ids.entries()) {
    const version = i % 2 === 0 ? 4 : 5
    const c = await mqtt.connectAsync(proxy.url, { clientId: id, protocolVersion: version, clean: true, reconnectPeriod: 0, connectTimeout: 5000, will: { topic: `rehome/will/${id}`, payload: Buffer.from('gone'), qos: 1, retain: false } })
    t.teardown(async () => { await c.endAsync(true) })
    const client: Client = { id, c, topic: `rehome/drain/${id}`, closes: 0, got: [] }
    c.on('close', () => { client.closes++ })
    c.on('message', (_topic, payload) => { client.got.push(payload.toString()) })
    await c.subscribeAsync(client.topic, { qos: 1 })
    clients.push(client)
    t.equal(await landedOn(proxy, id), urlOf(drained.port), `${id} (MQTT ${version === 5 ? '5' : '3.1.1'}) on broker ${index}`)
  }

  const startedAt = Date.now()
  const res = await fetch(admin(proxy, `/upstreams/${index}/drain`), { method: 'POST', body: JSON.stringify({ ratePerSecond: 100 }) })
  t.equal(res.status, 200, 'POST /upstreams/2/drain: 200')
  t.match(await res.json(), { index, url: urlOf(drained.port), drainingSince: String }, 'answered with the broker, draining')
  const lines = await pollUntil('the drained broker\'s clients re-homed', 10_000, () => {
    const l = rehomedLines(proxy).filter((x) => ids.includes(String(x.clientId)))
    return l.length >= ids.length ? l : undefined
  }).catch((err: Error) => {
    t.fail(`${err.message}; re-homed: ${rehomedLines(proxy).map((l) => String(l.clientId)).join(', ') || 'none'}; closed: ${describeClosed(closedLines(proxy, new Set(ids))) || 'none'}`)
    return [] as LogLine[]
  })
  t.comment(`drain: ${lines.length} of ${ids.length} clients re-homed within ${Date.now() - startedAt} ms`)
  t.same(lines.map((l) => `${String(l.clientId)} → ${String(l.to)}`).sort(), ids.map((id) => `${id} → ${urlOf(ports()[nextBroker(id, index)] as number)}`).sort(), 'each to its next broker')
  t.same(clients.filter((c) => c.closes > 0).map((c) => c.id), [], 'no client socket closed')
  t.same(closedLines(proxy, new Set(ids)).map((l) => `${String(l.clientId)}: ${String(l.reason)}`), [], 'the proxy closed none of them')

  // Their subscriptions work on the new broker: each publishes to itself through the proxy.
  await Promise.all(clients.map(async (c) => { if (c.c.connected) await c.c.publishAsync(c.topic, `after-drain:${c.id}`, { qos: 1 }) }))
  await pollUntil('each client\'s message after the drain', 5000, () => clients.every((c) => c.got.includes(`after-drain:${c.id}`)) ? true : undefined).catch(() => {})
  t.same(clients.filter((c) => !c.got.includes(`after-drain:${c.id}`)).map((c) => c.id), [], 'each receives its own message on the new broker')

  const view = await (await fetch(admin(proxy, '/upstreams'))).json() as { brokers: BrokerView[] }
  t.match(view.brokers[index], { drainingSince: String, connections: 0 }, 'GET /upstreams: draining since, no connection left')
  t.ok(Date.parse(view.brokers[index]?.drainingSince ?? '') >= startedAt - 1000, 'drainingSince is when the drain started')
  // The drained broker saw each client's connection end: it must not publish their wills.
  await new Promise((resolve) => { setTimeout(resolve, 500) })
  t.same(wills, [], 'no will published on the drained broker (the clients did not go away)')

  const ended = await fetch(admin(proxy, `/upstreams/${index}/drain`), { method: 'DELETE' })
  t.equal(ended.status, 200, 'DELETE /upstreams/2/drain: 200')
  const after = await ended.json() as BrokerView
  t.equal(after.drainingSince, undefined, 'no longer draining')
  const view2 = await (await fetch(admin(proxy, '/upstreams'))).json() as { brokers: BrokerView[] }
  t.equal(view2.brokers[index]?.drainingSince, undefined, 'GET /upstreams: no drainingSince')
  const [fresh] = idsPreferring(index, 1, 'after-drain') as [string]
  const c = await RawMqttClient.connected(proxy.port, 5, fresh)
  t.equal(await landedOn(proxy, fresh), urlOf(drained.port), 'a new client that hashes to it lands on it again')
  await c.destroy()
})

t.test('a hung broker (SIGSTOP) marked down: the exchanges the client had open at the move are completed on the new broker', { timeout: 30_000 }, async (t) => {
  const proxy = await rehomeProxy(t)
  const index = 1
  const hung = m[index] as Mosquitto
  const publisher = await direct(t, hung, 'hung-publisher')
  interface Open { id: string, version: 4 | 5, c: RawMqttClient, delivery: number, topic: string }
  const open: Open[] = []
  for (const version of [4, 5] as const) {
    const [id] = idsPreferring(index, 1, `hung-${version}`) as [string]
    const c = await RawMqttClient.connected(proxy.port, version, id)
    t.teardown(async () => { await c.destroy() })
    t.equal(await landedOn(proxy, id), urlOf(hung.port), `${id} (MQTT ${version === 5 ? '5' : '3.1.1'}) on broker ${index}`)
    const topic = `rehome/hung/${id}`
    c.sendPacket({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${topic}/q2`, qos: 2 }, { topic: `${topic}/old`, qos: 1 }] })
    t.match(await c.take('suback'), { messageId: 1, granted: [2, 1] }, `${id}: subscribed`)
    // A QoS 2 delivery from the broker that is about to hang; the client holds its PUBREC for now.
    await publisher.publishAsync(`${topic}/q2`, 'qos 2 before the hang', { qos: 2 })
    const delivery = await c.take('publish')
    t.match(delivery, { qos: 2, topic: `${topic}/q2` }, `${id}: the QoS 2 delivery`)
    open.push({ id, version, c, delivery: delivery.messageId ?? 0, topic })
  }

  let resumed = false
  const resume = (): void => { if (!resumed) { resumed = true; hung.kill('SIGCONT') } }
  t.teardown(resume)
  const stoppedAt = Date.now()
  hung.kill('SIGSTOP')
  // Sent while the broker hangs: they reach its socket and are never answered there.
  for (const o of open) {
    o.c.sendPacket({ cmd: 'pubrec', messageId: o.delivery })
    o.c.sendPacket({ cmd: 'subscribe', messageId: 20, subscriptions: [{ topic: `${o.topic}/new`, qos: 1 }] })
    o.c.sendPacket({ cmd: 'unsubscribe', messageId: 21, unsubscriptions: [`${o.topic}/old`] })
  }
  const ids = open.map((o) => o.id)
  await pollUntil('both clients re-homed', MARK_DOWN_MS + 3000, () => ids.every((id) => rehomedLines(proxy).some((l) => l.clientId === id)) ? true : undefined).catch((err: Error) => {
    t.fail(`${err.message}; closed: ${describeClosed(closedLines(proxy, new Set(ids))) || 'none'}`)
  })
  t.comment(`re-homed ${Date.now() - stoppedAt} ms after SIGSTOP (checks every ${FAST.intervalMs} ms, ${FAST.failures} failures)`)
  for (const o of open) {
    const name = `${o.id} (MQTT ${o.version === 5 ? '5' : '3.1.1'})`
    const answers = await Promise.all([
      o.c.next('pubrel', 3000).then((p) => p, () => undefined),
      o.c.next('suback', 3000).then((p) => p, () => undefined),
      o.c.next('unsuback', 3000).then((p) => p, () => undefined)
    ])
    t.match(answers[0], { messageId: o.delivery }, `${name}: PUBREL ${o.delivery} for the QoS 2 delivery whose PUBREC the hung broker never answered (else the client never completes it: MQTT.js hands a QoS 2 message to the application at PUBREL)`)
    t.match(answers[1], { messageId: 20 }, `${name}: SUBACK 20 for the SUBSCRIBE sent to the hung broker`)
    t.match(answers[2], { messageId: 21 }, `${name}: UNSUBACK 21 for the UNSUBSCRIBE sent to the hung broker`)
    t.notOk(o.c.isClosed, `${name}: still connected`)
  }
  // The SUBSCRIBE the hung broker swallowed took effect on the new broker.
  for (const o of open) {
    const p = await direct(t, m[nextBroker(o.id, index)] as Mosquitto, `publisher-for-${o.id}`)
    const got = o.c.next('publish', 3000).then((x) => x, () => undefined)
    await p.publishAsync(`${o.topic}/new`, 'after the move', { qos: 1 })
    t.match(await got, { topic: `${o.topic}/new` }, `${o.id}: subscribed to ${o.topic}/new on its new broker`)
  }
  resume()
  await pollUntil('the resumed broker marked up', MARK_UP_MS, () => poolOf(proxy).view().brokers[index]?.state === 'up' ? true : undefined)
})
