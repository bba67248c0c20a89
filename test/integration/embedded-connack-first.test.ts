// The embedded broker writes nothing to a client before its CONNACK [MQTT-3.2.0-1], even for a
// session resumed with clean session 0 while messages arrive for its stored subscriptions
// (src/upstream/embedded-workarounds.ts, point 3). aedes 1.2 subscribes the stored
// subscriptions before it writes the CONNACK; a message published in between went out first,
// and the proxy in front closed the connection as a protocol error. Here the publish is put
// exactly in that window (while aedes stores the will, the step after restoring the
// subscriptions), and the client's bytes are read raw. Over both persistences the proxy gives
// aedes: memory and Redis.

import net from 'node:net'
import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { Aedes, Client } from 'aedes'
import type { IPublishPacket } from 'mqtt-packet'
import { createEmbeddedBroker } from '../../src/upstream/embedded.js'
import { parseRedis } from '../../src/config/redis.js'
import { LogSink } from '../helpers/log-sink.js'
import { RawMqttClient } from '../helpers/raw-client.js'
import { startRedis } from '../helpers/redis.js'
import { cleanupAll } from '../helpers/processes.js'

t.teardown(cleanupAll)
const rand = (): string => randomBytes(4).toString('hex')

interface WillStep { delWill: (client: Client) => Promise<unknown> }

/** Runs `during` inside aedes' delWill for `clientId`, i.e. after restoreSubs, before CONNACK. */
function inConnectWindow (broker: Aedes, clientId: string, during: () => Promise<void>): void {
  const persistence = (broker as unknown as { persistence: WillStep }).persistence
  const delWill = persistence.delWill.bind(persistence)
  persistence.delWill = async (client) => {
    if (client.id === clientId) await during()
    return await delWill(client)
  }
}

async function publish (broker: Aedes, packet: Pick<IPublishPacket, 'topic' | 'payload' | 'qos'>): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    broker.publish({ cmd: 'publish', retain: false, dup: false, ...packet }, (err?: Error) => { if (err != null) reject(err); else resolve() })
  })
}

for (const persistence of ['memory', 'redis'] as const) {
  t.test(`${persistence} persistence: a resumed session gets its CONNACK first, then the message published meanwhile`, async (t) => {
    let redis
    if (persistence === 'redis') {
      const server = await startRedis()
      t.teardown(server.stop)
      redis = parseRedis({ url: server.url, keyPrefix: `cf-${rand()}:` }, process.cwd())
    }
    const logs = new LogSink()
    const embedded = await createEmbeddedBroker(redis, logs.logger('debug'))
    t.teardown(embedded.close)
    const server = net.createServer((socket) => { embedded.broker.handle(socket) })
    await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
    t.teardown(() => { server.close() })
    const port = (server.address() as net.AddressInfo).port

    const clientId = `resume-${rand()}`
    const topic = `cf/${rand()}`
    const first = await RawMqttClient.connected(port, 4, clientId)
    // connected() sends clean session 1; this session must persist, so start it over with 0.
    await first.destroy()
    const session = await RawMqttClient.open(port, 4)
    session.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: false, keepalive: 60 })
    await session.next('connack')
    session.sendPacket({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] })
    await session.next('suback')
    session.sendPacket({ cmd: 'disconnect' })
    await session.waitClose()

    inConnectWindow(embedded.broker, clientId, async () => {
      await publish(embedded.broker, { topic, payload: Buffer.from('qos1'), qos: 1 })
      await publish(embedded.broker, { topic, payload: Buffer.from('qos0'), qos: 0 })
      // Let a live delivery (written after a setImmediate in aedes) reach the socket.
      await new Promise((resolve) => setTimeout(resolve, 50))
    })
    const resumed = await RawMqttClient.open(port, 4)
    t.teardown(resumed.destroy.bind(resumed))
    resumed.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: false, keepalive: 60 })
    const connack = await resumed.next('connack')
    t.equal(connack.sessionPresent, true, 'the session was resumed')
    const message = await resumed.next('publish')
    t.equal(resumed.packets[0]?.cmd, 'connack', 'the first packet is the CONNACK [MQTT-3.2.0-1]')
    t.equal(message.payload.toString(), 'qos1', 'the QoS 1 message published meanwhile comes from the session queue')
    resumed.sendPacket({ cmd: 'puback', messageId: message.messageId })
    // Nothing else follows: no second copy of the QoS 1 message (the live delivery was left out).
    await new Promise((resolve) => setTimeout(resolve, 300))
    t.same(resumed.packets.map((p) => p.cmd), ['connack', 'publish'], 'one CONNACK, one PUBLISH, in that order')
  })
}
