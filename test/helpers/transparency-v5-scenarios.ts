// MQTT 5-only scenarios for test/integration/transparency-v5: each runs against one URL and
// returns a comparable result (see transparency-scenarios.ts for the shared ones).

import net from 'node:net'
import mqtt from 'mqtt'
import mqttPacket from 'mqtt-packet'
import type { IAuthPacket, Packet } from 'mqtt-packet'
import type { FakeSession } from './fake-broker.js'
import type { Mosquitto } from './mosquitto.js'
import * as S from './transparency-scenarios.js'

export const PROPERTIES = {
  userProperties: { a: '1', list: ['x', 'y'], 'ü-key': 'välue' },
  contentType: 'application/json',
  correlationData: Buffer.from([0, 1, 2, 0xff]),
  payloadFormatIndicator: true,
  messageExpiryInterval: 3600
}

/** QoS 0/1/2 PUBLISHes with every application property, to a subscription with an identifier. */
export async function withProperties (pubUrl: string, subUrl: string, tag: string): Promise<S.Msg[]> {
  const topic = `${tag}/props`
  const sub = await S.connectPeer(subUrl, 5, { clientId: `${tag}-sub` })
  await sub.client.subscribeAsync(topic, { qos: 1, properties: { subscriptionIdentifier: 7 } })
  const pub = await S.connectPeer(pubUrl, 5, { clientId: `${tag}-pub` })
  for (const qos of [0, 1, 2] as const) {
    await pub.client.publishAsync(topic, `{"qos":${qos}}`, { qos, properties: { ...PROPERTIES, responseTopic: `${tag}/reply` } })
  }
  const got = S.relative(await sub.messages(3), tag)
  await Promise.all([sub.client.endAsync(), pub.client.endAsync()])
  return got.map((m) => {
    const { messageExpiryInterval, responseTopic, ...rest } = m.properties ?? {}
    return {
      ...m,
      properties: {
        ...rest,
        responseTopic: typeof responseTopic === 'string' ? responseTopic.replace(`${tag}/`, '') : responseTopic,
        // Mosquitto forwards the remaining lifetime, which may have ticked by a second.
        expiryOk: typeof messageExpiryInterval === 'number' && messageExpiryInterval > 3590 && messageExpiryInterval <= 3600
      }
    }
  })
}

/** A client that ends with DISCONNECT 0x04 "disconnect with will message": the will goes out. */
export async function disconnectWithWill (url: string, tag: string, mosquitto: Mosquitto): Promise<S.Msg[]> {
  const watcher = await S.connectPeer(mosquitto.url, 5, { clientId: `${tag}-watch` })
  await watcher.client.subscribeAsync(`${tag}/will`, { qos: 1 })
  const leaver = await S.connectPeer(url, 5, { clientId: `${tag}-leaver`, will: { topic: `${tag}/will`, payload: Buffer.from('asked for'), qos: 1, retain: false } })
  await leaver.client.endAsync({ reasonCode: 0x04 })
  const got = S.relative(await watcher.messages(1), tag)
  await watcher.client.endAsync()
  return got
}

/** A raw client PUBLISHes with topic alias `alias` (Mosquitto allows 1..10): what comes back? */
export async function badAlias (url: string, tag: string, alias: number): Promise<string[]> {
  const { hostname, port } = new URL(url)
  const socket = net.connect(Number(port), hostname)
  const parser = mqttPacket.parser({ protocolVersion: 5 })
  const got: string[] = []
  const opts = { protocolVersion: 5 as const }
  parser.on('packet', (p: Packet) => {
    got.push('reasonCode' in p && p.reasonCode !== undefined ? `${p.cmd}:${p.reasonCode}` : p.cmd)
    if (p.cmd !== 'connack') return
    socket.write(mqttPacket.generate({ cmd: 'publish', topic: `${tag}/t`, payload: Buffer.from('x'), qos: 1, messageId: 1, dup: false, retain: false, properties: { topicAlias: alias } }, opts))
  })
  socket.on('data', (chunk: Buffer) => { parser.parse(chunk) })
  socket.on('error', () => {})
  const closed = new Promise((resolve) => socket.once('close', resolve))
  const timer = setTimeout(() => { got.push('still open'); socket.destroy() }, 5000)
  socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId: `${tag}-alias`, clean: true, keepalive: 30 }, opts))
  await closed
  clearTimeout(timer)
  return got
}

