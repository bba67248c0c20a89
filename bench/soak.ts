// `npm run soak`: mixed QoS 0/1/2 traffic, subscribe/unsubscribe churn and reconnects through
// the proxy with auth, acl, client-id, dedupe and trace (idle) on, Redis and Mosquitto private.
// Prints sent, received, lost and duplicated per QoS and the proxy's memory over time.
//
//   node dist/bench/soak.js [--duration SECONDS] [--json] [--direct]
//   SOAK_WITHOUT=client-id,dedupe node dist/bench/soak.js   (leave plugins out, to narrow a loss down)
//
// QoS 1 and 2 must lose nothing; QoS 2 must never be duplicated (exit 1 otherwise).
// QoS 0 may lose messages while a subscriber reconnects: it is reported, not judged.

import { parseArgs } from 'node:util'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import { startMosquitto } from '../test/helpers/mosquitto.js'
import { startRedis } from '../test/helpers/redis.js'
import { runCli } from '../test/helpers/cli-process.js'
import { mosquittoPasswdFile } from '../test/helpers/auth-clients.js'

type QoS = 0 | 1 | 2
interface Counts { sent: number, received: number, lost: number, duplicated: number }

const PUBLISHERS = 6
const SUBSCRIBERS = 6
const PASSWORD = 'soak-pass-word'

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

function rss (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? NaN : Number(m[1]) / 1024
}

async function connect (url: string, clientId: string, version: 4 | 5): Promise<MqttClient> {
  const c = mqtt.connect(url, {
    clientId, protocolVersion: version, clean: false, username: 'soak', password: PASSWORD, reconnectPeriod: 200, connectTimeout: 5000,
    ...(version === 5 && { properties: { sessionExpiryInterval: 3600 } })
  })
  c.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => { resolve() })
    setTimeout(() => { reject(new Error(`${clientId}: no CONNACK`)) }, 10_000).unref()
  })
  return c
}

