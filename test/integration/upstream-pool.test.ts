// Several upstream brokers (issue 21) with three real Mosquittos and in-process proxies:
// - affinity: 300 client IDs through two proxy instances land on the same broker from both
//   (no shared state), spread within ±25 % of even; a third instance without one broker moves
//   only that broker's clients (read backwards: adding it moves about 1/3, only to it);
// - health: a broker that accepts TCP but never answers CONNECT is marked down by the active
//   checks in time, and the clients that hash to it connect to their next broker at once;
// - a Mosquitto killed under QoS 1 traffic from 60 clients (failover reconnect, MQTT.js
//   auto-reconnect): only its clients are closed, and every client is connected again within
//   5 s; the broker restarted is marked up again;
// - a hung Mosquitto (SIGSTOP) with open connections: once marked down, its MQTT 5 clients get
//   DISCONNECT 0x8B (reconnect) or 0x9C with the Server Reference of their next broker
//   (redirect), 3.1.1 clients are closed, other brokers' clients stay, and the next CONNECT goes
//   to the next broker in the client's hash order;
// - a killed Mosquitto: its MQTT 5 clients are told so (0x8B, or 0x9C with a Server Reference);
// - one broker down, then all: doctor, /metrics and GET /upstreams say so, and a CONNECT gets
//   CONNACK 3 / 0x88 at once instead of waiting for connectTimeoutMs.
// Where each client landed is read from the 'connection opened' log line's `broker` field.

import t, { type Test } from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import mqtt, { type MqttClient } from 'mqtt'
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { RawMqttClient } from '../helpers/raw-client.js'
import { pollUntil } from '../helpers/processes.js'
import { parseExposition, valueOf, type Family } from '../helpers/metrics-scrape.js'
import type { PoolView } from '../../src/upstream/pool.js'
import { FAST, MARK_DOWN_MS, SLACK_MS, hashOrder, idsPreferring, poolOf, urlOf } from '../helpers/broker-pool.js'


let m: Mosquitto[] = []
t.before(async () => {
  m = await Promise.all([startMosquitto(), startMosquitto(), startMosquitto()])
})
t.teardown(async () => { await Promise.all(m.map(async (b) => { await b.stop() })) })


async function poolProxy (t: Test, upstream: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<TestProxy> {
  const proxy = await startProxy({ config: { upstream, ...extra } })
  t.teardown(() => proxy.stop())
  return proxy
}


/** Two proxies on the same brokers: failover reconnect, and redirect with a Server Reference per broker. */
async function failoverPair (t: Test, ports: readonly number[]): Promise<{ references: string[], reconnect: TestProxy, redirect: TestProxy }> {
  const references = ports.map((_p, i) => `guard-${i}.example:1883`)
  const [reconnect, redirect] = await Promise.all([
    poolProxy(t, { brokers: ports.map(urlOf), healthCheck: FAST, failover: 'reconnect' }),
    poolProxy(t, { brokers: ports.map((p, i) => ({ url: urlOf(p), serverReference: references[i] })), healthCheck: FAST, failover: 'redirect' })
  ])
  return { references, reconnect, redirect }
}

/** Waits until `pred` holds for the pool's view; says what the view was if it never does. */
async function poolState (proxy: TestProxy, what: string, deadlineMs: number, pred: (v: PoolView) => boolean): Promise<number> {
  const start = Date.now()
  try {
    await pollUntil(what, deadlineMs, () => pred(poolOf(proxy).view()) ? true : undefined)
  } catch (err) {
    throw new Error(`${(err as Error).message}; pool: ${JSON.stringify(poolOf(proxy).view().brokers.map((b) => ({ url: b.url, state: b.state, lastError: b.lastError, failuresInRow: b.failuresInRow })))}`)
  }
  return Date.now() - start
}

/** The broker the proxy logged for the connection of `clientId` (not `notConn`). */
async function landedOn (proxy: TestProxy, clientId: string, notConn?: unknown): Promise<{ broker: string, conn: unknown }> {
  const line = await proxy.logs.waitFor((l) => l.msg === 'connection opened' && l.clientId === clientId && l.conn !== notConn, 5000)
  return { broker: String(line.broker), conn: line.conn }
}

/** CONNECT, CONNACK 0, DISCONNECT, closed: one visit per ID, in parallel batches of 20. */
async function visit (proxy: TestProxy, ids: readonly string[]): Promise<void> {
  for (let i = 0; i < ids.length; i += 20) {
    await Promise.all(ids.slice(i, i + 20).map(async (id) => {
      const c = await RawMqttClient.connected(proxy.port, 4, id, false)
      c.sendPacket({ cmd: 'disconnect' })
      await c.waitClose(5000)
    }))
  }
}

async function getJson (proxy: TestProxy, path: string): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${proxy.server.admin?.port ?? 0}${path}`)
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status}`)
  return await res.json()
}

