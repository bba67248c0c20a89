// The MQTT 5 -> 3.1.1 bridge against a real in-process aedes: MQTT 5 packets made with
// mqtt-packet go into the bridge, and what comes out is parsed as MQTT 5.

import t from 'tap'
import { once } from 'node:events'
import type { Test } from 'tap'
import { Aedes } from 'aedes'
import type { AedesOptions } from 'aedes'
import mqtt from 'mqtt-packet'
import type { IConnackPacket, IConnectPacket, Packet } from 'mqtt-packet'
import type { Duplex } from 'node:stream'
import { bridgeV5ToV4 } from '../../src/upstream/version-bridge.js'
import { duplexPair } from '../../src/upstream/duplex-pair.js'
import type { VersionBridgeOptions } from '../../src/upstream/version-bridge.js'
import { isGuardError } from '../../src/errors.js'
import { pollUntil } from '../helpers/processes.js'

type Cmd = Packet['cmd']
type PacketOf<C extends Cmd> = Extract<Packet, { cmd: C }>

/** One end of an MQTT conversation: sends generated packets, collects parsed ones. */
class Peer {
  private readonly packets: Packet[] = []
  private wake: (() => void) | null = null
  readonly errors: Error[] = []
  readonly closed: Promise<void>

  constructor (readonly stream: Duplex, readonly version: 4 | 5) {
    const parser = mqtt.parser({ protocolVersion: version })
    parser.on('packet', (packet: Packet) => {
      this.packets.push(packet)
      this.wake?.()
    })
    parser.on('error', (err: Error) => { this.errors.push(err) })
    stream.on('data', (chunk: Buffer) => { parser.parse(chunk) })
    stream.on('error', (err: Error) => { this.errors.push(err) })
    this.closed = new Promise((resolve) => { stream.once('close', resolve) })
  }

  send (packet: Packet): void {
    this.stream.write(mqtt.generate(packet, { protocolVersion: this.version }))
  }

  async next (timeoutMs = 2000): Promise<Packet> {
    const deadline = Date.now() + timeoutMs
    while (this.packets.length === 0) {
      if (Date.now() > deadline) throw new Error('no packet within ' + timeoutMs + ' ms')
      await new Promise<void>((resolve) => {
        this.wake = resolve
        setTimeout(resolve, 20)
      })
    }
    return this.packets.shift() as Packet
  }

  async expect<C extends Cmd> (cmd: C): Promise<PacketOf<C>> {
    const packet = await this.next()
    if (packet.cmd !== cmd) throw new Error(`expected ${cmd}, got ${JSON.stringify(packet)}`)
    return packet as PacketOf<C>
  }
}

async function startBroker (t: Test, options: AedesOptions = {}): Promise<Aedes> {
  const broker = await Aedes.createBroker(options)
  t.teardown(() => new Promise<void>((resolve) => { broker.close(() => { resolve() }) }))
  return broker
}

/** aedes keeps connected clients in `clients`, which its typings leave out. */
function clientOf (broker: Aedes, id: string): { subscriptions: Record<string, unknown> } | undefined {
  return (broker as unknown as { clients: Record<string, { subscriptions: Record<string, unknown> }> }).clients[id]
}

function bridged (t: Test, broker: Aedes, options?: VersionBridgeOptions): Peer {
  const [inner, brokerSide] = duplexPair()
  broker.handle(brokerSide)
  const bridge = bridgeV5ToV4(inner, options)
  t.teardown(() => { bridge.destroy() })
  return new Peer(bridge, 5)
}

function plain (t: Test, broker: Aedes): Peer {
  const [clientSide, brokerSide] = duplexPair()
  broker.handle(brokerSide)
  t.teardown(() => { clientSide.destroy() })
  return new Peer(clientSide, 4)
}

function connectPacket (version: 4 | 5, fields: Partial<IConnectPacket> = {}): IConnectPacket {
  return { cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clientId: '', clean: true, keepalive: 0, ...fields }
}

async function connectV5 (t: Test, broker: Aedes, fields: Partial<IConnectPacket> = {},
  options?: VersionBridgeOptions): Promise<{ peer: Peer, connack: IConnackPacket }> {
  const peer = bridged(t, broker, options)
  peer.send(connectPacket(5, fields))
  return { peer, connack: await peer.expect('connack') }
}

