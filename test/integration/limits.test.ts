// Limits the proxy announces: an MQTT 5 client learns maxPacketSize from CONNACK.

import t from 'tap'
import mqtt from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import type { IConnackPacket } from 'mqtt-packet'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy } from '../helpers/proxy.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

for (const upstream of ['mosquitto', 'embedded'] as const) {
  t.test(`MQTT 5 CONNACK carries the proxy's maximumPacketSize (${upstream})`, async (t) => {
    const proxy = await startProxy({ config: { upstream: upstream === 'embedded' ? 'embedded' : mosquitto.url, limits: { maxPacketSize: 4096 } } })
    t.teardown(() => proxy.stop())
    const client = mqtt.connect(proxy.url, { protocolVersion: 5, reconnectPeriod: 0 })
    t.teardown(() => { client.end(true) })
    const [connack] = await once(client as unknown as EventEmitter, 'connect') as [IConnackPacket]
    t.equal(connack.properties?.maximumPacketSize, 4096)
  })
}

t.test('MQTT 3.1.1 CONNACK is relayed as the broker sent it', async (t) => {
  const proxy = await startProxy({ config: { upstream: mosquitto.url, limits: { maxPacketSize: 4096 } } })
  t.teardown(() => proxy.stop())
  const client = mqtt.connect(proxy.url, { protocolVersion: 4, reconnectPeriod: 0 })
  t.teardown(() => { client.end(true) })
  const [connack] = await once(client as unknown as EventEmitter, 'connect') as [IConnackPacket]
  t.equal(connack.returnCode, 0)
  t.equal(connack.properties, undefined)
})