async function scrape (proxy: TestProxy): Promise<Map<string, Family>> {
  const res = await fetch(`http://127.0.0.1:${proxy.server.admin?.port ?? 0}/metrics`)
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status}`)
  return parseExposition(await res.text())
}

/** A CONNECT that should be refused: the CONNACK code (or 'closed without CONNACK'), how long it took. */
async function refused (port: number, version: 4 | 5, clientId: string): Promise<{ code: number | string | undefined, ms: number }> {
  const start = performance.now()
  const c = await RawMqttClient.open(port, version)
  const connack = c.next('connack', 15_000).catch(() => undefined)
  c.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clientId, clean: true, keepalive: 60 })
  const answer = await Promise.race([connack, c.closed.then(() => undefined)])
  const packet = answer ?? c.packets.find((p) => p.cmd === 'connack')
  const ms = Math.round(performance.now() - start)
  await c.waitClose(5000)
  if (packet?.cmd !== 'connack') return { code: 'closed without CONNACK', ms }
  return { code: version === 5 ? packet.reasonCode : packet.returnCode, ms }
}

t.test('affinity: two instances send each client ID to the same broker; removal moves only its clients', { timeout: 90_000 }, async (t) => {
  const ports = m.map((b) => b.port)
  const urls = ports.map(urlOf)
  const ids = Array.from({ length: 300 }, (_, i) => `affinity-${i}-${(i * 7919) % 9973}`)
  const [p1, p2] = await Promise.all([
    poolProxy(t, { brokers: urls }, { admin: '127.0.0.1:0' }),
    // The second instance lists the brokers in another order: the hash does not care.
    poolProxy(t, { brokers: [urls[2], urls[0], urls[1]] })
  ]) as [TestProxy, TestProxy]
  await visit(p1, ids)
  await visit(p2, ids)
  const on1 = new Map<string, string>()
  const on2 = new Map<string, string>()
  for (const id of ids) {
    on1.set(id, (await landedOn(p1, id)).broker)
    on2.set(id, (await landedOn(p2, id)).broker)
  }
  const differ = ids.filter((id) => on1.get(id) !== on2.get(id))
  t.same(differ, [], 'all 300 client IDs on the same broker through both instances')
  const expected = ids.filter((id) => on1.get(id) !== urls[hashOrder(ports, id)[0] as number])
  t.same(expected, [], 'each on the broker its rendezvous order puts first')
  const counts = urls.map((u) => ids.filter((id) => on1.get(id) === u).length)
  t.comment(`300 client IDs per broker: ${counts.join(', ')}`)
  for (const [i, n] of counts.entries()) t.ok(n >= 75 && n <= 125, `broker ${i}: ${n} of 300 (100 ± 25 %)`)
  const view = await getJson(p1, '/upstreams') as { kind: string, balance: string, brokers: Array<{ url: string, dials: number, state: string }> }
  t.match(view, { kind: 'pool', balance: 'client-id', failover: 'reconnect' }, 'GET /upstreams: the pool')
  t.same(view.brokers.map((b) => b.dials), counts, 'GET /upstreams: each broker\'s dials are the clients logged on it')
  t.same(view.brokers.map((b) => b.state), ['up', 'up', 'up'])

  // A third instance without broker 1: only broker 1's clients move, each to its next broker.
  const p3 = await poolProxy(t, { brokers: [urls[0], urls[2]] })
  await visit(p3, ids)
  const on3 = new Map<string, string>()
  for (const id of ids) on3.set(id, (await landedOn(p3, id)).broker)
  const movedOthers = ids.filter((id) => on1.get(id) !== urls[1] && on3.get(id) !== on1.get(id))
  t.same(movedOthers, [], 'without broker 1, no client of brokers 0 and 2 moved')
  const fromB1 = ids.filter((id) => on1.get(id) === urls[1])
  const notNext = fromB1.filter((id) => on3.get(id) !== urls[hashOrder(ports, id)[1] as number])
  t.same(notNext, [], `broker 1's ${fromB1.length} clients each went to their second broker`)
  // Read backwards, p3 → p1 is adding a broker: what moves is about 1/3, and only to it.
  const added = ids.filter((id) => on3.get(id) !== on1.get(id))
  t.ok(added.every((id) => on1.get(id) === urls[1]), 'adding broker 1 moved clients only to it')
  const share = added.length / ids.length
  t.comment(`adding a third broker moved ${added.length} of 300 (${(100 * share).toFixed(1)} %)`)
  t.ok(share >= 0.25 && share <= 0.42, `${(100 * share).toFixed(1)} % moved (about 1/3)`)
})