async function connectV4 (t: Test, broker: Aedes, clientId: string): Promise<Peer> {
  const peer = plain(t, broker)
  peer.send(connectPacket(4, { clientId }))
  t.equal((await peer.expect('connack')).returnCode, 0)
  return peer
}

async function subscribe (peer: Peer, topic: string, qos: 0 | 1 | 2, messageId = 1): Promise<void> {
  peer.send({ cmd: 'subscribe', messageId, subscriptions: [{ topic, qos }] })
  await peer.expect('suback')
}

t.test('CONNACK: capabilities, assigned client ID and reason codes', async (t) => {
  const broker = await startBroker(t)
  const named = await connectV5(t, broker, { clientId: 'named' })
  t.equal(named.connack.reasonCode, 0)
  t.same(named.connack.properties, {
    retainAvailable: true,
    wildcardSubscriptionAvailable: true,
    subscriptionIdentifiersAvailable: false,
    sharedSubscriptionAvailable: false
  })
  t.notOk(named.connack.properties?.topicAliasMaximum, 'no topic aliases')

  const assigned = await connectV5(t, broker, {}, { assignClientId: () => 'given-1' })
  t.equal(assigned.connack.properties?.assignedClientIdentifier, 'given-1')
  t.ok(clientOf(broker, 'given-1'), 'aedes knows the client by the assigned ID')

  const generated = await connectV5(t, broker)
  t.match(generated.connack.properties?.assignedClientIdentifier, /^mg-[0-9a-f-]{36}$/)
})

t.test('CONNACK refusal codes reach the client before the bridge ends', async (t) => {
  const codes: Array<[number, number]> = [[2, 0x85], [3, 0x88], [4, 0x86], [5, 0x87]]
  for (const [returnCode, reasonCode] of codes) {
    const broker = await startBroker(t, {
      authenticate: (_client, _user, _password, done) => {
        done(Object.assign(new Error('no'), { returnCode }), false)
      }
    })
    const { peer, connack } = await connectV5(t, broker, { clientId: 'refused', username: 'u', password: Buffer.from('p') })
    t.equal(connack.reasonCode, reasonCode, `3.1.1 return code ${returnCode}`)
    t.equal(connack.sessionPresent, false)
    await peer.closed
    t.same(peer.errors, [], 'closed without error')
  }
})

t.test('enhanced authentication is refused with 0x8C and never reaches aedes', async (t) => {
  const broker = await startBroker(t)
  const { peer, connack } = await connectV5(t, broker, {
    clientId: 'scram', properties: { authenticationMethod: 'SCRAM-SHA-1', authenticationData: Buffer.from('x') }
  })
  t.equal(connack.reasonCode, 0x8c)
  await peer.closed
  t.same(peer.errors, [])
  t.notOk(clientOf(broker, 'scram'))
})

t.test('password without user name is accepted (3.1.1 gets an empty user name)', async (t) => {
  let seen: string | undefined
  const broker = await startBroker(t, {
    authenticate: (_client, user, _password, done) => {
      seen = user
      done(null, true)
    }
  })
  // mqtt-packet refuses to generate this, so it is written by hand: flags 0x42 are password
  // and clean start, then keep alive 0, no properties, client ID "pw", password "secret".
  const peer = bridged(t, broker)
  peer.stream.write(Buffer.from([
    0x10, 23, 0, 4, ...Buffer.from('MQTT'), 5, 0x42, 0, 0, 0, 0, 2, ...Buffer.from('pw'), 0, 6, ...Buffer.from('secret')
  ]))
  t.equal((await peer.expect('connack')).reasonCode, 0)
  t.equal(seen, '')
})

