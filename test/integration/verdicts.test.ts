// Every verdict on the hooks that matter, both directions, MQTT 3.1.1 and 5, through the
// proxy in front of a real Mosquitto, synchronous and asynchronous.

import t, { type Test } from 'tap'
import type { MqttClient } from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import type { IPublishPacket } from 'mqtt-packet'
import { startMosquitto } from '../helpers/mosquitto.js'
import { clientV, refusedCode } from '../helpers/e2e-mqtt.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { verdictPlugin, type VerdictRule } from '../helpers/verdict-plugin.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

async function proxyWith (t: Test, rules: VerdictRule[]): Promise<TestProxy> {
  const proxy = await startProxy({ config: { upstream: mosquitto.url }, extraPlugins: [verdictPlugin(rules)] })
  t.teardown(() => proxy.stop())
  return proxy
}



type Received = Array<{ topic: string, payload: string }> & { client?: MqttClient }

function collect (client: MqttClient): Received {
  const got: Received = []
  got.client = client
  client.on('message', (topic, payload) => { got.push({ topic, payload: payload.toString() }) })
  return got
}

/** Resolves once `count` messages have arrived; fails after 10 s instead of hanging. */
async function waitFor (got: Received, count: number): Promise<void> {
  if (got.length >= count) return
  const client = got.client as MqttClient
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { client.removeListener('message', check); reject(new Error(`${got.length} of ${count} messages within 10 s`)) }, 10_000)
    // Registered after collect()'s listener, so `got` already holds the message.
    const check = (): void => {
      if (got.length < count) return
      clearTimeout(timer)
      client.removeListener('message', check)
      resolve()
    }
    client.on('message', check)
  })
}

const isTopic = (topic: string) => (p: { cmd: string }) => p.cmd === 'publish' && (p as IPublishPacket).topic === topic