t.test('health: a broker that accepts TCP and never answers CONNECT is marked down; its clients go to their next broker', { timeout: 60_000 }, async (t) => {
  // Stands in for a hung broker: the kernel completes the handshake, nothing ever answers.
  const held = new Set<net.Socket>()
  let connects = 0
  const hung = net.createServer((s) => {
    held.add(s)
    s.on('error', () => {})
    s.once('data', (chunk: Buffer) => { if (chunk[0] === 0x10) connects++ })
  })
  hung.listen(0, '127.0.0.1')
  await once(hung, 'listening')
  t.teardown(async () => {
    for (const s of held) s.destroy()
    await new Promise<void>((resolve) => { hung.close(() => { resolve() }) })
  })
  const hungPort = (hung.address() as net.AddressInfo).port
  const ports = [m[0]?.port ?? 0, m[1]?.port ?? 0, hungPort]
  const started = Date.now()
  const proxy = await poolProxy(t, { brokers: ports.map(urlOf), healthCheck: FAST })
  await poolState(proxy, 'the hung broker marked down', MARK_DOWN_MS, (v) => v.brokers[2]?.state === 'down')
  const tookMs = Date.now() - started
  t.comment(`hung broker marked down ${tookMs} ms after the proxy started (failures ${FAST.failures} × intervalMs ${FAST.intervalMs} + timeoutMs ${FAST.timeoutMs} = ${FAST.failures * FAST.intervalMs + FAST.timeoutMs} ms)`)
  const view = poolOf(proxy).view()
  t.match(view.brokers[2], { state: 'down', lastError: /no CONNACK within 200 ms/ }, 'down, because no CONNACK came')
  t.match(view.brokers.slice(0, 2), [{ state: 'up' }, { state: 'up' }], 'the Mosquittos are up')
  t.ok(connects >= FAST.failures, `the checks sent MQTT CONNECTs (${connects}), not just a TCP connect`)
  const ids = idsPreferring(ports, 2, 10, 'to-hung')
  for (const id of ids) {
    const start = performance.now()
    const c = await RawMqttClient.connected(proxy.port, 4, id)
    const ms = Math.round(performance.now() - start)
    const { broker } = await landedOn(proxy, id)
    t.equal(broker, urlOf(ports[hashOrder(ports, id)[1] as number] as number), `${id} (hashes to the hung broker) connected in ${ms} ms to its next broker`)
    t.ok(ms < 2000, `${id}: at once, not after a timeout`)
    await c.destroy()
  }
  t.equal(poolOf(proxy).view().brokers[2]?.dials, 0, 'the down broker got no client')
})

