// Backpressure, broker → client: a subscriber that stops reading must not make the proxy buffer
// what the broker sends it. The proxy runs as a child process (its RSS is its own) in front of a
// private Mosquitto told to queue without limit, so the backlog has to pile up in Mosquitto.
// A fast publisher floods QoS 0 4 KiB messages; the proxy's VmRSS is sampled every 500 ms.
// Control: Mosquitto's RSS grows by most of what was published, and once the subscriber reads
// again every message arrives, in order.
//
// Not covered: the reverse direction (a publisher whose broker reads slowly). Making Mosquitto
// read slowly on purpose is not possible without stopping it (SIGSTOP would also stop its
// writes and acks), so that path is left to unit tests of Lane/Valve.

import { readFileSync } from 'node:fs'
import { once } from 'node:events'
import t from 'tap'
import { startMosquitto } from '../helpers/mosquitto.js'
import { cleanupAll } from '../helpers/processes.js'
import { freePort } from '../helpers/ports.js'
import { runCli, type CliProcess } from '../helpers/cli-process.js'
import { RawMqttClient } from '../helpers/raw-client.js'

t.teardown(cleanupAll)

const MiB = 1024 * 1024
const PAYLOAD = 4096
const BOUND = 64 * MiB // the proxy may grow by at most this much over its baseline
const TOTAL = 200 * MiB // payload bytes to publish: more than 3 × BOUND
const MAX_FLOOD_MS = 20_000
const TOPIC = 'bp/flood'

/** VmRSS of a process in bytes, from /proc/<pid>/status. */
function rss (pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (match === null) throw new Error(`no VmRSS for ${pid}`)
  return Number(match[1]) * 1024
}

const mb = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`

/** Starts the CLI on a free port; a port taken between freePort() and the bind is retried. */
async function startProxyProcess (upstream: string): Promise<{ proc: CliProcess, port: number }> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    const proc = runCli(['start', '--listen', `127.0.0.1:${port}`, '--upstream', upstream, '--log-level', 'info'])
    try {
      const bound = await proc.listening()
      if (bound !== port) throw new Error(`listening on ${bound}, asked for ${port}`)
      return { proc, port }
    } catch (err) {
      await proc.stop()
      if (attempt >= 2 || !proc.stderr.includes('EADDRINUSE')) throw err
    }
  }
}

t.test('a subscriber that stops reading: the proxy stays small, Mosquitto holds the backlog', async (t) => {
  const broker = await startMosquitto({ extraConfig: 'max_queued_messages 1000000\nmax_queued_bytes 0' })
  const { proc, port } = await startProxyProcess(broker.url)
  const pid = proc.child.pid as number
  t.teardown(async () => { if (proc.running) await proc.stop() })

  // Subscriber: raw socket, QoS 0; counts and checks messages without keeping them.
  const sub = await RawMqttClient.connected(port, 4, 'bp-sub', false)
  t.teardown(() => sub.destroy())
  let received = 0
  let outOfOrder = 0
  const arrived = new EventTarget()
  sub.on('packet', (p) => {
    if (p.cmd !== 'publish') return
    if (p.topic !== TOPIC || (p.payload as Buffer).readUInt32BE(0) !== received || p.payload.length !== PAYLOAD) outOfOrder++
    received++
    arrived.dispatchEvent(new Event('message'))
  })
  const suback = sub.next('suback')
  sub.sendPacket({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: TOPIC, qos: 0 }] })
  t.same((await suback).granted, [0], 'subscribed at QoS 0')
  sub.pause() // and never read again until the control below

  // Publisher: raw socket, MQTT 5, as fast as the socket takes them.
  const pub = await RawMqttClient.connected(port, 5, 'bp-pub')
  t.teardown(() => pub.destroy())

  const baseline = rss(pid)
  const brokerBaseline = rss(broker.pid)
  let peak = baseline
  const sampler = setInterval(() => { if (proc.running) peak = Math.max(peak, rss(pid)) }, 500)
  t.teardown(() => { clearInterval(sampler) })

  const started = Date.now()
  let published = 0
  const payload = Buffer.alloc(PAYLOAD, 0x61)
  while (published * PAYLOAD < TOTAL && Date.now() - started < MAX_FLOOD_MS && !pub.isClosed) {
    payload.writeUInt32BE(published, 0)
    const ok = pub.sendPacket({ cmd: 'publish', topic: TOPIC, payload, qos: 0, retain: false, dup: false })
    published++
    if (!ok) await once(pub.socket, 'drain')
  }
  // A PINGRESP proves the proxy and Mosquitto have read everything before it on this connection.
  const pong = pub.next('pingresp', 30_000)
  pub.sendPacket({ cmd: 'pingreq' })
  await pong
  const floodMs = Date.now() - started
  peak = Math.max(peak, rss(pid))
  clearInterval(sampler)
  const brokerGrowth = rss(broker.pid) - brokerBaseline
  const receivedWhilePaused = received

  t.comment(`published ${published} messages (${mb(published * PAYLOAD)}) in ${floodMs} ms; proxy RSS ${mb(baseline)} -> peak ${mb(peak)}; ` +
    `Mosquitto grew ${mb(brokerGrowth)}; subscriber read ${receivedWhilePaused} while paused`)
  t.ok(published * PAYLOAD > 3 * BOUND, `published ${mb(published * PAYLOAD)}, more than 3 x ${mb(BOUND)}`)
  t.ok(peak - baseline < BOUND, `proxy RSS grew ${mb(peak - baseline)}, under ${mb(BOUND)}`)
  t.equal(pub.isClosed, false, 'publisher never disconnected')
  t.equal(receivedWhilePaused, 0, 'the paused subscriber read nothing')
  t.ok(brokerGrowth > published * PAYLOAD / 2, `the backlog is in Mosquitto: it grew ${mb(brokerGrowth)}`)

  // Control: the data was held, not lost. The subscriber reads again and gets every message.
  const all = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`${received}/${published} messages 30 s after resume`)) }, 30_000)
    const check = (): void => { if (received >= published) { clearTimeout(timer); resolve() } }
    arrived.addEventListener('message', check)
    check()
  })
  sub.resume()
  await all
  t.equal(received, published, `all ${published} messages delivered after resume`)
  t.equal(outOfOrder, 0, 'in order, each intact')
  t.same(sub.parseErrors, [], 'subscriber stream parses')
  t.equal(sub.isClosed, false, 'subscriber still connected')

  // SIGTERM: the proxy closes its connections (MQTT 5: DISCONNECT 0x8B) and exits 0.
  const stopAt = Date.now()
  const shutdown = pub.next('disconnect')
  proc.signal('SIGTERM')
  const exit = await Promise.race([proc.exited, new Promise<'timeout'>((resolve) => { setTimeout(() => { resolve('timeout') }, 5000).unref() })])
  t.same(exit, { code: 0, signal: null }, `exited 0 within 5 s of SIGTERM (${Date.now() - stopAt} ms)`)
  t.equal((await shutdown).reasonCode, 0x8b, 'v5 publisher got DISCONNECT 0x8B server shutting down')
  await sub.waitClose(1000)
  t.pass('subscriber closed by the proxy')
})
