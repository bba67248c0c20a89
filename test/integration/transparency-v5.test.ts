// MQTT 5 through the proxy in front of a real Mosquitto behaves as directly against it: the
// shared scenarios of test/helpers/transparency-suite.ts with Mosquitto 2.0's MQTT 5 answers,
// then what only MQTT 5 has: properties, topic aliases both ways, reason codes, assigned client
// IDs, enhanced authentication (AUTH), broker DISCONNECT, each compared with the same run
// straight to the broker (Mosquitto, or a scripted fake broker for what Mosquitto won't do).

import t from 'tap'
import type { Test } from 'tap'
import { cleanupAll } from '../helpers/processes.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { startFakeBroker, type FakeBroker, type FakeScript } from '../helpers/fake-broker.js'
import { settled, spyPlugin, startEnv, transparencySuite } from '../helpers/transparency-suite.js'
import * as S from '../helpers/transparency-scenarios.js'
import * as V5 from '../helpers/transparency-v5-scenarios.js'

t.teardown(cleanupAll)

const env = await startEnv(t)
const { mosquitto, plain, observed, spied } = env
const targets = { direct: mosquitto.url, proxy: plain.url, observed: observed.url }
type Target = keyof typeof targets
let n = 0
const tag = (what: string): string => `v5x-${what}-${++n}`

transparencySuite(t, env, {
  version: 5,
  // Mosquitto answers every authentication failure with 0x87 "not authorized", not 0x86.
  wrongPassword: 0x87,
  unavailable: 0x88,
  subackDenied: [1, 0x87, 2],
  deniedPublish: ['puback:135'],
  // Mosquitto 2.0.11 closes the old connection without DISCONNECT 0x8E (later versions send
  // it): the relay of a broker DISCONNECT is checked with the fake broker below.
  takeoverFirst: [],
  // No DISCONNECT on a keepalive timeout from Mosquitto 2.0.11: the socket is just closed.
  keepalivePackets: ['connack:0', 'pingresp']
})

t.test('CONNACK properties are the broker\'s, plus the proxy\'s stricter maximum packet size', async (t) => {
  t.teardown(S.endAllPeers)
  const properties = { sessionExpiryInterval: 30, receiveMaximum: 7, maximumPacketSize: 500_000, topicAliasMaximum: 4, requestProblemInformation: true, userProperties: { app: 'guard-test' } }
  const connacks: Array<Record<string, unknown>> = []
  for (const url of Object.values(targets)) {
    const { length: _length, ...connack } = (await S.connectPeer(url, 5, { clientId: tag('connack'), properties })).connack ?? { length: 0 }
    connacks.push(connack)
  }
  const [direct] = connacks
  t.same(direct, { cmd: 'connack', retain: false, qos: 0, dup: false, topic: null, payload: null, sessionPresent: false, reasonCode: 0, properties: { topicAliasMaximum: 10, receiveMaximum: 20 } }, 'Mosquitto')
  // Mosquitto announces no maximum packet size, so the proxy announces its own limit [MQTT-3.2.2-15].
  const announced = { ...direct, properties: { ...direct?.['properties'] as object, maximumPacketSize: plain.server.config.limits.maxPacketSize } }
  t.same(connacks[1], announced, 'through the proxy')
  t.same(connacks[2], announced, 'through the observed proxy')
  await settled(t, plain, observed)
})

t.test('PUBLISH properties survive both ways: user properties, content type, response topic, correlation data', async (t) => {
  t.teardown(S.endAllPeers)
  const direct = await V5.withProperties(targets.direct, targets.direct, tag('props'))
  const { messageExpiryInterval: _ttl, ...sent } = V5.PROPERTIES
  t.match(direct, [0, 1, 1].map((qos, i) => ({
    topic: 'props',
    payload: `{"qos":${i}}`,
    qos,
    properties: { ...sent, responseTopic: 'reply', subscriptionIdentifier: 7, expiryOk: true }
  })))
  t.equal(direct.length, 3)
  for (const [from, to] of [['proxy', 'proxy'], ['proxy', 'direct'], ['direct', 'proxy'], ['observed', 'observed']] as Array<[Target, Target]>) {
    t.same(await V5.withProperties(targets[from], targets[to], tag('props')), direct, `publisher ${from}, subscriber ${to}`)
  }
  await settled(t, plain, observed)
})