t.test('a broker killed under QoS 1 traffic from 60 clients: its clients are all connected again within 5 s', { timeout: 90_000 }, async (t) => {
  const ports = m.map((b) => b.port)
  const victim = m[0] as Mosquitto
  const proxy = await poolProxy(t, { brokers: ports.map(urlOf), healthCheck: FAST, failover: 'reconnect' })
  let restarted = false
  t.teardown(async () => { if (!restarted) await victim.restart() })
  interface Peer { id: string, version: 4 | 5, c: MqttClient, topic: string, seq: number, closedAt: number, connectedAt: number, got: Set<string>, gotAfterKill: number, acked: Set<string>, disconnects: Array<number | undefined> }
  const peers: Peer[] = []
  let killAt = Infinity
  for (let i = 0; i < 60; i += 10) {
    await Promise.all(Array.from({ length: 10 }, async (_, k) => {
      const id = `kill-${i + k}`
      const version = (i + k) % 2 === 0 ? 4 : 5
      const c = await mqtt.connectAsync(proxy.url, { clientId: id, protocolVersion: version, clean: true, reconnectPeriod: 200, connectTimeout: 3000 })
      t.teardown(async () => { await c.endAsync(true) })
      const peer: Peer = { id, version, c, topic: `pool/kill/${id}`, seq: 0, closedAt: 0, connectedAt: Date.now(), got: new Set(), gotAfterKill: 0, acked: new Set(), disconnects: [] }
      c.on('disconnect', (packet) => { peer.disconnects.push(packet.reasonCode) })
      c.on('close', () => { peer.closedAt = Date.now() })
      c.on('connect', () => { peer.connectedAt = Date.now() })
      c.on('message', (_topic, payload) => {
        peer.got.add(payload.toString())
        if (Date.now() > killAt && peer.connectedAt > killAt) peer.gotAfterKill++
      })
      await c.subscribeAsync(peer.topic, { qos: 1 })
      peers.push(peer)
    }))
  }
  for (const p of peers) t.equal((await landedOn(proxy, p.id)).broker, urlOf(ports[hashOrder(ports, p.id)[0] as number] as number), `${p.id} on its first broker`, { diagnostic: false })
  const affected = peers.filter((p) => hashOrder(ports, p.id)[0] === 0)
  const others = peers.filter((p) => hashOrder(ports, p.id)[0] !== 0)
  // Each client publishes QoS 1 to its own topic every 200 ms while it is connected.
  let sent = 0
  const publish = (): void => {
    for (const p of peers) {
      if (!p.c.connected) continue
      const payload = `${p.id}:${++p.seq}`
      sent++
      p.c.publish(p.topic, payload, { qos: 1 }, (err) => { if (err == null) p.acked.add(payload) })
    }
  }
  const ticker = setInterval(publish, 200)
  t.teardown(() => { clearInterval(ticker) })
  await pollUntil('traffic flowing to every client', 10_000, () => peers.every((p) => p.got.size >= 2) ? true : undefined)

  killAt = Date.now()
  victim.kill('SIGKILL')
  const back = await pollUntil('every client connected again', 5000, () => {
    const done = peers.every((p) => p.c.connected) && affected.every((p) => p.closedAt >= killAt && p.connectedAt > p.closedAt)
    return done ? Date.now() - killAt : undefined
  }).catch((err: Error) => {
    const missing = affected.filter((p) => !(p.closedAt >= killAt && p.connectedAt > p.closedAt && p.c.connected)).map((p) => p.id)
    t.fail(`${err.message}: not reconnected: ${missing.join(', ')}; not connected: ${peers.filter((p) => !p.c.connected).map((p) => p.id).join(', ')}`)
    return undefined
  })
  const lastBack = Math.max(...affected.map((p) => p.connectedAt)) - killAt
  t.comment(`killed broker 0 (${affected.length} of 60 clients on it): all connected again after ${lastBack} ms (seen by the poll at ${back ?? 'never'} ms)`)
  t.ok(affected.length > 0, `${affected.length} clients were on the killed broker`)
  t.ok(back !== undefined && lastBack <= 5000, `every client connected again within 5 s (${lastBack} ms)`)
  t.same(others.filter((p) => p.closedAt >= killAt).map((p) => p.id), [], 'no client of the other brokers was closed')
  // What the DISCONNECT should be is the next test's; here it is only shown.
  const v5 = affected.filter((p) => p.version === 5)
  const codes = v5.map((p) => `${p.id} [${p.disconnects.map((d) => d === undefined ? 'no code' : `0x${d.toString(16)}`).join(', ') || 'no DISCONNECT'}]`)
  t.comment(`what the moved MQTT 5 clients got before the close: ${codes.join('; ')}`)
  for (const p of affected) {
    const { broker } = await landedOn(proxy, p.id, (await landedOn(proxy, p.id)).conn)
    if (broker !== urlOf(ports[hashOrder(ports, p.id)[1] as number] as number)) t.fail(`${p.id} reconnected to ${broker}, not its next broker`)
  }
  t.pass('each reconnected client is on its next broker')
  await pollUntil('messages to each moved client after its reconnect', 10_000, () => affected.every((p) => p.gotAfterKill >= 5) ? true : undefined)
  t.pass('each moved client receives again (its subscription renewed on the new broker)')

  clearInterval(ticker)
  const acked = (): number => peers.reduce((n, p) => n + p.acked.size, 0)
  // Everything published has been answered (PUBACK) or is given up on after 5 s.
  await pollUntil('the PUBACKs of the last publishes', 5000, () => acked() >= sent ? true : undefined).catch(() => {})
  await pollUntil('the last deliveries', 5000, () => peers.every((p) => [...p.acked].every((x) => p.got.has(x))) ? true : undefined).catch(() => {})
  const received = peers.reduce((n, p) => n + p.got.size, 0)
  const lost = peers.reduce((n, p) => n + [...p.acked].filter((x) => !p.got.has(x)).length, 0)
  const lostByMoved = affected.reduce((n, p) => n + [...p.acked].filter((x) => !p.got.has(x)).length, 0)
  t.comment(`QoS 1: ${sent} published, ${acked()} acknowledged, ${received} received; ${lost} acknowledged but never received (${lostByMoved} of them by moved clients: in flight on the killed broker)`)
  t.equal(lost - lostByMoved, 0, 'nothing lost by the clients of the brokers that stayed up')
  const b0 = poolOf(proxy).view().brokers[0]
  t.match(b0, { state: 'down', downs: 1 }, 'the killed broker is down, once')
  t.comment(`killed broker: ${b0?.dialFailures ?? 0} dials failed over to the next broker; last error: ${b0?.lastError ?? ''}`)

  // Back up: the active checks take it again, and a client that hashes to it lands on it.
  await victim.restart()
  restarted = true
  const upMs = await poolState(proxy, 'the restarted broker marked up', FAST.recoveries * FAST.intervalMs + FAST.timeoutMs + SLACK_MS, (v) => v.brokers[0]?.state === 'up')
  t.comment(`restarted broker marked up ${upMs} ms after it was ready`)
  const [fresh] = idsPreferring(ports, 0, 1, 'after-restart')
  const c = await RawMqttClient.connected(proxy.port, 5, fresh as string)
  t.equal((await landedOn(proxy, fresh as string)).broker, urlOf(ports[0] as number), 'a new client that hashes to it lands on it again')
  await c.destroy()
})

