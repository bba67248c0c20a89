// Reload under load (issue 22): 200 clients (100 MQTT 3.1.1, 100 MQTT 5) send each other QoS 1
// messages through the proxy to a real Mosquitto without pause while 10 reloads run in a row:
// limits, log level both ways, acl rules (in place), a listener added, trace added (a new
// generation) and its options changed, and one file that does not validate. Counted: no client
// sees a close, an offline or a DISCONNECT; every QoS 1 message acknowledged to its publisher
// reaches its subscriber (duplicates are reported; QoS 1 allows them); every reload's answer
// says what changed and each change is seen in effect on a connection made for the purpose.

import t from 'tap'
import type { MqttClient } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.js'
import { clientV } from '../helpers/e2e-mqtt.js'
import { freePort } from '../helpers/ports.js'
import { pollUntil } from '../helpers/processes.js'
import { drops, publishCode, reloadableProxy, roundTrip, type Raw } from '../helpers/reload.js'
import type { ReloadReport } from '../../src/reload/plan.js'

const CLIENTS = 200
const PUBLISH_EVERY_MS = 100
/** Messages that must arrive after each reload before the next one: traffic goes on through each. */
const BETWEEN = 1000

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

interface Knobs { maxConnections: number | string, level: string, deny?: string, extraPort?: number, trace?: Raw }

const config = (k: Knobs): Raw => ({
  listen: ['127.0.0.1:0', ...(k.extraPort === undefined ? [] : [`127.0.0.1:${k.extraPort}`])],
  upstream: mosquitto.url,
  limits: { maxConnections: k.maxConnections },
  log: { level: k.level },
  plugins: [
    { name: 'acl', rules: [...(k.deny === undefined ? [] : [{ deny: 'publish', topic: k.deny }]), { allow: ['publish', 'subscribe', 'receive'], topic: 'load/#' }] },
    ...(k.trace === undefined ? [] : [{ name: 'trace', ...k.trace }])
  ]
})

