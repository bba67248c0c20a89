// A pool broker's health (issue 21) without a broker: the thresholds of BrokerHealth (failures
// in a row mark it down, a pass resets the count, only active passes bring it back up), the
// probe's CONNECT is a valid MQTT 3.1.1 packet, and probeBroker judges its peer by the CONNACK:
// each peer here is a tiny net.Server in this file that answers the probe with a few fixed
// bytes (CONNACK 0, CONNACK 3, nothing at all, a close), or a closed port. A TCP accept alone
// is not "up". Checks against a real Mosquitto are in test/integration/upstream-pool.test.ts.

import net from 'node:net'
import { once } from 'node:events'
import t, { type Test } from 'tap'
import mqttPacket, { type IConnectPacket, type Packet } from 'mqtt-packet'
import { BrokerHealth, probeBroker, probeConnect, unavailableCode } from '../../src/upstream/health.js'
import { brokerSocket } from '../../src/upstream/broker-socket.js'

t.test('BrokerHealth: failures in a row mark a broker down, a pass resets the count', async (t) => {
  const h = new BrokerHealth(3, 2)
  t.equal(h.state, 'up', 'starts up')
  t.equal(h.failed('e1'), false)
  t.equal(h.failed('e2'), false)
  t.equal(h.passed(false), false, 'a passive pass')
  t.equal(h.failuresInRow, 0, '... resets the failure count')
  t.equal(h.failed('e3'), false)
  t.equal(h.passed(true), false, 'an active pass while up changes nothing')
  t.equal(h.failed('e4'), false)
  t.equal(h.failed('e5'), false)
  t.equal(h.state, 'up', 'two failures in a row of three: still up')
  t.equal(h.failed('e6'), true, 'the third failure in a row marks it down (and says so)')
  t.equal(h.state, 'down')
  t.equal(h.downs, 1)
  t.equal(h.lastError, 'e6')
  t.equal(h.failed('e7'), false, 'failing again while down is no new change')
  t.equal(h.downs, 1)
})

t.test('BrokerHealth: recoveries active passes in a row mark it up; passive passes never do', async (t) => {
  const h = new BrokerHealth(1, 2)
  t.equal(h.failed('refused'), true, 'failures 1: one failure marks it down')
  for (let i = 0; i < 10; i++) t.equal(h.passed(false), false, `passive pass ${i + 1}: stays down`)
  t.equal(h.state, 'down', 'ten clients connected fine through it: still down (only active checks bring it back)')
  t.equal(h.passed(true), false, 'one active pass of two')
  t.equal(h.failed('again'), false, 'a failure between')
  t.equal(h.passesInRow, 0, '... resets the passes')
  t.equal(h.passed(true), false)
  t.equal(h.state, 'down')
  t.equal(h.passed(true), true, 'two active passes in a row mark it up')
  t.equal(h.state, 'up')
  t.equal(h.recentChanges(), 2, 'down and up: two changes in the window')
  t.equal(h.recentChanges(600_000, Date.now() + 700_000), 0, 'older than the window: none')
})

t.test('unavailable CONNACK codes: 3, 0x88, 0x89; a refusal of the probe\'s credentials is not one', async (t) => {
  for (const code of [3, 0x88, 0x89]) t.ok(unavailableCode(code), `${code} means server unavailable`)
  for (const code of [0, 1, 2, 4, 5, 0x80, 0x86, 0x87, 0x8a]) t.notOk(unavailableCode(code), `${code} does not`)
})

t.test('the probe\'s CONNECT decodes as a valid MQTT 3.1.1 CONNECT', async (t) => {
  // The pool's probe IDs: mqtt-guard-probe-<instance id, 16 hex digits>-<broker index>.
  for (const id of ['mqtt-guard-probe-0123456789abcdef-0', 'mqtt-guard-probe-fedcba9876543210-12', 'p']) {
    const bytes = probeConnect(id)
    const parser = mqttPacket.parser({ protocolVersion: 4 })
    const packets: Packet[] = []
    const errors: Error[] = []
    parser.on('packet', (p: Packet) => { packets.push(p) })
    parser.on('error', (e: Error) => { errors.push(e) })
    const left = parser.parse(bytes)
    t.same(errors, [], `${id}: no parse error`)
    t.equal(left, 0, `${id}: every byte consumed`)
    t.equal(packets.length, 1, `${id}: one packet`)
    t.match(packets[0], { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: id }, `${id}: CONNECT 3.1.1, clean session, keepalive 0`)
    const c = packets[0] as IConnectPacket
    t.notOk(c.username !== undefined || c.password !== undefined || c.will !== undefined, `${id}: no user name, password or will`)
    t.same(bytes, mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: id }), `${id}: the bytes mqtt-packet makes of the same CONNECT`)
  }
})