t.test('a hung broker (SIGSTOP): reconnect sends 0x8B, redirect 0x9C with the next broker\'s Server Reference', { timeout: 60_000 }, async (t) => {
  const ports = m.map((b) => b.port)
  const victim = m[1] as Mosquitto
  const { references, reconnect, redirect } = await failoverPair(t, ports)
  const [idR5a, idR5b, idR4, idD5a, idD5b, idD4] = idsPreferring(ports, 1, 6, 'hung') as [string, string, string, string, string, string]
  const [stays1, stays2] = idsPreferring(ports, 0, 2, 'stays') as [string, string]
  const open = async (proxy: TestProxy, version: 4 | 5, id: string): Promise<RawMqttClient> => {
    const c = await RawMqttClient.connected(proxy.port, version, id)
    t.teardown(async () => { await c.destroy() })
    t.equal((await landedOn(proxy, id)).broker, urlOf(ports[hashOrder(ports, id)[0] as number] as number), `${id} (MQTT ${version === 5 ? '5' : '3.1.1'}) on its first broker`)
    return c
  }
  const r5 = [await open(reconnect, 5, idR5a), await open(reconnect, 5, idR5b)]
  const r4 = await open(reconnect, 4, idR4)
  const d5 = [await open(redirect, 5, idD5a), await open(redirect, 5, idD5b)]
  const d4 = await open(redirect, 4, idD4)
  // Two IDs: one ID through both proxies would be one session on the broker, the second taking it over.
  const rStays = await open(reconnect, 5, stays1)
  const dStays = await open(redirect, 5, stays2)

  let resumed = false
  const resume = (): void => { if (!resumed) { resumed = true; victim.kill('SIGCONT') } }
  t.teardown(resume)
  const stoppedAt = Date.now()
  victim.kill('SIGSTOP')
  const disconnects = await Promise.all([...r5, ...d5].map(async (c) => await c.next('disconnect', MARK_DOWN_MS + 2000)))
  t.comment(`DISCONNECTs ${Date.now() - stoppedAt} ms after SIGSTOP (checks every ${FAST.intervalMs} ms, timeout ${FAST.timeoutMs} ms, ${FAST.failures} failures)`)
  for (const [i, d] of disconnects.slice(0, 2).entries()) {
    t.equal(d.reasonCode, 0x8b, `reconnect, MQTT 5 client ${i}: DISCONNECT 0x8B (server shutting down)`)
    t.equal(d.properties?.serverReference, undefined, `reconnect, MQTT 5 client ${i}: no Server Reference`)
  }
  for (const [i, d] of disconnects.slice(2).entries()) {
    const id = [idD5a, idD5b][i] as string
    const next = hashOrder(ports, id).filter((b) => b !== 1)[0] as number
    t.equal(d.reasonCode, 0x9c, `redirect, MQTT 5 client ${i}: DISCONNECT 0x9C (use another server)`)
    t.equal(d.properties?.serverReference, references[next], `redirect, MQTT 5 client ${i}: Server Reference of its next broker (${references[next]})`)
  }
  for (const c of [...r5, ...d5]) await c.waitClose(5000)
  t.pass('the MQTT 5 clients were closed after their DISCONNECT')
  for (const [name, c] of [['reconnect', r4], ['redirect', d4]] as const) {
    await c.waitClose(5000)
    t.notOk(c.packets.some((p) => p.cmd === 'disconnect'), `${name}: the MQTT 3.1.1 client was closed without a DISCONNECT (3.1.1 has none from the server)`)
  }
  for (const [name, c] of [['reconnect', rStays], ['redirect', dStays]] as const) {
    t.notOk(c.isClosed, `${name}: the client of another broker stays connected`)
    const pong = c.next('pingresp', 3000)
    c.sendPacket({ cmd: 'pingreq' })
    await pong
  }
  t.pass('... and its broker still answers PINGREQ')
  for (const proxy of [reconnect, redirect]) t.match(poolOf(proxy).view().brokers[1], { state: 'down', lastError: /no CONNACK|no connection/ }, 'the stopped broker is down')

  // The next CONNECT goes to the next broker in the client's hash order.
  const { conn: oldConn } = await landedOn(reconnect, idR5a)
  const again = await RawMqttClient.connected(reconnect.port, 5, idR5a)
  t.teardown(async () => { await again.destroy() })
  const next = hashOrder(ports, idR5a)[1] as number
  t.equal((await landedOn(reconnect, idR5a, oldConn)).broker, urlOf(ports[next] as number), 'reconnected at once to its next broker')

  const resumedAt = Date.now()
  resume()
  for (const [name, proxy] of [['reconnect', reconnect], ['redirect', redirect]] as const) {
    await poolState(proxy, 'the resumed broker marked up', FAST.recoveries * FAST.intervalMs + FAST.timeoutMs + SLACK_MS, (v) => v.brokers[1]?.state === 'up')
    t.comment(`${name}: the resumed broker marked up again ${Date.now() - resumedAt} ms after SIGCONT`)
  }
})

