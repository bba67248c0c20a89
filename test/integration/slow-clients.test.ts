// Slow and idle attacks: connections that never send CONNECT, that trickle one byte at a
// time, and thousands that open and stall, are all closed by the connect timeout, and the
// proxy's file descriptors come back to where they were; a good client is served throughout.

import t from 'tap'
import net from 'node:net'
import { readdirSync } from 'node:fs'
import { once } from 'node:events'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy } from '../helpers/proxy.js'
import { clientV, nextMessage, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { handMadeConnect } from '../helpers/raw-client.js'
import { pollUntil } from '../helpers/processes.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const TIMEOUT_MS = 400
const proxy = await startProxy({ config: { upstream: mosquitto.url, limits: { connectTimeoutMs: TIMEOUT_MS } } })
t.teardown(() => proxy.stop())

/** This process's open descriptors (the proxy runs in it). */
const fds = (): number => readdirSync('/proc/self/fd').length

async function open (): Promise<net.Socket> {
  const s = net.connect({ port: proxy.port, host: '127.0.0.1' })
  s.on('error', () => {})
  await once(s, 'connect')
  return s
}

const closedWithin = async (s: net.Socket, ms: number): Promise<boolean> => await new Promise((resolve) => {
  if (s.destroyed) { resolve(true); return }
  const timer = setTimeout(() => { resolve(false) }, ms)
  s.once('close', () => { clearTimeout(timer); resolve(true) })
})

t.test('a good client is served while the attacks run', async (t) => {
  const good = await clientV(t, proxy.url, 5, { clientId: 'good' })
  const topic = uniqueTopic('slow')
  await good.subscribeAsync(topic, { qos: 1 })
  const baseline = fds()

  // 1. Connections that never send anything: closed at the connect timeout.
  const idle = await Promise.all(Array.from({ length: 50 }, open))
  const started = Date.now()
  const idleClosed = await Promise.all(idle.map(async (s) => await closedWithin(s, TIMEOUT_MS * 4)))
  t.ok(idleClosed.every(Boolean), 'every silent connection closed')
  t.ok(Date.now() - started >= TIMEOUT_MS * 0.8, 'not before the timeout')

  // 2. A CONNECT trickled one byte every 50 ms: the timer is not reset by bytes.
  const slow = await open()
  const bytes = handMadeConnect(4, 'trickle')
  let i = 0
  const drip = setInterval(() => { if (i < bytes.length && !slow.destroyed) slow.write(bytes.subarray(i, ++i)) }, 50)
  const trickleStart = Date.now()
  const trickled = await closedWithin(slow, TIMEOUT_MS * 4)
  clearInterval(drip)
  t.ok(trickled, 'a trickling client is closed too')
  t.ok(Date.now() - trickleStart < TIMEOUT_MS * 3, `at about the connect timeout (${Date.now() - trickleStart} ms)`)

  // 3. Thousands that open and stall, in waves, while the good client keeps publishing.
  let sent = 0
  let received = 0
  good.on('message', (tp) => { if (tp === topic) received++ })
  const publishing = setInterval(() => { sent++; good.publish(topic, String(sent), { qos: 1 }) }, 10)
  for (let wave = 0; wave < 4; wave++) {
    const sockets = await Promise.all(Array.from({ length: 500 }, open))
    const all = await Promise.all(sockets.map(async (s) => await closedWithin(s, TIMEOUT_MS * 6)))
    t.ok(all.every(Boolean), `wave ${wave + 1}: 500 stalled connections closed`)
  }
  clearInterval(publishing)
  const last = nextMessage(good, topic)
  good.publish(topic, 'end', { qos: 1 })
  await last.catch(() => undefined)
  await pollUntil('every message delivered', 5000, () => received >= sent + 1 ? true : undefined)
  t.equal(received, sent + 1, `all ${sent + 1} messages of the good client delivered`)

  // Every descriptor the attacks took is given back.
  await pollUntil('descriptors back to the baseline', 5000, () => fds() <= baseline + 5 ? true : undefined)
  t.ok(fds() <= baseline + 5, `descriptors ${fds()} against ${baseline} before`)
  t.equal(proxy.server.connections.size, 1, 'only the good client is left')
  const reasons = new Set(proxy.logs.lines.filter((l) => l.msg === 'connection closed' && l.clientId === undefined).map((l) => l.reason))
  t.same([...reasons], ['GUARD_ERR_CONNECT_TIMEOUT'], 'each one closed for the connect timeout, and logged')
})