// ---- scripted brokers ------------------------------------------------------------------------

const PUBLISH = { cmd: 'publish', qos: 0, dup: false, retain: false } as const

/** Enhanced authentication (AUTH 0x18 both ways), then PUBLISH with topic+alias and alias only. */
export async function authAndAliases (s: FakeSession): Promise<void> {
  await s.next('connect')
  s.send({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'FAKE', authenticationData: Buffer.from('challenge') } })
  await s.next('auth')
  s.send({ cmd: 'connack', reasonCode: 0, sessionPresent: false, properties: { authenticationMethod: 'FAKE', topicAliasMaximum: 0 } })
  s.send({ ...PUBLISH, topic: 'fake/alias', payload: Buffer.from('one'), properties: { topicAlias: 3 } })
  s.send({ ...PUBLISH, topic: '', payload: Buffer.from('two'), properties: { topicAlias: 3 } })
  await s.closed
}

/** Accepts; on PINGREQ sends a PUBLISH, DISCONNECT 0x8E with properties (as a newer Mosquitto does on takeover) and closes. */
export async function takenOver (s: FakeSession): Promise<void> {
  await s.next('connect')
  s.send({ cmd: 'connack', reasonCode: 0, sessionPresent: false })
  await s.next('pingreq')
  s.send({ ...PUBLISH, topic: 'fake/last', payload: Buffer.from('last') })
  s.send({ cmd: 'disconnect', reasonCode: 0x8e, properties: { reasonString: 'another client took over', userProperties: { by: 'fake' } } })
  s.socket.end()
  await s.closed
}

export function describe (p: Packet): string {
  const props = 'properties' in p ? p.properties as { authenticationData?: Buffer, topicAlias?: number, reasonString?: string, userProperties?: object } | undefined : undefined
  const code = 'reasonCode' in p && p.reasonCode !== undefined ? `:${p.reasonCode}` : ''
  return [
    `${p.cmd}${code}`,
    props?.authenticationData?.toString(),
    props?.reasonString,
    props?.userProperties === undefined ? undefined : JSON.stringify(props.userProperties),
    p.cmd === 'publish' ? `'${p.topic}' alias ${props?.topicAlias}` : undefined
  ].filter((x) => x !== undefined).join(' ')
}

/** An MQTT.js client doing the FAKE authentication; what it received, what it delivered. */
export async function authenticate (url: string, tag: string): Promise<{ client: string[], messages: string[] }> {
  const client = mqtt.connect(url, {
    protocolVersion: 5,
    reconnectPeriod: 0,
    clientId: `${tag}-auth`,
    properties: { authenticationMethod: 'FAKE', authenticationData: Buffer.from('hello'), topicAliasMaximum: 5 }
  })
  client.handleAuth = (_packet: IAuthPacket, callback) => {
    callback(undefined, { cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'FAKE', authenticationData: Buffer.from('response') } })
  }
  const peer = new S.Peer(client, 5)
  const messages = (await peer.messages(2)).map((m) => `${m.topic} ${m.payload}`)
  return { client: peer.packets.map(describe), messages }
}

/** Connects, pings, and records what the broker's DISCONNECT looked like. */
export async function disconnectedByBroker (url: string, tag: string): Promise<{ packets: string[], closed: boolean }> {
  const peer = await S.connectPeer(url, 5, { clientId: `${tag}-taken`, keepalive: 0 })
  peer.client.stream.write(mqttPacket.generate({ cmd: 'pingreq' }))
  await peer.gone()
  return { packets: peer.packets.map(describe), closed: peer.closed }
}