t.test('200 clients, QoS 1 traffic, 10 reloads in a row (one broken): no disconnect, no lost message, every change in effect', async (t) => {
  const extraPort = await freePort()
  let knobs: Knobs = { maxConnections: 1000, level: 'info' }
  const p = await reloadableProxy(t, config(knobs))
  const clients: MqttClient[] = []
  for (let batch = 0; batch < CLIENTS; batch += 20) {
    clients.push(...await Promise.all(Array.from({ length: 20 }, async (_, j) => {
      const i = batch + j
      const c = await clientV(t, p.url, i % 2 === 0 ? 4 : 5, { clientId: `load-${i}`, keepalive: 30 })
      await c.subscribeAsync(`load/to/${i}`, { qos: 1 })
      return c
    })))
  }
  const dropped = drops(clients)
  const received = new Map<string, number>()
  const acked = new Set<string>()
  const failed: string[] = []
  for (const c of clients) c.on('message', (_topic, payload) => { const key = payload.toString(); received.set(key, (received.get(key) ?? 0) + 1) })
  let publishing = true
  const timers = clients.map((c, i) => {
    let seq = 0
    const to = `load/to/${(i + 1) % CLIENTS}`
    return setInterval(() => {
      if (!publishing) return
      const key = `${i}:${seq++}`
      c.publish(to, key, { qos: 1 }, (err) => { if (err === undefined || err === null) acked.add(key); else failed.push(`${key} ${err.message}`) })
    }, PUBLISH_EVERY_MS)
  })
  t.teardown(() => { for (const timer of timers) clearInterval(timer) })
  const flowing = async (): Promise<void> => {
    const from = received.size
    await pollUntil(`${BETWEEN} more messages`, 10_000, () => received.size >= from + BETWEEN ? true : undefined)
  }
  await flowing()

  let probes = 0
  const probe = async (url = p.url): Promise<MqttClient> => await clientV(t, url, 5, { clientId: `probe-${++probes}` })
  const debugLines = (): number => p.logs.lines.filter((l) => l.level === 20).length
  const settings = (r: ReloadReport): string[] => r.changed.map((c) => `${c.setting}: ${c.what} (${c.reach})`)

  const steps: Array<{ name: string, knobs: Knobs, check: (r: ReloadReport) => Promise<void> }> = [
    {
      name: 'maxConnections 1000 → 900',
      knobs: { ...knobs, maxConnections: 900 },
      check: async (r) => {
        t.same(settings(r), ['limits.maxConnections: 1000 → 900 (new connections)'])
        t.equal(p.server.config.limits.maxConnections, 900)
      }
    },
    {
      name: 'log level info → debug',
      knobs: { maxConnections: 900, level: 'debug' },
      check: async (r) => {
        t.same(settings(r), ['log.level: info → debug (now)'])
        const before = debugLines()
        await (await probe()).endAsync()
        t.ok(debugLines() > before, 'a new connection writes debug lines')
      }
    },
    {
      name: 'acl: deny publish load/denied/#',
      knobs: { maxConnections: 900, level: 'debug', deny: 'load/denied/#' },
      check: async (r) => {
        t.same(settings(r), ['plugins[0] (acl): new options (now)'])
        const c = await probe()
        t.equal(await publishCode(c, 'load/denied/x'), 0x87, 'the new rule denies')
        await roundTrip(c, 'load/probe/3')
        await c.endAsync()
      }
    },
    {
      name: 'a listener added',
      knobs: { maxConnections: 900, level: 'debug', deny: 'load/denied/#', extraPort },
      check: async (r) => {
        t.same(settings(r), [`listen: added mqtt://127.0.0.1:${extraPort} (now)`])
        const c = await probe(`mqtt://127.0.0.1:${extraPort}`)
        await roundTrip(c, 'load/probe/4')
        await c.endAsync()
      }
    },
    {
      name: 'a file that does not validate',
      knobs: { maxConnections: 'lots', level: 'info', extraPort },
      check: async (r) => {
        t.match(r, { applied: false, changed: [], refused: [{ setting: 'config', detail: /limits\.maxConnections/ }] })
        t.equal(p.server.config.limits.maxConnections, 900, 'the limit stays')
        t.equal(p.server.config.log.level, 'debug', 'the level stays')
        const c = await probe()
        t.equal(await publishCode(c, 'load/denied/y'), 0x87, 'the rules stay')
        await c.endAsync()
      }
    },
    {
      name: 'maxConnections 900 → 800',
      knobs: { maxConnections: 800, level: 'debug', deny: 'load/denied/#', extraPort },
      check: async (r) => {
        t.same(settings(r), ['limits.maxConnections: 900 → 800 (new connections)'])
        t.equal(p.server.config.limits.maxConnections, 800)
      }
    },
    {
      name: 'log level debug → info',
      knobs: { maxConnections: 800, level: 'info', deny: 'load/denied/#', extraPort },
      check: async (r) => {
        t.same(settings(r), ['log.level: debug → info (now)'])
        const before = debugLines()
        await (await probe()).endAsync()
        t.equal(debugLines(), before, 'no debug line any more')
      }
    },
    {
      name: 'acl: another deny',
      knobs: { maxConnections: 800, level: 'info', deny: 'load/closed/#', extraPort },
      check: async (r) => {
        t.same(settings(r), ['plugins[0] (acl): new options (now)'])
        const c = await probe()
        t.equal(await publishCode(c, 'load/closed/x'), 0x87, 'the new rule denies')
        t.equal(await publishCode(c, 'load/denied/x'), 0, 'the old one is gone')
        await c.endAsync()
      }
    },
    {
      name: 'trace added (a new generation)',
      knobs: { maxConnections: 800, level: 'info', deny: 'load/closed/#', extraPort, trace: { enabled: false } },
      check: async (r) => {
        t.same(settings(r), ['plugins[1] (trace): added (new connections)'])
        t.match(r, { generation: 1 })
        t.ok(r.olderConnections >= CLIENTS, `the open clients stay on generation 0 (${r.olderConnections})`)
        t.same(p.server.host.plugins.map((pl) => pl.name), ['limits', 'acl', 'trace'])
      }
    },
    {
      name: 'trace options',
      knobs: { maxConnections: 800, level: 'info', deny: 'load/closed/#', extraPort, trace: { enabled: false, payload: 'hash' } },
      check: async (r) => {
        t.same(settings(r), ['plugins[1] (trace): new options (now)'])
        t.match(p.server.config.plugins[1], { options: { payload: 'hash' } })
        const c = await probe()
        t.equal(await publishCode(c, 'load/closed/y'), 0x87, 'the acl of generation 1 is the one in force')
        await c.endAsync()
      }
    }
  ]

  const started = Date.now()
  for (const [n, step] of steps.entries()) {
    const report = await p.reload(config(step.knobs))
    t.equal(report.reload, n + 1, `reload ${n + 1}: ${step.name}`)
    if (report.applied) knobs = step.knobs
    await step.check(report)
    await flowing()
  }
  t.equal(steps.filter((s) => s.knobs.maxConnections === 'lots').length, 1, 'one of the ten was broken')
  t.same(knobs.trace, { enabled: false, payload: 'hash' })

  publishing = false
  for (const timer of timers) clearInterval(timer)
  // Every publish still in flight is acknowledged (or fails) before the count.
  await pollUntil('every publish answered', 10_000, () => clients.every((c) => Object.keys(c.outgoing).length === 0) ? true : undefined)
  const missing = (): string[] => [...acked].filter((k) => !received.has(k))
  await pollUntil('every acknowledged message delivered', 10_000, () => missing().length === 0 ? true : undefined).catch(() => {})
  const duplicates = [...received.values()].filter((n) => n > 1).length
  const metrics = await p.server.metrics.registry.getSingleMetricAsString('mqtt_guard_reloads_total')
  t.comment(`${acked.size} messages acknowledged, ${received.size} distinct received, ${duplicates} duplicates, 10 reloads in ${Date.now() - started} ms`)
  t.same(failed, [], 'no publish failed')
  t.same(missing().slice(0, 10), [], 'no acknowledged QoS 1 message lost')
  t.ok(acked.size >= BETWEEN * steps.length, 'messages flowed throughout')
  t.same(dropped, [], 'no client saw a close, offline or DISCONNECT')
  t.match(metrics, /mqtt_guard_reloads_total\{result="applied"\} 9(\n|$)/)
  t.match(metrics, /mqtt_guard_reloads_total\{result="refused"\} 1(\n|$)/)
  t.match(metrics, /mqtt_guard_reloads_total\{result="partial"\} 0(\n|$)/)
  t.equal(p.logs.lines.filter((l) => l.msg === 'reloaded').length, 9, 'each applied reload logged')
})