t.test('topic aliases from the client reach Mosquitto; a plugin sees the real topic', async (t) => {
  t.teardown(S.endAllPeers)
  for (const via of ['direct', 'proxy', 'observed'] as const) {
    const label = tag('alias')
    const sub = await S.connectPeer(mosquitto.url, 5, { clientId: `${label}-sub` })
    await sub.client.subscribeAsync(`${label}/#`, { qos: 1 })
    const pub = await S.connectPeer(targets[via], 5, { clientId: `${label}-pub` })
    t.equal(pub.connack?.properties?.topicAliasMaximum, 10, `${via}: Mosquitto announces its topic alias maximum`)
    const before = spied.in.length
    await pub.client.publishAsync(`${label}/long/topic/name`, 'set', { qos: 1, properties: { topicAlias: 1 } })
    await pub.client.publishAsync('', 'used', { qos: 1, properties: { topicAlias: 1 } })
    await pub.client.publishAsync('', 'again', { qos: 0, properties: { topicAlias: 1 } })
    await pub.client.publishAsync(`${label}/other`, 'no alias', { qos: 1 })
    const got = S.relative(await sub.messages(4), label).map((m) => `${m.topic} ${m.payload}`)
    t.same(got, ['long/topic/name set', 'long/topic/name used', 'long/topic/name again', 'other no alias'], `${via}: delivered under the real topic`)
    if (via === 'observed') {
      t.same(spied.in.slice(before).map((tp) => tp.slice(label.length + 1)), ['long/topic/name', 'long/topic/name', 'long/topic/name', 'other'], 'the spy saw the real topic')
    }
  }
  await settled(t, plain, observed)
})

t.test('a topic alias above the maximum gets Mosquitto\'s DISCONNECT 0x94, also when a plugin decodes PUBLISH', async (t) => {
  const direct = await V5.badAlias(targets.direct, tag('badalias'), 11)
  t.same(direct, ['connack:0', 'disconnect:148'], 'Mosquitto: 0x94 topic alias invalid')
  t.same(await V5.badAlias(targets.proxy, tag('badalias'), 11), direct, 'through the proxy')
  // The proxy must resolve aliases for its plugins, so it refuses first; it should say the same.
  t.same(await V5.badAlias(targets.observed, tag('badalias'), 11), direct, 'through the observed proxy')
  await settled(t, plain, observed)
})

t.test('PUBACK 0x10 "no matching subscribers" and the QoS 2 answers relayed', async (t) => {
  t.teardown(S.endAllPeers)
  const results: string[][] = []
  for (const url of Object.values(targets)) {
    const peer = await S.connectPeer(url, 5, { clientId: tag('nomatch') })
    await peer.client.publishAsync(`${tag('nobody')}/here`, 'x', { qos: 1 })
    await peer.client.publishAsync(`${tag('nobody')}/here`, 'x', { qos: 2 })
    results.push(peer.after())
    await peer.client.endAsync()
  }
  // Mosquitto 2.0.11 says 0x10 in PUBACK but 0 in PUBREC.
  t.same(results[0], ['puback:16', 'pubrec:0', 'pubcomp:0'], 'Mosquitto')
  t.same(results[1], results[0], 'through the proxy')
  t.same(results[2], results[0], 'through the observed proxy')
  await settled(t, plain, observed)
})

t.test('an empty client ID gets the broker-assigned one, relayed and learnt by the proxy', async (t) => {
  t.teardown(S.endAllPeers)
  const assigned: unknown[] = []
  for (const url of Object.values(targets)) {
    const peer = await S.connectPeer(url, 5, { clientId: '', clean: true })
    assigned.push(peer.connack?.properties?.assignedClientIdentifier)
    await peer.client.endAsync()
  }
  for (const id of assigned) t.match(id, /^auto-[0-9A-F-]{36}$/, 'Mosquitto assigned an ID')
  const line = await plain.logs.waitFor((l) => l.msg === 'connection opened' && l['clientId'] === assigned[1])
  t.equal(line['clientId'], assigned[1], 'the proxy logs the assigned ID')
  await settled(t, plain, observed)
})