t.test('a killed broker: its MQTT 5 clients get DISCONNECT 0x8B (reconnect) or 0x9C with a Server Reference (redirect)', { timeout: 60_000 }, async (t) => {
  // The issue: "Failover reconnect: each affected client is closed (MQTT 5: DISCONNECT 0x8B server
  // shutting down or 0x9C use another server)". A broker that dies is the plainest failover.
  const ports = m.map((b) => b.port)
  const victim = m[2] as Mosquitto
  const { references, reconnect, redirect } = await failoverPair(t, ports)
  const [idR, idD] = idsPreferring(ports, 2, 2, 'killed') as [string, string]
  const r = await RawMqttClient.connected(reconnect.port, 5, idR)
  const d = await RawMqttClient.connected(redirect.port, 5, idD)
  t.teardown(async () => { await r.destroy(); await d.destroy() })
  t.equal((await landedOn(reconnect, idR)).broker, urlOf(ports[2] as number), `${idR} on the broker to be killed`)
  t.equal((await landedOn(redirect, idD)).broker, urlOf(ports[2] as number), `${idD} on the broker to be killed`)
  let restarted = false
  t.teardown(async () => { if (!restarted) await victim.restart() })
  const killAt = Date.now()
  victim.kill('SIGKILL')
  await victim.exited()
  await Promise.all([r.waitClose(5000), d.waitClose(5000)])
  t.comment(`both closed within ${Date.now() - killAt} ms of the kill; packets they got: reconnect ${r.packets.map((p) => p.cmd).join(', ')}, redirect ${d.packets.map((p) => p.cmd).join(', ')}`)
  const rDisconnect = r.packets.find((p) => p.cmd === 'disconnect')
  const dDisconnect = d.packets.find((p) => p.cmd === 'disconnect')
  t.equal(rDisconnect?.reasonCode, 0x8b, 'reconnect: DISCONNECT 0x8B (server shutting down) before the close')
  const next = hashOrder(ports, idD).filter((b) => b !== 2)[0] as number
  t.equal(dDisconnect?.reasonCode, 0x9c, 'redirect: DISCONNECT 0x9C (use another server) before the close')
  t.equal(dDisconnect?.properties?.serverReference, references[next], `redirect: the Server Reference of its next broker (${references[next]})`)
  await victim.restart()
  restarted = true
  await poolState(reconnect, 'the restarted broker marked up', FAST.recoveries * FAST.intervalMs + FAST.timeoutMs + SLACK_MS, (v) => v.brokers[2]?.state === 'up')
  await poolState(redirect, 'the restarted broker marked up', FAST.recoveries * FAST.intervalMs + FAST.timeoutMs + SLACK_MS, (v) => v.brokers[2]?.state === 'up')
})