t.test('publish and subscribe at QoS 0, 1 and 2 across bridged and 3.1.1 clients', async (t) => {
  const broker = await startBroker(t)
  const subscriber = (await connectV5(t, broker, { clientId: 'sub5' })).peer
  const publisher = (await connectV5(t, broker, { clientId: 'pub5' })).peer
  const legacy = await connectV4(t, broker, 'sub4')
  subscriber.send({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: 'rt/#', qos: 2, nl: true, rh: 2 }] })
  t.same((await subscriber.expect('suback')).granted, [2])
  await subscribe(legacy, 'rt/#', 2)

  for (const qos of [0, 1, 2] as const) {
    publisher.send({
      cmd: 'publish', topic: `rt/${qos}`, payload: Buffer.from(`m${qos}`), qos, retain: false, dup: false,
      ...(qos > 0 ? { messageId: 100 + qos } : {}),
      properties: { userProperties: { dropped: 'yes' }, contentType: 'text/plain' }
    })
    if (qos === 1) t.equal((await publisher.expect('puback')).reasonCode, 0)
    if (qos === 2) {
      t.equal((await publisher.expect('pubrec')).messageId, 102)
      publisher.send({ cmd: 'pubrel', messageId: 102 })
      t.equal((await publisher.expect('pubcomp')).messageId, 102)
    }
    for (const peer of [subscriber, legacy]) {
      const message = await peer.expect('publish')
      t.equal(message.topic, `rt/${qos}`)
      t.equal(message.qos, qos)
      t.equal(message.payload.toString(), `m${qos}`)
      t.notOk(message.properties, 'MQTT 5 properties do not survive 3.1.1')
      await acknowledge(peer, message)
    }
  }

  // 3.1.1 publisher to MQTT 5 subscriber.
  legacy.send({ cmd: 'publish', topic: 'rt/from4', payload: Buffer.from('v4'), qos: 1, retain: false, dup: false, messageId: 9 })
  await legacy.expect('puback')
  const fromLegacy = await subscriber.expect('publish')
  t.equal(fromLegacy.payload.toString(), 'v4')
  await acknowledge(subscriber, fromLegacy)
  t.same([...subscriber.errors, ...publisher.errors], [])
})

async function acknowledge (peer: Peer, message: PacketOf<'publish'>): Promise<void> {
  const messageId = message.messageId as number
  if (message.qos === 1) peer.send({ cmd: 'puback', messageId })
  if (message.qos === 2) {
    peer.send({ cmd: 'pubrec', messageId })
    await peer.expect('pubrel')
    peer.send({ cmd: 'pubcomp', messageId })
  }
}

t.test('SUBACK merges local refusals: shared subscriptions 0x9E, subscription identifiers 0xA1', async (t) => {
  const broker = await startBroker(t)
  const { peer } = await connectV5(t, broker, { clientId: 'subs' })
  peer.send({
    cmd: 'subscribe',
    messageId: 1,
    subscriptions: [{ topic: 'a', qos: 1 }, { topic: '$share/g/b', qos: 1 }, { topic: 'c/+', qos: 2 }]
  })
  t.same((await peer.expect('suback')).granted, [1, 0x9e, 2])
  peer.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: '$share/g/only', qos: 0 }] })
  t.same((await peer.expect('suback')).granted, [0x9e], 'answered without aedes')
  peer.send({ cmd: 'subscribe', messageId: 3, properties: { subscriptionIdentifier: 5 }, subscriptions: [{ topic: 'd', qos: 0 }] })
  t.same((await peer.expect('suback')).granted, [0xa1])
  t.notOk(clientOf(broker, 'subs')?.subscriptions['$share/g/b'], 'no literal $share subscription')
})

t.test('UNSUBACK has one reason code per filter', async (t) => {
  const broker = await startBroker(t)
  const { peer } = await connectV5(t, broker, { clientId: 'unsub' })
  await subscribe(peer, 'x/1', 0)
  peer.send({ cmd: 'unsubscribe', messageId: 11, unsubscriptions: ['x/1', 'x/2', 'x/3'] })
  const unsuback = await peer.expect('unsuback')
  t.equal(unsuback.messageId, 11)
  t.same(unsuback.granted, [0, 0, 0])
})

t.test('PINGREQ gets PINGRESP', async (t) => {
  const broker = await startBroker(t)
  const { peer } = await connectV5(t, broker, { clientId: 'ping' })
  peer.send({ cmd: 'pingreq' })
  await peer.expect('pingresp')
})