t.test('session expiry 0 with clean start false: no session on return', async (t) => {
  t.teardown(S.endAllPeers)
  const results: Array<Array<boolean | undefined>> = []
  for (const url of Object.values(targets)) {
    const clientId = tag('noexpiry')
    const opts = { clientId, clean: false, properties: { sessionExpiryInterval: 0 } }
    const first = await S.connectPeer(url, 5, opts)
    await first.client.subscribeAsync(`${clientId}/x`, { qos: 1 })
    await first.client.endAsync()
    await S.mosquittoSaw(mosquitto, `Client ${clientId} disconnected.`)
    const second = await S.connectPeer(url, 5, opts)
    results.push([first.connack?.sessionPresent, second.connack?.sessionPresent])
    await second.client.endAsync()
  }
  t.same(results, [[false, false], [false, false], [false, false]])
  await settled(t, plain, observed)
})

t.test('DISCONNECT 0x04 "with will message" makes Mosquitto publish the will', async (t) => {
  t.teardown(S.endAllPeers)
  const direct = await V5.disconnectWithWill(targets.direct, tag('will04'), mosquitto)
  t.match(direct, [{ topic: 'will', payload: 'asked for', qos: 1 }])
  t.same(await V5.disconnectWithWill(targets.proxy, tag('will04'), mosquitto), direct, 'through the proxy')
  t.same(await V5.disconnectWithWill(targets.observed, tag('will04'), mosquitto), direct, 'through the observed proxy')
  await settled(t, plain, observed)
})

/** A fake broker running `script`, and a proxy with a spy in front of it. */
async function fakeSetup (t: Test, script: FakeScript): Promise<{ url: string, proxyUrl: string, out: string[], fake: FakeBroker, proxy: TestProxy }> {
  const fake = await startFakeBroker(script)
  t.teardown(() => fake.close())
  const out: string[] = []
  const proxy = await startProxy({ config: { upstream: fake.url }, extraPlugins: [spyPlugin({ in: [], out })] })
  t.teardown(() => proxy.stop())
  return { url: fake.url, proxyUrl: proxy.url, out, fake, proxy }
}

t.test('AUTH exchange and broker→client topic aliases relayed; a plugin sees the real topic', async (t) => {
  t.teardown(S.endAllPeers)
  const { url, proxyUrl, out, fake, proxy } = await fakeSetup(t, V5.authAndAliases)
  const direct = await V5.authenticate(url, tag('auth'))
  t.same(direct, {
    client: ['auth:24 challenge', 'connack:0', 'publish \'fake/alias\' alias 3', 'publish \'\' alias 3'],
    messages: ['fake/alias one', 'fake/alias two']
  }, 'directly')
  t.same(await V5.authenticate(proxyUrl, tag('auth')), direct, 'through the proxy')
  const [brokerDirect, brokerProxied] = fake.sessions.map((s) => s.received.map(V5.describe))
  t.same(brokerDirect, ['connect hello', 'auth:24 response'], 'the broker got CONNECT and AUTH')
  t.same(brokerProxied, brokerDirect, 'the same through the proxy')
  t.same(out, ['fake/alias', 'fake/alias'], 'the spy saw the real topic both times')
  await S.endAllPeers()
  await Promise.all(fake.sessions.map((s) => s.closed))
  await settled(t, proxy)
})

t.test('a broker DISCONNECT (0x8E, with properties) is relayed as sent, then the client is closed', async (t) => {
  t.teardown(S.endAllPeers)
  const { url, proxyUrl, proxy } = await fakeSetup(t, V5.takenOver)
  // An out.publish hook awaiting Redis, say; the 50 ms timer is its latency, not synchronisation.
  const slowHook = (): Promise<void> => new Promise((resolve) => { setTimeout(resolve, 50) })
  const slow = await startProxy({ config: { upstream: url }, extraPlugins: [{ name: 'slow', out: { publish: slowHook } }] })
  t.teardown(() => slow.stop())
  const direct = await V5.disconnectedByBroker(url, tag('dis'))
  t.same(direct, {
    packets: ['connack:0', 'publish \'fake/last\' alias undefined', 'disconnect:142 another client took over {"by":"fake"}'],
    closed: true
  }, 'directly')
  t.same(await V5.disconnectedByBroker(proxyUrl, tag('dis')), direct, 'through the proxy')
  t.same(await V5.disconnectedByBroker(slow.url, tag('dis')), direct, 'through a proxy with a slow out.publish plugin')
  await settled(t, proxy, slow)
})