t.test('one broker down, then all: doctor, /metrics, GET /upstreams; CONNACK 3 / 0x88 at once', { timeout: 60_000 }, async (t) => {
  const ports = m.map((b) => b.port)
  const urls = ports.map(urlOf)
  const proxy = await poolProxy(t, { brokers: urls, healthCheck: FAST }, { admin: '127.0.0.1:0', limits: { connectTimeoutMs: 10_000 } })
  let restarted = false
  t.teardown(async () => {
    // The brokers come back whatever happened here.
    if (!restarted) await Promise.all(m.map(async (b) => { await b.restart() }))
  })
  const upOf = async (): Promise<number[]> => {
    const families = await scrape(proxy)
    return urls.map((u) => valueOf(families, 'mqtt_guard_upstream_broker_up', { broker: u }) ?? -1)
  }
  const ids = async (): Promise<string[]> => (await proxy.server.diagnose()).findings.map((f) => f.id).filter((id) => id.startsWith('upstream-'))
  t.same(await upOf(), [1, 1, 1], 'metrics: all three up')
  t.same(await ids(), [], 'doctor: nothing about the upstream')

  m[2]?.kill('SIGKILL')
  await poolState(proxy, 'broker 2 marked down', MARK_DOWN_MS, (v) => v.brokers[2]?.state === 'down')
  t.same(await upOf(), [1, 1, 0], 'metrics: mqtt_guard_upstream_broker_up 1, 1, 0')
  const families = await scrape(proxy)
  t.equal(valueOf(families, 'mqtt_guard_upstream_broker_downs_total', { broker: urls[2] as string }), 1, 'metrics: broker 2 went down once')
  t.equal(valueOf(families, 'mqtt_guard_upstream_broker_downs_total', { broker: urls[0] as string }), 0, 'metrics: broker 0 never')
  t.ok(families.has('mqtt_guard_upstream_broker_connections') && families.has('mqtt_guard_upstream_broker_dial_failures_total') && families.has('mqtt_guard_upstream_connack_seconds'), 'metrics: the pool\'s other series are exposed')
  const oneDown = (await proxy.server.diagnose()).findings.filter((f) => f.id.startsWith('upstream-'))
  t.same(oneDown.map((f) => f.id), ['upstream-broker-down'], 'doctor: upstream-broker-down')
  t.match(oneDown[0]?.evidence.join('\n'), urls[2] as string, 'doctor: names the broker')
  const view1 = await getJson(proxy, '/upstreams') as { brokers: Array<{ url: string, state: string }> }
  t.same(view1.brokers.map((b) => `${b.url} ${b.state}`), [`${urls[0]} up`, `${urls[1]} up`, `${urls[2]} down`], 'GET /upstreams: the states')
  const survivor = await RawMqttClient.connected(proxy.port, 4, idsPreferring(ports, 2, 1, 'one-down')[0] as string)
  t.pass('a client of the down broker still connects (to its next broker)')
  await survivor.destroy()

  m[0]?.kill('SIGKILL')
  m[1]?.kill('SIGKILL')
  await Promise.all([m[0]?.exited(), m[1]?.exited()])
  // Gone, but not marked down yet (most likely): each dial is refused, and nothing waits for a timeout.
  const early = await refused(proxy.port, 4, 'all-down-early')
  t.equal(early.code, 3, `right after the kill: CONNACK 3 in ${early.ms} ms`)
  t.ok(early.ms < 1000, 'well under connectTimeoutMs (10 s)')
  await poolState(proxy, 'all brokers marked down', MARK_DOWN_MS, (v) => v.brokers.every((b) => b.state === 'down'))
  const v4 = await refused(proxy.port, 4, 'all-down-4')
  const v5 = await refused(proxy.port, 5, 'all-down-5')
  t.comment(`all down: CONNACK after ${v4.ms} ms (3.1.1), ${v5.ms} ms (5); right after the kill ${early.ms} ms`)
  t.equal(v4.code, 3, 'MQTT 3.1.1: CONNACK 3 (server unavailable)')
  t.equal(v5.code, 0x88, 'MQTT 5: CONNACK 0x88 (server unavailable)')
  t.ok(v4.ms < 1000 && v5.ms < 1000, 'at once, not after connectTimeoutMs')
  t.same(await upOf(), [0, 0, 0], 'metrics: all three 0')
  const allDown = (await proxy.server.diagnose()).findings
  const upstreamDown = allDown.find((f) => f.id === 'upstream-down')
  t.match(upstreamDown, { severity: 'error', summary: /all 3 brokers are down/ }, 'doctor: upstream-down, an error')
  t.notOk(allDown.some((f) => f.id === 'upstream-broker-down'), 'doctor: not also upstream-broker-down')
  t.comment(`doctor, all down: ${allDown.map((f) => f.id).join(', ')}`)
  const view2 = await getJson(proxy, '/upstreams') as { brokers: Array<{ state: string, lastError?: string }> }
  t.same(view2.brokers.map((b) => b.state), ['down', 'down', 'down'], 'GET /upstreams: all down')
  t.ok(view2.brokers.every((b) => typeof b.lastError === 'string' && b.lastError !== ''), 'GET /upstreams: each with its last error')

  // Started again: marked up by the active checks, clients connect, doctor is quiet.
  await Promise.all(m.map(async (b) => { await b.restart() }))
  restarted = true
  const upMs = await poolState(proxy, 'all brokers marked up again', FAST.recoveries * FAST.intervalMs + FAST.timeoutMs + SLACK_MS, (v) => v.brokers.every((b) => b.state === 'up'))
  t.comment(`all marked up again ${upMs} ms after the restarts`)
  const c = await RawMqttClient.connected(proxy.port, 5, 'after-all-down')
  await c.destroy()
  t.same(await ids(), [], 'doctor: nothing about the upstream once all are up')
  t.same(await upOf(), [1, 1, 1], 'metrics: all up again')
})