t.test('session expiry > 0 keeps the session and its queued QoS 1 message', async (t) => {
  const broker = await startBroker(t)
  const persistent = { clientId: 'keep', clean: true, properties: { sessionExpiryInterval: 3600 } }
  const first = await connectV5(t, broker, persistent)
  t.equal(first.connack.sessionPresent, false)
  await subscribe(first.peer, 'persist/t', 1)
  first.peer.send({ cmd: 'disconnect', reasonCode: 0 })
  await first.peer.closed

  const legacy = await connectV4(t, broker, 'sender')
  legacy.send({ cmd: 'publish', topic: 'persist/t', payload: Buffer.from('queued'), qos: 1, retain: false, dup: false, messageId: 1 })
  await legacy.expect('puback')

  const second = await connectV5(t, broker, persistent)
  t.equal(second.connack.sessionPresent, true)
  const queued = await second.peer.expect('publish')
  t.equal(queued.payload.toString(), 'queued')
  t.equal(queued.qos, 1)
  second.peer.send({ cmd: 'puback', messageId: queued.messageId as number })

  // Expiry 0 is a clean session: nothing is kept.
  const cleanOne = await connectV5(t, broker, { clientId: 'keep' })
  t.equal(cleanOne.connack.sessionPresent, false)
})

t.test('an assigned client ID can resume its persistent session', async (t) => {
  const broker = await startBroker(t)
  const first = await connectV5(t, broker, { properties: { sessionExpiryInterval: 60 } }, { assignClientId: () => 'auto-1' })
  await subscribe(first.peer, 'auto/t', 1)
  const gone = once(broker, 'clientDisconnect')
  first.peer.stream.destroy()
  await first.peer.closed
  await gone
  const again = await connectV5(t, broker, { clientId: 'auto-1', properties: { sessionExpiryInterval: 60 } })
  t.equal(again.connack.sessionPresent, true)
})

t.test('will message', async (t) => {
  const cases: Array<[string, (peer: Peer) => void, boolean]> = [
    ['DISCONNECT 0x04 publishes it', (peer) => { peer.send({ cmd: 'disconnect', reasonCode: 0x04 }) }, true],
    ['DISCONNECT with an error code publishes it', (peer) => { peer.send({ cmd: 'disconnect', reasonCode: 0x80 }) }, true],
    ['destroying the bridge publishes it', (peer) => { peer.stream.destroy() }, true],
    ['ending the bridge without DISCONNECT publishes it', (peer) => { peer.stream.end() }, true],
    ['normal DISCONNECT discards it', (peer) => { peer.send({ cmd: 'disconnect', reasonCode: 0 }) }, false]
  ]
  for (const [name, close, published] of cases) {
    await t.test(name, async (t) => {
      const broker = await startBroker(t)
      const observer = await connectV4(t, broker, 'observer')
      await subscribe(observer, 'will/#', 0)
      const { peer } = await connectV5(t, broker, {
        clientId: 'mortal',
        will: { topic: 'will/mortal', payload: Buffer.from('gone'), qos: 0, retain: false, properties: { willDelayInterval: 0 } }
      })
      const gone = once(broker, 'clientDisconnect')
      close(peer)
      await peer.closed
      await gone
      if (published) {
        t.equal((await observer.expect('publish')).payload.toString(), 'gone')
      } else {
        // A marker published after the client left must be the next thing the observer gets.
        const marker = await connectV4(t, broker, 'marker')
        marker.send({ cmd: 'publish', topic: 'will/marker', payload: Buffer.from('m'), qos: 0, retain: false, dup: false })
        t.equal((await observer.expect('publish')).topic, 'will/marker', 'no will before the marker')
      }
    })
  }
})

t.test('bytes split one per write still translate', async (t) => {
  const broker = await startBroker(t)
  const peer = bridged(t, broker)
  const drip = (packets: Packet[]): void => {
    const bytes = Buffer.concat(packets.map((packet) => mqtt.generate(packet, { protocolVersion: 5 })))
    for (const byte of bytes) peer.stream.write(Buffer.from([byte]))
  }
  drip([
    connectPacket(5, { clientId: 'drip' }),
    { cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'drip', qos: 1 }] }
  ])
  t.equal((await peer.expect('connack')).reasonCode, 0)
  t.same((await peer.expect('suback')).granted, [1])
  drip([{ cmd: 'publish', topic: 'drip', payload: Buffer.from('drop'), qos: 1, messageId: 4, retain: false, dup: false }])
  // aedes acknowledges and delivers in either order.
  const [first, second] = [await peer.next(), await peer.next()]
  const cmds = [first.cmd, second.cmd].sort()
  t.same(cmds, ['puback', 'publish'], 'own message delivered and acknowledged')
})