type Peer = (socket: net.Socket, connect: Buffer) => void

/** A listener answering each connection with `peer` once a whole CONNECT arrived; closed in teardown. */
async function peer (t: Test, answer: Peer): Promise<{ port: number, connects: Buffer[] }> {
  const sockets = new Set<net.Socket>()
  const connects: Buffer[] = []
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => { sockets.delete(socket) })
    socket.on('error', () => {})
    let got = Buffer.alloc(0)
    let answered = false
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk])
      const length = (got[1] ?? 0) + 2 // the probe's CONNECT is short: one length byte
      if (answered || got.length < 2 || got.length < length) return
      answered = true
      connects.push(got.subarray(0, length))
      answer(socket, got)
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  })
  return { port: (server.address() as net.AddressInfo).port, connects }
}

const broker = (port: number): ReturnType<typeof brokerSocket> => brokerSocket({ url: `mqtt://127.0.0.1:${port}`, host: '127.0.0.1', port, tls: undefined, proxyProtocol: undefined })

t.test('probeBroker: CONNACK 0 is a pass', async (t) => {
  const p = await peer(t, (s) => { s.write(Buffer.from([0x20, 2, 0, 0])) })
  const r = await probeBroker(broker(p.port), 'mqtt-guard-probe-test-0', 1000)
  t.match(r, { ok: true, code: 0 })
  t.ok(r.ms >= 0 && r.ms < 1000, `answered in ${r.ms} ms`)
  t.equal(p.connects.length, 1, 'the peer got one CONNECT')
  const got: Packet[] = []
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  parser.on('packet', (pk: Packet) => { got.push(pk) })
  parser.parse(p.connects[0] as Buffer)
  t.match(got[0], { cmd: 'connect', clientId: 'mqtt-guard-probe-test-0' }, 'with the probe client ID')
})

t.test('probeBroker: a CONNACK in two pieces is read whole', async (t) => {
  const p = await peer(t, (s) => {
    s.write(Buffer.from([0x20, 2]))
    setImmediate(() => { s.write(Buffer.from([0, 0])) })
  })
  t.match(await probeBroker(broker(p.port), 'probe-split', 1000), { ok: true, code: 0 })
})

t.test('probeBroker: CONNACK 5 (the probe is not authorised) still means the broker is up', async (t) => {
  const p = await peer(t, (s) => { s.write(Buffer.from([0x20, 2, 0, 5])) })
  t.match(await probeBroker(broker(p.port), 'probe-refused', 1000), { ok: true, code: 5 })
})

t.test('probeBroker: a peer that accepts TCP and never answers fails within the timeout', async (t) => {
  const p = await peer(t, () => { /* a hung broker: reads the CONNECT, says nothing */ })
  const timeoutMs = 300
  const start = Date.now()
  const r = await probeBroker(broker(p.port), 'probe-hung', timeoutMs)
  const took = Date.now() - start
  t.match(r, { ok: false, error: /no CONNACK within 300 ms/ })
  t.ok(took >= timeoutMs - 20 && took < timeoutMs + 500, `gave up after ${took} ms (timeout ${timeoutMs} ms)`)
  t.equal(p.connects.length, 1, 'the CONNECT was sent: TCP accept alone is not a pass')
})

t.test('probeBroker: CONNACK 3 (server unavailable) fails', async (t) => {
  const p = await peer(t, (s) => { s.write(Buffer.from([0x20, 2, 0, 3])) })
  t.match(await probeBroker(broker(p.port), 'probe-unavailable', 1000), { ok: false, error: /CONNACK 3 \(server unavailable\)/ })
})

t.test('probeBroker: another packet than CONNACK fails', async (t) => {
  const p = await peer(t, (s) => { s.write(Buffer.from([0xd0, 0, 0, 0])) })
  t.match(await probeBroker(broker(p.port), 'probe-pingresp', 1000), { ok: false, error: /not CONNACK/ })
})

t.test('probeBroker: a peer that closes without answering fails at once', async (t) => {
  const p = await peer(t, (s) => { s.destroy() })
  const r = await probeBroker(broker(p.port), 'probe-closed', 1000)
  t.match(r, { ok: false, error: /closed the connection before CONNACK|ECONNRESET/ })
  t.ok(r.ms < 1000, `after ${r.ms} ms, not the timeout`)
})

t.test('probeBroker: a closed port fails at once', async (t) => {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  const r = await probeBroker(broker(port), 'probe-nothing', 1000)
  t.match(r, { ok: false, error: /ECONNREFUSED/ })
  t.ok(r.ms < 1000, `after ${r.ms} ms, not the timeout`)
})