for (const version of [4, 5] as const) {
  for (const async of [false, true]) {
    const mode = `MQTT ${version === 5 ? '5' : '3.1.1'}${async ? ', async hooks' : ''}`

    t.test(`${mode}: CONNECT rejected gets the right CONNACK code`, async (t) => {
      const proxy = await proxyWith(t, [{ direction: 'in', cmd: 'connect', async, verdict: () => ({ action: 'reject', code: 'GUARD_ERR_NOT_AUTHORIZED' }) }])
      t.equal(await refusedCode(t, proxy.url, version), version === 5 ? 0x87 : 5)
      await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.reason === 'GUARD_ERR_NOT_AUTHORIZED')
    })

    t.test(`${mode}: CONNACK rejected by a plugin reaches the client with the plugin's code`, async (t) => {
      const proxy = await proxyWith(t, [{ direction: 'out', cmd: 'connack', async, verdict: () => ({ action: 'reject', code: 'GUARD_ERR_CLIENT_ID_REJECTED' }) }])
      t.equal(await refusedCode(t, proxy.url, version), version === 5 ? 0x85 : 2)
    })

    t.test(`${mode}: PUBLISH continue/replace, drop, answer and reject, in order`, async (t) => {
      const proxy = await proxyWith(t, [
        { direction: 'in', cmd: 'publish', async, when: isTopic('v/replace'), verdict: (p) => ({ action: 'continue', packet: { ...(p as IPublishPacket), topic: 'v/replaced', payload: Buffer.from('changed') } }) },
        { direction: 'in', cmd: 'publish', async, when: isTopic('v/drop'), verdict: () => ({ action: 'drop' }) },
        { direction: 'in', cmd: 'publish', async, when: isTopic('v/answer'), verdict: (p) => ({ action: 'answer', packets: [{ cmd: 'puback', messageId: (p as IPublishPacket).messageId }] }) },
        { direction: 'in', cmd: 'publish', async, when: isTopic('v/reject'), verdict: () => ({ action: 'reject', code: 'GUARD_ERR_NOT_AUTHORIZED' }) }
      ])
      const direct = await clientV(t, mosquitto.url, 4)
      await direct.subscribeAsync('v/#', { qos: 1 })
      const got = collect(direct)
      const client = await clientV(t, proxy.url, version)
      await client.publishAsync('v/replace', 'original', { qos: 1 })
      await client.publishAsync('v/drop', 'dropped', { qos: 0 })
      await client.publishAsync('v/answer', 'answered', { qos: 1 }) // PUBACK from the proxy
      for (let i = 0; i < 20; i++) client.publish('v/seq', String(i), { qos: 1 })
      await waitFor(got, 21)
      t.same(got[0], { topic: 'v/replaced', payload: 'changed' })
      t.same(got.slice(1).map((m) => m.payload), Array.from({ length: 20 }, (_, i) => String(i)), 'order kept, dropped and answered never reached the broker')
      if (version === 5) {
        const err = await client.publishAsync('v/reject', 'refused', { qos: 1 }).then(() => undefined, (e: Error & { code?: number }) => e)
        t.equal(err?.code, 0x87, 'MQTT 5 PUBACK carries 0x87')
      } else {
        client.publish('v/reject', 'refused', { qos: 1 })
        await once(client as unknown as EventEmitter, 'close')
        t.pass('3.1.1 publisher disconnected')
      }
      t.notOk(got.some((m) => m.topic === 'v/reject' || m.topic === 'v/drop' || m.topic === 'v/answer'))
    })

    t.test(`${mode}: SUBSCRIBE rejected gets failure SUBACK entries; replaced filter is what the broker sees`, async (t) => {
      const proxy = await proxyWith(t, [
        { direction: 'in', cmd: 'subscribe', async, when: (p) => p.cmd === 'subscribe' && p.subscriptions[0]?.topic === 'deny/#', verdict: () => ({ action: 'reject', code: 'GUARD_ERR_NOT_AUTHORIZED' }) },
        { direction: 'in', cmd: 'subscribe', async, when: (p) => p.cmd === 'subscribe' && p.subscriptions[0]?.topic === 'alias/#', verdict: (p) => ({ action: 'continue', packet: { ...p, subscriptions: [{ topic: 'real/#', qos: 1 }] } as typeof p }) }
      ])
      const client = await clientV(t, proxy.url, version)
      const err = await client.subscribeAsync(['deny/#', 'deny/x'], { qos: 1 }).then(() => undefined, (e: Error & { packet?: { granted: number[] } }) => e)
      t.same(err?.packet?.granted, version === 5 ? [0x87, 0x87] : [0x80, 0x80])
      await client.subscribeAsync('alias/#', { qos: 1 })
      const got = collect(client)
      const direct = await clientV(t, mosquitto.url, 4)
      await direct.publishAsync('real/1', 'via replaced filter', { qos: 1 })
      await waitFor(got, 1)
      t.same(got[0], { topic: 'real/1', payload: 'via replaced filter' })
    })

    t.test(`${mode}: deliveries (broker → client) replaced, dropped and rejected`, async (t) => {
      const proxy = await proxyWith(t, [
        { direction: 'out', cmd: 'publish', async, when: isTopic('o/drop'), verdict: () => ({ action: 'drop' }) },
        { direction: 'out', cmd: 'publish', async, when: isTopic('o/reject'), verdict: () => ({ action: 'reject', code: 'GUARD_ERR_NOT_AUTHORIZED' }) },
        { direction: 'out', cmd: 'publish', async, when: isTopic('o/replace'), verdict: (p) => ({ action: 'continue', packet: { ...(p as IPublishPacket), payload: Buffer.from('rewritten') } }) }
      ])
      const client = await clientV(t, proxy.url, version)
      await client.subscribeAsync('o/#', { qos: 1 })
      const got = collect(client)
      const direct = await clientV(t, mosquitto.url, 4)
      await direct.publishAsync('o/drop', 'x', { qos: 0 })
      await direct.publishAsync('o/reject', 'x', { qos: 1 })
      await direct.publishAsync('o/replace', 'x', { qos: 1 })
      await direct.publishAsync('o/last', 'end', { qos: 1 })
      await waitFor(got, 2)
      t.same(got, [{ topic: 'o/replace', payload: 'rewritten' }, { topic: 'o/last', payload: 'end' }])
      // The refused QoS 1 delivery was acknowledged to the broker, so it is not redelivered
      // to the session after a reconnect.
      t.equal(proxy.server.connections.size, 1)
    })
  }
}

t.test('MQTT 5: a dropped PUBLISH that set a topic alias does not leave the broker without it', async (t) => {
  const proxy = await proxyWith(t, [
    { direction: 'in', cmd: 'publish', when: (p) => p.cmd === 'publish' && p.payload.toString() === 'first', verdict: () => ({ action: 'drop' }) }
  ])
  const direct = await clientV(t, mosquitto.url, 4)
  await direct.subscribeAsync('alias/#', { qos: 1 })
  const got = collect(direct)
  const client = await clientV(t, proxy.url, 5)
  // QoS 0: a dropped QoS 1 PUBLISH would (rightly) never be acknowledged.
  await client.publishAsync('alias/x', 'first', { qos: 0, properties: { topicAlias: 1 } })
  await client.publishAsync('', 'second', { qos: 0, properties: { topicAlias: 1 } })
  await waitFor(got, 1)
  t.same(got, [{ topic: 'alias/x', payload: 'second' }], 'the broker learnt the alias from the next packet')
})