t.test('malformed input destroys only that bridge', async (t) => {
  const broker = await startBroker(t)
  const healthy = (await connectV5(t, broker, { clientId: 'healthy' })).peer
  const { peer } = await connectV5(t, broker, { clientId: 'broken' })
  // A PUBLISH whose topic length runs past the end of the packet.
  peer.stream.write(Buffer.from([0x30, 0x03, 0x00, 0x10, 0x61]))
  await peer.closed
  t.equal(peer.errors.length, 1)
  const err = peer.errors[0]
  t.ok(isGuardError(err) && err.code === 'GUARD_ERR_MALFORMED', 'GUARD_ERR_MALFORMED')
  if (clientOf(broker, 'broken') !== undefined) await once(broker, 'clientDisconnect')
  t.notOk(clientOf(broker, 'broken'), 'aedes dropped its side')
  healthy.send({ cmd: 'pingreq' })
  await healthy.expect('pingresp')
})

t.test('protocol errors: DISCONNECT with a reason code, then an error', async (t) => {
  const cases: Array<[string, Packet, number]> = [
    ['topic alias', {
      cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 0, retain: false, dup: false, properties: { topicAlias: 1 }
    }, 0x94],
    ['AUTH after CONNECT', { cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'X' } }, 0x82],
    ['second CONNECT', connectPacket(5, { clientId: 'again' }), 0x82]
  ]
  for (const [name, packet, reasonCode] of cases) {
    await t.test(name, async (t) => {
      const broker = await startBroker(t)
      const { peer } = await connectV5(t, broker, { clientId: 'bad' })
      peer.send(packet)
      t.equal((await peer.expect('disconnect')).reasonCode, reasonCode)
      await peer.closed
      const err = peer.errors[0]
      t.ok(isGuardError(err) && err.code === 'GUARD_ERR_PROTOCOL', 'GUARD_ERR_PROTOCOL')
    })
  }
})

t.test('a first packet other than an MQTT 5 CONNECT destroys the bridge', async (t) => {
  const broker = await startBroker(t)
  const cases: Array<[Packet, string]> = [
    [{ cmd: 'pingreq' }, 'GUARD_ERR_PROTOCOL'],
    [connectPacket(4, { clientId: 'old' }), 'GUARD_ERR_UNSUPPORTED_PROTOCOL']
  ]
  for (const [packet, code] of cases) {
    const peer = bridged(t, broker)
    peer.stream.write(mqtt.generate(packet, { protocolVersion: 4 }))
    await peer.closed
    const err = peer.errors[0]
    t.ok(isGuardError(err) && err.code === code, code)
  }
})

t.test('an error on the inner stream destroys the bridge with it', async (t) => {
  const [inner, other] = duplexPair()
  other.on('error', () => {})
  const bridge = bridgeV5ToV4(inner)
  const peer = new Peer(bridge, 5)
  inner.destroy(new Error('boom'))
  await peer.closed
  t.equal(peer.errors[0]?.message, 'boom')
})

t.test('malformed or unexpected packets from the broker side destroy the bridge', async (t) => {
  const cases: Array<[Buffer, string]> = [
    [Buffer.from([0x20, 0x02, 0x02, 0x00]), 'GUARD_ERR_MALFORMED'], // CONNACK flags bits 7-1 set
    [mqtt.generate({ cmd: 'pingreq' }), 'GUARD_ERR_PROTOCOL'] // only clients send PINGREQ
  ]
  for (const [bytes, code] of cases) {
    const [inner, brokerSide] = duplexPair()
    const peer = new Peer(bridgeV5ToV4(inner), 5)
    peer.send(connectPacket(5, { clientId: 'x' }))
    brokerSide.resume()
    brokerSide.write(bytes)
    await peer.closed
    const err = peer.errors[0]
    t.ok(isGuardError(err) && err.code === code, code)
    // The broker side reads what was sent, then ends and closes, as after a TCP FIN.
    if (!brokerSide.destroyed) await once(brokerSide, 'close')
    t.ok(brokerSide.destroyed, 'the broker side is closed too')
  }
})

