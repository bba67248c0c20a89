// Every hook is called: a plugin on every packet type in both directions sees a whole
// MQTT 5 session (QoS 0/1/2 both ways, unsubscribe, ping, disconnect), in wire order, with
// synchronous and asynchronous hooks. And nothing is left behind once clients are gone.

import t from 'tap'
import mqtt from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import type { PacketCmd } from 'mqtt-packet'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy } from '../helpers/proxy.js'
import { verdictPlugin, type VerdictRule } from '../helpers/verdict-plugin.js'
import { pollUntil } from '../helpers/processes.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

const IN: PacketCmd[] = ['connect', 'publish', 'puback', 'pubrec', 'pubrel', 'pubcomp', 'subscribe', 'unsubscribe', 'pingreq', 'disconnect']
const OUT: PacketCmd[] = ['connack', 'publish', 'puback', 'pubrec', 'pubrel', 'pubcomp', 'suback', 'unsuback', 'pingresp']

for (const version of [4, 5] as const) {
  for (const async of [false, true]) {
    t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}${async ? ', async' : ''}: every hook sees its packets`, async (t) => {
      const rules: VerdictRule[] = [
        ...IN.map((cmd) => ({ direction: 'in' as const, cmd, async, verdict: () => undefined })),
        ...OUT.map((cmd) => ({ direction: 'out' as const, cmd, async, verdict: () => undefined }))
      ]
      const spy = verdictPlugin(rules, 'spy')
      const proxy = await startProxy({ config: { upstream: mosquitto.url }, extraPlugins: [spy] })
      t.teardown(() => proxy.stop())
      const client = mqtt.connect(proxy.url, { protocolVersion: version, reconnectPeriod: 0, keepalive: 1 })
      await once(client as unknown as EventEmitter, 'connect')
      await client.subscribeAsync('hooks/#', { qos: 2 })
      const received: string[] = []
      client.on('message', (topic) => { received.push(topic) })
      for (const qos of [0, 1, 2] as const) await client.publishAsync(`hooks/q${qos}`, 'x', { qos })
      await pollUntil('three deliveries', 5000, () => received.length === 3 ? true : undefined)
      await client.unsubscribeAsync('hooks/#')
      // keepalive 1 s: MQTT.js sends PINGREQ when idle.
      await pollUntil('a ping', 5000, () => spy.seen.includes('out:pingresp') ? true : undefined)
      await client.endAsync()
      await pollUntil('connection closed', 5000, () => proxy.server.connections.size === 0 ? true : undefined)
      const seen = new Set(spy.seen.map((s) => s.split(':').slice(0, 2).join(':')))
      for (const cmd of IN) t.ok(seen.has(`in:${cmd}`), `in:${cmd}`)
      for (const cmd of OUT) t.ok(seen.has(`out:${cmd}`), `out:${cmd}`)
      t.same(received, ['hooks/q0', 'hooks/q1', 'hooks/q2'])
      // Wire order of the session's first packets, in each direction.
      t.same(spy.seen.filter((s) => s.startsWith('in:')).slice(0, 2), ['in:connect', 'in:subscribe'])
      t.same(spy.seen.filter((s) => s.startsWith('out:')).slice(0, 2), ['out:connack', 'out:suback'])
    })
  }
}

t.test('no socket, timer or handle is left once 60 clients have come and gone', async (t) => {
  const proxy = await startProxy({ config: { upstream: mosquitto.url } })
  t.teardown(() => proxy.stop())
  const baseline = process.getActiveResourcesInfo().length
  for (let round = 0; round < 3; round++) {
    const clients = Array.from({ length: 20 }, (_, i) => mqtt.connect(proxy.url, { protocolVersion: i % 2 === 0 ? 4 : 5, reconnectPeriod: 0 }))
    await Promise.all(clients.map(async (c) => await once(c as unknown as EventEmitter, 'connect')))
    // Half leave politely, half vanish.
    await Promise.all(clients.map(async (c, i) => { if (i % 2 === 0) await c.endAsync(); else c.stream.destroy() }))
  }
  await pollUntil('proxy connections gone', 10_000, () => proxy.server.connections.size === 0 ? true : undefined)
  const after = await pollUntil('handles back to baseline', 10_000, () => {
    const now = process.getActiveResourcesInfo().length
    return now <= baseline ? now : undefined
  })
  t.ok(after <= baseline, `active resources ${after}, baseline ${baseline}`)
})
