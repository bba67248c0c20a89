// failover: redirect at CONNECT (issue 21): an MQTT 5 client whose own broker is down gets
// CONNACK 0x9C with the Server Reference of its next broker, instead of being relayed there;
// an MQTT 3.1.1 client with the same client ID is relayed to that next broker (3.1.1 has no
// redirect). A client whose broker is up is relayed as usual. Two real Mosquittos and a port
// where nothing listens (a dead broker).

import net from 'node:net'
import t from 'tap'
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js'
import { startProxy } from '../helpers/proxy.js'
import { RawMqttClient } from '../helpers/raw-client.js'
import { cleanupAll, pollUntil } from '../helpers/processes.js'
import { hashOrder, idsPreferring, poolOf } from '../helpers/broker-pool.js'

t.teardown(cleanupAll)

/** A loopback port where nothing listens (taken, then let go). */
async function deadPort (): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  return port
}

const brokers: Mosquitto[] = []
t.before(async () => { brokers.push(await startMosquitto(), await startMosquitto()) })
t.teardown(async () => { await Promise.all(brokers.map(async (b) => { await b.stop() })) })

t.test('redirect: CONNACK 0x9C to the next broker for MQTT 5, relayed for 3.1.1', async (t) => {
  const dead = await deadPort()
  const urls = [`mqtt://127.0.0.1:${dead}`, ...brokers.map((b) => b.url)]
  const references = ['dead.example:1883', 'one.example:1883', 'two.example:1883']
  const proxy = await startProxy({
    config: {
      upstream: { brokers: urls.map((url, i) => ({ url, serverReference: references[i] })), failover: 'redirect', healthCheck: { intervalMs: 200, timeoutMs: 150, failures: 1, recoveries: 1 } }
    }
  })
  t.teardown(proxy.stop)
  const pool = poolOf(proxy)
  await pollUntil('the dead broker marked down', 5000, async () => pool.view().brokers[0]?.state === 'down' ? true : undefined)
  const ports = [dead, ...brokers.map((b) => b.port)]
  const [onDead, onUp] = [idsPreferring(ports, 0, 1, 'redir')[0] as string, idsPreferring(ports, 1, 1, 'redir')[0] as string]
  const next = hashOrder(ports, onDead)[1] as number

  const v5 = await RawMqttClient.open(proxy.port, 5)
  t.teardown(v5.destroy.bind(v5))
  v5.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId: onDead, clean: true, keepalive: 30 })
  const refused = await v5.next('connack')
  t.equal(refused.reasonCode, 0x9c, 'MQTT 5: 0x9C use another server')
  t.equal(refused.properties?.serverReference, references[next], 'with the Server Reference of its next broker')
  await v5.waitClose()

  const v4 = await RawMqttClient.open(proxy.port, 4)
  t.teardown(v4.destroy.bind(v4))
  v4.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: onDead, clean: true, keepalive: 30 })
  t.equal((await v4.next('connack')).returnCode, 0, 'MQTT 3.1.1: relayed to the next broker (no redirect in 3.1.1)')
  t.equal(pool.view().brokers[next]?.connections, 1, 'on the next broker in its hash order')

  const up = await RawMqttClient.open(proxy.port, 5)
  t.teardown(up.destroy.bind(up))
  up.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId: onUp, clean: true, keepalive: 30 })
  t.equal((await up.next('connack')).reasonCode, 0, 'a client whose broker is up is relayed as usual')
})