t.test('messages larger than the client Maximum Packet Size are dropped, not sent', async (t) => {
  const broker = await startBroker(t)
  const { peer } = await connectV5(t, broker, { clientId: 'small', properties: { maximumPacketSize: 64 } })
  await subscribe(peer, 'size/#', 2)
  const legacy = await connectV4(t, broker, 'big-sender')
  for (const [qos, size] of [[1, 500], [2, 500], [1, 5]] as const) {
    legacy.send({ cmd: 'publish', topic: 'size/t', payload: Buffer.alloc(size), qos, retain: false, dup: false, messageId: size + qos })
  }
  const delivered = await peer.expect('publish')
  t.equal(delivered.payload.length, 5)
  // Deliveries and the PINGRESP leave aedes in order: nothing may come before the PINGRESP.
  peer.send({ cmd: 'pingreq' })
  await peer.expect('pingresp')
  t.pass('the bridge answered the dropped ones for the client')
})

t.test('backpressure: a client that does not read pauses aedes output', async (t) => {
  const broker = await startBroker(t)
  const [inner, brokerSide] = duplexPair()
  broker.handle(brokerSide)
  const bridge = bridgeV5ToV4(inner)
  t.teardown(() => { bridge.destroy() })
  bridge.write(mqtt.generate(connectPacket(5, { clientId: 'slow' }), { protocolVersion: 5 }))
  const subscribed = once(broker, 'subscribe')
  bridge.write(mqtt.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'flood', qos: 0 }] }, { protocolVersion: 5 }))
  await subscribed
  const legacy = await connectV4(t, broker, 'flooder')
  const count = 300
  for (let i = 0; i < count; i++) {
    legacy.send({ cmd: 'publish', topic: 'flood', payload: Buffer.alloc(1024), qos: 0, retain: false, dup: false })
  }
  // Wait for the event "the bridge is full and stopped taking from aedes": its buffer reached
  // the high-water mark. aedes then holds the rest (it stops reading the flooder, too).
  await pollUntil('bridge buffer full', 5000, () => bridge.readableLength >= bridge.readableHighWaterMark ? true : undefined)
  let routed = 0
  broker.on('publish', (p) => { if (p.topic === 'flood') routed++ })
  await new Promise((resolve) => setImmediate(resolve))
  t.ok(bridge.readableLength < 64 * 1024, `bridge buffered ${bridge.readableLength} bytes`)
  t.ok(routed < count, `aedes held back the flood (${routed} of ${count} routed meanwhile)`)
  const peer = new Peer(bridge, 5)
  await peer.expect('connack')
  await peer.expect('suback')
  for (let i = 0; i < count; i++) await peer.expect('publish')
  t.pass('all messages arrived once the client read')
})

t.test('backpressure: aedes not reading holds the client writes', async (t) => {
  const [inner, stalled] = duplexPair()
  const bridge = bridgeV5ToV4(inner)
  t.teardown(() => { bridge.destroy() })
  bridge.write(mqtt.generate(connectPacket(5, { clientId: 'held' }), { protocolVersion: 5 }))
  const publish = mqtt.generate({ cmd: 'publish', topic: 'p', payload: Buffer.alloc(1024), qos: 0, retain: false, dup: false },
    { protocolVersion: 5 })
  let completed = 0
  let allDone: () => void = () => {}
  const done = new Promise<void>((resolve) => { allDone = resolve })
  for (let i = 0; i < 200; i++) bridge.write(publish, () => { if (++completed === 200) allDone() })
  // Let every pending write settle as far as it can: nothing else is scheduled.
  await new Promise((resolve) => setImmediate(resolve))
  t.ok(stalled.readableLength < 64 * 1024, `inner side holds ${stalled.readableLength} bytes`)
  t.ok(completed < 200, `${completed} of 200 writes completed`)
  stalled.resume()
  await done
  t.equal(completed, 200, 'reading aedes side releases them all')
})