export async function soak (seconds: number, log: (line: string) => void, direct = false): Promise<{ qos: Record<QoS, Counts>, memoryMiB: number[], ok: boolean }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-soak-'))
  const broker = await startMosquitto({ extraConfig: 'max_queued_messages 0\nmax_inflight_messages 100\n' })
  const redis = await startRedis()
  const stops: Array<() => Promise<unknown>> = [async () => await broker.stop(), async () => await redis.stop(), async () => await rm(dir, { recursive: true, force: true })]
  try {
    await mosquittoPasswdFile(path.join(dir, 'passwd'), [{ user: 'soak', password: PASSWORD }])
    await writeFile(path.join(dir, 'guard.json'), JSON.stringify({
      listen: '127.0.0.1:0', admin: false, upstream: broker.url, redis: { url: redis.url }, log: { level: 'warn' },
      plugins: [
        { name: 'auth', passwordFile: './passwd' },
        { name: 'acl', rules: [{ allow: ['publish', 'subscribe', 'receive'], topic: 'soak/#' }] },
        { name: 'client-id', flapping: false },
        { name: 'dedupe' },
        { name: 'trace', enabled: false }
      ].filter((p) => !(process.env.SOAK_WITHOUT ?? '').split(',').includes(p.name))
    }))
    const proxy = runCli(['start', '--config', path.join(dir, 'guard.json'), '--log-level', 'info'])
    stops.unshift(async () => await proxy.stop())
    const url = direct ? broker.url : `mqtt://127.0.0.1:${await proxy.listening()}`
    const pid = proxy.child.pid as number
    const qos: Record<QoS, Counts> = { 0: { sent: 0, received: 0, lost: 0, duplicated: 0 }, 1: { sent: 0, received: 0, lost: 0, duplicated: 0 }, 2: { sent: 0, received: 0, lost: 0, duplicated: 0 } }
    // got[qos][subscriber] = message ids seen, with counts
    const got: Array<Array<Map<string, number>>> = [0, 1, 2].map(() => Array.from({ length: SUBSCRIBERS }, () => new Map()))
    const subs = await Promise.all(Array.from({ length: SUBSCRIBERS }, async (_, i) => {
      const c = await connect(url, `soak-sub-${i}`, i % 2 === 0 ? 5 : 4)
      await c.subscribeAsync({ 'soak/q0': { qos: 0 }, 'soak/q1': { qos: 1 }, 'soak/q2': { qos: 2 } })
      c.on('message', (topic, payload) => {
        const q = Number(topic.slice(-1)) as QoS
        const map = got[q]?.[i] as Map<string, number>
        const id = payload.toString()
        map.set(id, (map.get(id) ?? 0) + 1)
      })
      return c
    }))
    const pubs = await Promise.all(Array.from({ length: PUBLISHERS }, async (_, i) => await connect(url, `soak-pub-${i}`, i % 2 === 0 ? 4 : 5)))
    const acked: Array<Set<string>> = [new Set(), new Set(), new Set()]
    const memoryMiB: number[] = []
    const end = Date.now() + seconds * 1000
    let seq = 0
    const churn = setInterval(() => {
      // Subscribe/unsubscribe churn on a side topic, and one client reconnecting.
      const s = subs[seq % SUBSCRIBERS] as MqttClient
      s.subscribe('soak/side', { qos: 1 }, () => { s.unsubscribe('soak/side') })
      const which = process.env.SOAK_RECONNECT ?? 'both'
      const r = (which === 'pub' || (which === 'both' && seq % 4 === 0) ? pubs[seq % PUBLISHERS] : subs[seq % SUBSCRIBERS]) as MqttClient
      // The network drops the connection; the client comes back by itself (reconnectPeriod).
      // (MQTT.js's own reconnect() ends its message stores, which loses incoming QoS 2 state.)
      if (which !== 'none') r.stream.destroy()
    }, 1000)
    const sampler = setInterval(() => {
      memoryMiB.push(Math.round(rss(pid) * 10) / 10)
      log(`t=${memoryMiB.length}s sent ${qos[0].sent}/${qos[1].sent}/${qos[2].sent} (QoS 0/1/2), proxy RSS ${memoryMiB.at(-1) ?? NaN} MiB`)
    }, 1000)
    const inFlight = new Set<Promise<unknown>>()
    const pending = new Map<Promise<unknown>, string>()
    while (Date.now() < end) {
      for (const [i, p] of pubs.entries()) {
        const q = (seq % 3) as QoS
        const id = `${i}-${seq}`
        qos[q].sent++
        const done: Promise<unknown> = p.publishAsync(`soak/q${q}`, id, { qos: q }).then(() => { acked[q]?.add(id) }, () => {}).finally(() => { inFlight.delete(done); pending.delete(done) })
        // A QoS 0 publish written as its socket is destroyed may never call back (MQTT.js):
        // it is simply not counted; only QoS 1 and 2 are waited for.
        if (q > 0) {
          inFlight.add(done)
          pending.set(done, `QoS ${q} ${id}`)
        }
      }
      seq++
      // About 6 × 200 = 1 200 messages a second; at most 2 000 waiting for their acknowledgement.
      while (inFlight.size > 2000) await Promise.race([...inFlight, sleep(1000)])
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    clearInterval(churn)
    // Every publish is acknowledged once its client is back; bounded, in case one never is
    // (it then counts as not sent: only acknowledged messages are expected at the subscribers).
    await Promise.race([Promise.all(inFlight), sleep(30_000)])
    if (inFlight.size > 0) log(`${inFlight.size} publishes still unacknowledged after 30 s: ${[...pending.values()].slice(0, 5).join(', ')}`)
    // Let queued deliveries drain, then count.
    const total = (): number => got.reduce((n, perSub) => n + perSub.reduce((k, m) => k + m.size, 0), 0)
    let last = -1
    for (let i = 0; i < 30 && total() !== last; i++) {
      last = total()
      await new Promise((resolve) => setTimeout(resolve, 1000))
    }
    clearInterval(sampler)
    for (const q of [0, 1, 2] as const) {
      const c = qos[q]
      for (const map of got[q] ?? []) {
        c.received += map.size
        for (const id of acked[q] ?? []) if (!map.has(id)) c.lost++
        for (const n of map.values()) if (n > 1) c.duplicated += n - 1
      }
      // Per subscriber: every acknowledged message should reach each of them.
      c.sent = (acked[q]?.size ?? 0) * SUBSCRIBERS
    }
    await Promise.all([...subs, ...pubs].map(async (c) => { await c.endAsync(true) }))
    const ok = qos[1].lost === 0 && qos[2].lost === 0 && qos[2].duplicated === 0
    return { qos, memoryMiB, ok }
  } finally {
    for (const stop of stops) await stop().catch(() => {})
  }
}

async function main (): Promise<number> {
  const { values } = parseArgs({ options: { duration: { type: 'string' }, json: { type: 'boolean' }, direct: { type: 'boolean' } } })
  const seconds = Math.max(5, Math.min(3600, Number(values.duration ?? 300)))
  // --direct: the same load straight at the broker, to tell the proxy's losses from the rest.
  const result = await soak(seconds, (line) => { process.stderr.write(`[soak] ${line}\n`) }, values.direct === true)
  if (values.json === true) {
    process.stdout.write(JSON.stringify(result) + '\n')
  } else {
    process.stdout.write(`\nsoak, ${seconds} s, ${PUBLISHERS} publishers → ${SUBSCRIBERS} subscribers (each message counted at every subscriber)\n\n`)
    process.stdout.write('| QoS | delivered (expected) | received | lost | duplicated |\n| ---: | ---: | ---: | ---: | ---: |\n')
    for (const q of [0, 1, 2] as const) {
      const c = result.qos[q]
      process.stdout.write(`| ${q} | ${c.sent} | ${c.received} | ${c.lost} | ${c.duplicated} |\n`)
    }
    const m = result.memoryMiB
    process.stdout.write(`\nproxy RSS (MiB), one sample a second: first ${m[0] ?? NaN}, max ${Math.max(...m)}, last ${m.at(-1) ?? NaN}\n`)
    process.stdout.write(result.ok ? 'QoS 1 and 2: nothing lost; QoS 2: no duplicate\n' : 'FAILED: QoS 1/2 lost, or QoS 2 duplicated\n')
  }
  return result.ok ? 0 : 1
}

if (process.argv[1]?.endsWith('soak.js') === true) {
  main().then((code) => { process.exit(code) }, (err: unknown) => { process.stderr.write(`soak: ${String(err)}\n`); process.exit(1) })
}
