// The embedded broker with persistent subscribers of retained messages (moscajs/aedes#1003 and
// the wildcard QoS downgrade, worked around in src/upstream/embedded-workarounds.ts), its refusal of an
// empty client ID without clean session (MQTT 3.1.1) and the broker's own close reason at info.
// Run over both persistences the proxy gives aedes: memory, and Redis.

import { randomBytes } from 'node:crypto'
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import t from 'tap'
import type { Test } from 'tap'
import { BASE, nextMessage } from '../helpers/e2e-mqtt.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { handMadeConnect, RawMqttClient } from '../helpers/raw-client.js'
import { cleanupAll } from '../helpers/processes.js'
import { startRedis } from '../helpers/redis.js'

t.teardown(cleanupAll)

type Version = 4 | 5
const rand = (): string => randomBytes(4).toString('hex')

async function publishRetained (url: string, topic: string): Promise<void> {
  const pub = await mqtt.connectAsync(url, { ...BASE, protocolVersion: 5, clientId: `pub-${rand()}` })
  await pub.publishAsync(topic, 'x', { qos: 2, retain: true })
  await pub.endAsync()
}

/** A persistent-session subscriber: 3.1.1 clean 0, or MQTT 5 with a session expiry. */
async function persistentSubscriber (t: Test, url: string, version: Version, clientId: string): Promise<{ c: MqttClient, closes: () => number }> {
  const c = await mqtt.connectAsync(url, {
    ...BASE,
    protocolVersion: version,
    clientId,
    clean: version === 5,
    ...(version === 5 && { properties: { sessionExpiryInterval: 300 } })
  })
  let closes = 0
  c.on('close', () => { closes++ })
  t.teardown(async () => { await c.endAsync(true) })
  return { c, closes: () => closes }
}

async function stillOpenAfter (c: MqttClient, ms: number): Promise<boolean> {
  await new Promise((resolve) => setTimeout(resolve, ms))
  return c.connected
}

function brokerCloses (proxy: TestProxy): number {
  return proxy.logs.lines.filter((l) => l.msg === 'embedded broker closed a client').length
}

const PERSISTENCES = ['memory', 'redis'] as const

for (const persistence of PERSISTENCES) {
  t.test(`embedded broker, ${persistence} persistence`, async (t) => {
    let redis: Record<string, unknown> = {}
    if (persistence === 'redis') {
      const server = await startRedis()
      t.teardown(server.stop)
      redis = { redis: { url: server.url, keyPrefix: `t-${rand()}:` } }
    }
    const proxy = await startProxy({ config: { upstream: 'embedded', ...redis } })
    t.teardown(proxy.stop)

    // The commands: mosquitto_pub -V 5 -q 2 -r, then mosquitto_sub -V 311 -q 1 -c on a
    // wildcard. The subscriber was disconnected about once a second and received nothing.
    for (const [version, qos] of [[4, 1], [4, 2], [5, 1], [5, 2]] as const) {
      t.test(`MQTT ${version === 5 ? '5' : '3.1.1'} persistent subscriber at QoS ${qos} gets the retained QoS 2 message once and stays`, async (t) => {
        const topic = `demo-${rand()}/ret`
        await publishRetained(proxy.url, topic)
        const before = brokerCloses(proxy)
        const { c, closes } = await persistentSubscriber(t, proxy.url, version, `v-${rand()}`)
        const first = nextMessage(c, topic)
        const granted = await c.subscribeAsync(topic.replace('/ret', '/#'), { qos })
        t.equal(granted[0]?.qos, qos, 'granted as asked')
        const got = await first
        t.equal(got.payload, 'x')
        t.equal(got.packet.retain, true, 'a retained message')
        t.equal(got.packet.qos, qos, 'delivered at the lower of the published and the granted QoS')
        t.ok(await stillOpenAfter(c, 1500), 'still connected 1.5 s later (the acknowledgement did not close it)')
        t.equal(closes(), 0, 'never disconnected')
        t.equal(brokerCloses(proxy), before, 'the broker closed no client')
      })
    }

    t.test('a live QoS 2 message reaches a QoS 1 wildcard subscription at QoS 1', async (t) => {
      const base = `live-${rand()}`
      const { c } = await persistentSubscriber(t, proxy.url, 4, `v-${rand()}`)
      await c.subscribeAsync(`${base}/#`, { qos: 1 })
      const message = nextMessage(c, `${base}/x`)
      const pub = await mqtt.connectAsync(proxy.url, { ...BASE, clientId: `pub-${rand()}` })
      t.teardown(async () => { await pub.endAsync(true) })
      await pub.publishAsync(`${base}/x`, 'y', { qos: 2 })
      t.equal((await message).packet.qos, 1)
    })

    t.test('MQTT 3.1.1: an empty client ID with clean session 0 is refused with code 2 [MQTT-3.1.3-8]', async (t) => {
      const raw = await RawMqttClient.open(proxy.port, 4)
      t.teardown(raw.destroy.bind(raw))
      raw.send(handMadeConnect(4, '', 'MQTT', 0x00)) // clean session 0; mqtt-packet will not write it
      const connack = await raw.next('connack')
      t.equal(connack.returnCode, 2, 'identifier rejected, as Mosquitto answers')
      await raw.waitClose()
      const clean = await RawMqttClient.open(proxy.port, 4)
      t.teardown(clean.destroy.bind(clean))
      clean.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: '', clean: true, keepalive: 60 })
      t.equal((await clean.next('connack')).returnCode, 0, 'with clean session 1 the broker assigns an ID')
    })

    t.test('MQTT 3.1: an empty client ID is refused with code 2', async (t) => {
      const raw = await RawMqttClient.open(proxy.port, 3)
      t.teardown(raw.destroy.bind(raw))
      raw.send(handMadeConnect(3, '', 'MQIsdp'))
      t.equal((await raw.next('connack')).returnCode, 2)
    })

    t.test("the broker's reason for closing a client is logged at info", async (t) => {
      // A client that says nothing after CONNECT: aedes ends it at 1.5 × its keepalive.
      const clientId = `silent-${rand()}`
      const raw = await RawMqttClient.open(proxy.port, 4)
      t.teardown(raw.destroy.bind(raw))
      raw.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: true, keepalive: 1 })
      await raw.next('connack')
      const line = await proxy.logs.waitFor((l) => l.msg === 'embedded broker closed a client' && l.clientId === clientId, 5000)
      t.equal(line.level, 30, 'info')
      t.match(String(line.err), /keep ?alive/i, 'with the broker\'s reason')
      await raw.waitClose()
    })
  })
}
