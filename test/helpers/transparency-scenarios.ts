// Scenarios for the transparency tests: each runs the same client behaviour against a URL (a
// Mosquitto directly, or the proxy in front of it) and returns a plain, comparable result, so a
// test can assert `viaProxy` deep-equals `direct` and both equal what MQTT says. The protocol
// version is a parameter: test/integration/transparency-v4 and -v5 share every scenario here.

import { EventEmitter } from 'node:events'
import net from 'node:net'
import mqtt from 'mqtt'
import type { IClientOptions, MqttClient } from 'mqtt'
import mqttPacket from 'mqtt-packet'
import type { IConnackPacket, Packet } from 'mqtt-packet'
import type { Mosquitto } from './mosquitto.js'
import { pollUntil } from './processes.js'
import type { TestProxy } from './proxy.js'

export type Version = 4 | 5

export interface Msg {
  topic: string
  payload: string
  qos: number
  retain: boolean
  properties?: Record<string, unknown>
}

const WAIT_MS = 8000

/** An MQTT.js client that records every packet and message from before CONNECT on. */
export class Peer {
  readonly inbox: Msg[] = []
  readonly raw: Buffer[] = []
  readonly packets: Packet[] = []
  closed = false
  private readonly events = new EventEmitter()

  constructor (readonly client: MqttClient, readonly version: Version) {
    const changed = (): void => { this.events.emit('change') }
    client.on('message', (topic, payload, packet) => {
      const msg: Msg = { topic, payload: payload.toString('latin1'), qos: packet.qos, retain: packet.retain }
      if (version === 5) msg.properties = { ...packet.properties }
      this.inbox.push(msg)
      this.raw.push(payload)
      changed()
    })
    client.on('packetreceive', (packet) => { this.packets.push(packet); changed() })
    client.on('close', () => { this.closed = true; changed() })
    client.on('error', () => {}) // refusals are read from `packets`; an unhandled 'error' would throw
    peers.add(this)
  }

  get connack (): IConnackPacket | undefined {
    return this.packets.find((p): p is IConnackPacket => p.cmd === 'connack')
  }

  /** Resolves with `probe()` once it returns something other than undefined, on an event. */
  async until<T> (what: string, probe: () => T | undefined, timeoutMs = WAIT_MS): Promise<T> {
    const now = probe()
    if (now !== undefined) return now
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => { this.events.off('change', check); reject(new Error(`timed out waiting for ${what}`)) }, timeoutMs)
      const check = (): void => {
        const value = probe()
        if (value === undefined) return
        clearTimeout(timer)
        this.events.off('change', check)
        resolve(value)
      }
      this.events.on('change', check)
    })
  }

  messages (n: number): Promise<Msg[]> {
    return this.until(`${n} messages`, () => this.inbox.length >= n ? this.inbox.slice(0, n) : undefined)
  }

  gone (): Promise<true> {
    return this.until('close', () => this.closed || undefined)
  }

  /** Packets received after the CONNACK, as `cmd` or `cmd:reasonCode`. */
  after (): string[] {
    const i = this.packets.findIndex((p) => p.cmd === 'connack')
    return this.packets.slice(i + 1).map((p) => 'reasonCode' in p && p.reasonCode !== undefined ? `${p.cmd}:${p.reasonCode}` : p.cmd)
  }

  last (cmd: Packet['cmd']): Packet | undefined {
    return this.packets.findLast((p) => p.cmd === cmd)
  }
}

const peers = new Set<Peer>()

/** Force-closes every peer a scenario made; for t.teardown. */
export async function endAllPeers (): Promise<void> {
  const all = [...peers]
  peers.clear()
  await Promise.all(all.map(async (p) => { await p.client.endAsync(true) }))
}

/** Connects and waits for the CONNACK (or the close of a refused/failed attempt). */
export async function attempt (url: string, version: Version, options: IClientOptions = {}): Promise<Peer> {
  const client = mqtt.connect(url, { protocolVersion: version, reconnectPeriod: 0, connectTimeout: 5000, ...options })
  const peer = new Peer(client, version)
  await peer.until('CONNACK or close', () => peer.connack ?? (peer.closed ? true : undefined))
  return peer
}

/** Like attempt(), but the connection must be accepted. */
export async function connectPeer (url: string, version: Version, options: IClientOptions = {}): Promise<Peer> {
  const peer = await attempt(url, version, options)
  const connack = peer.connack
  const code = connack?.reasonCode ?? connack?.returnCode
  if (connack === undefined || code !== 0) throw new Error(`connect to ${url} refused: ${JSON.stringify(connack ?? 'closed')}`)
  return peer
}

/** The CONNACK code: returnCode for 3.1.1, reasonCode for 5; undefined when none arrived. */
export function connackCode (peer: Peer): number | undefined {
  const c = peer.connack
  return peer.version === 5 ? c?.reasonCode : c?.returnCode
}

/**
 * Waits until Mosquitto's own log shows one of `texts` after position `since` (a
 * `mosquitto.log().length` taken before the action); polled, as a log file has no event to
 * wait on. Returns the text seen.
 */
export async function mosquittoSaw (mosquitto: Mosquitto, texts: string | string[], since = 0): Promise<string> {
  const wanted = typeof texts === 'string' ? [texts] : texts
  return await pollUntil(`mosquitto log: ${wanted.join(' or ')}`, 5000, () => {
    const log = mosquitto.log().slice(since)
    return wanted.find((text) => log.includes(text))
  })
}

/** Waits until the proxy holds no connection; resolves with the final count. */
export async function drained (proxy: TestProxy): Promise<number> {
  try {
    await pollUntil('proxy connections to drain', 5000, () => proxy.server.connections.size === 0 || undefined)
  } catch {
    // the caller asserts on the number
  }
  return proxy.server.connections.size
}

/** Messages with the scenario's unique topic prefix cut off, so runs compare. */
export function relative (msgs: Msg[], tag: string): Msg[] {
  return msgs.map((m) => ({ ...m, topic: m.topic.startsWith(`${tag}/`) ? m.topic.slice(tag.length + 1) : m.topic }))
}

// ---- message flow --------------------------------------------------------------------------

/** Deterministic, binary payloads of varied sizes (every tenth one 70 kB). */
export function payloadFor (pub: string, qos: number, i: number): Buffer {
  const head = Buffer.from(`${pub}:${qos}:${i}|`)
  const size = i % 10 === 0 ? 70_000 : (i * 37) % 600
  const body = Buffer.alloc(size)
  for (let k = 0; k < size; k++) body[k] = (i * 7 + k) % 256
  return Buffer.concat([head, body])
}

export const PER_PUBLISHER = 50
const PUBLISHERS = ['a', 'b']

export interface FlowResult {
  granted: number[]
  /** `q<qos>-<publisher>` → message indices in the order the PUBLISH packets arrived. */
  streams: Record<string, number[]>
  /** `q<qos>-<publisher>` → indices of the messages the client delivered, sorted. */
  delivered: Record<string, number[]>
  /** QoS levels seen per topic. */
  qosSeen: Record<string, number[]>
  badPayloads: number
  total: number
}

export function expectedFlow (): FlowResult {
  const streams: Record<string, number[]> = {}
  for (const qos of [0, 1, 2]) for (const p of PUBLISHERS) streams[`q${qos}-${p}`] = [...Array(PER_PUBLISHER).keys()]
  return { granted: [0, 1, 2], streams, delivered: streams, qosSeen: { q0: [0], q1: [1], q2: [2] }, badPayloads: 0, total: 3 * PUBLISHERS.length * PER_PUBLISHER }
}

/** Two publishers on `pubUrl`, one subscriber on `subUrl`; 50 messages each per QoS 0/1/2. */
export async function qosFlow (pubUrl: string, subUrl: string, version: Version, tag: string): Promise<FlowResult> {
  const sub = await connectPeer(subUrl, version, { clientId: `${tag}-sub` })
  // Order is judged on the wire: MQTT.js hands QoS 2 messages over at PUBREL, and Mosquitto's
  // PUBRELs (answers to the client's PUBRECs) may come in another order.
  const wire: string[] = []
  sub.client.on('packetreceive', (p) => { if (p.cmd === 'publish') wire.push(head(p.payload)) })
  const suback = await sub.client.subscribeAsync({ [`${tag}/q0`]: { qos: 0 }, [`${tag}/q1`]: { qos: 1 }, [`${tag}/q2`]: { qos: 2 } })
  const pubs = await Promise.all(PUBLISHERS.map((p) => connectPeer(pubUrl, version, { clientId: `${tag}-pub-${p}` })))
  // In windows that keep QoS 1+2 messages in flight within Mosquitto's max_inflight_messages
  // (20), each delivered before the next: beyond it Mosquitto 2.0.11 loses incoming QoS 2
  // messages, and lets new messages overtake those it queued for a busy subscriber, whether
  // or not a proxy is in between (a proxy's extra round trip just makes it likelier).
  const window = 4
  let total = 0
  for (let from = 0; from < PER_PUBLISHER; from += window) {
    const sent: Promise<unknown>[] = []
    for (let i = from; i < Math.min(from + window, PER_PUBLISHER); i++) {
      for (const qos of [0, 1, 2] as const) {
        pubs.forEach((pub, n) => { sent.push(pub.client.publishAsync(`${tag}/q${qos}`, payloadFor(PUBLISHERS[n] as string, qos, i), { qos })) })
      }
    }
    await Promise.all(sent)
    total += sent.length
    await sub.messages(total)
  }
  const result: FlowResult = { granted: suback.map((g) => g.qos), streams: {}, delivered: {}, qosSeen: {}, badPayloads: 0, total: sub.inbox.length }
  for (const h of wire) {
    const [pub = '?', qos = '?', i = '?'] = h.split(':')
    ;(result.streams[`q${qos}-${pub}`] ??= []).push(Number(i))
  }
  sub.inbox.forEach((m, n) => {
    const [pub = '?', qos = '?', i = '?'] = head(m.payload).split(':')
    ;(result.delivered[`q${qos}-${pub}`] ??= []).push(Number(i))
    const topic = m.topic.slice(tag.length + 1)
    const seen = (result.qosSeen[topic] ??= [])
    if (!seen.includes(m.qos)) seen.push(m.qos)
    if (!(sub.raw[n] as Buffer).equals(payloadFor(pub, Number(qos), Number(i)))) result.badPayloads++
  })
  for (const list of Object.values(result.delivered)) list.sort((a, b) => a - b)
  await Promise.all([sub, ...pubs].map((p) => p.client.endAsync()))
  return result
}

function head (payload: Buffer | string): string {
  const text = typeof payload === 'string' ? payload : payload.toString('latin1', 0, 40)
  return text.slice(0, text.indexOf('|'))
}

/** Retained: set, seen by a later subscriber with retain=1, live copies retain=0, cleared by an empty payload. */
export async function retained (url: string, version: Version, tag: string): Promise<Record<string, Msg[]>> {
  const topic = `${tag}/r`
  const pub = await connectPeer(url, version, { clientId: `${tag}-rp` })
  await pub.client.publishAsync(topic, 'kept', { qos: 1, retain: true })
  const late = await connectPeer(url, version, { clientId: `${tag}-rs1` })
  await late.client.subscribeAsync(topic, { qos: 1 })
  await late.messages(1)
  await pub.client.publishAsync(topic, 'kept again', { qos: 1, retain: true })
  await pub.client.publishAsync(topic, '', { qos: 1, retain: true })
  await late.messages(3)
  const after = await connectPeer(url, version, { clientId: `${tag}-rs2` })
  await after.client.subscribeAsync(topic, { qos: 1 })
  // Any retained message would come right after the SUBACK, before this live one.
  await pub.client.publishAsync(topic, 'live', { qos: 1 })
  await after.messages(1)
  await Promise.all([pub, late, after].map((p) => p.client.endAsync()))
  return { late: relative(late.inbox, tag), afterClear: relative(after.inbox, tag) }
}

/** A vanished client's will is published; a normally disconnected client's is not. */
export async function wills (url: string, version: Version, tag: string, mosquitto: Mosquitto): Promise<Msg[]> {
  const watcher = await connectPeer(mosquitto.url, version, { clientId: `${tag}-watch` })
  await watcher.client.subscribeAsync(`${tag}/will/#`, { qos: 1 })
  const will = (name: string): IClientOptions['will'] => ({
    topic: `${tag}/will/${name}`,
    payload: Buffer.from(`${name} is gone`),
    qos: 1,
    retain: false,
    ...(version === 5 && { properties: { contentType: 'text/plain', userProperties: { why: name } } })
  })
  const gone = await connectPeer(url, version, { clientId: `${tag}-gone`, will: will('gone') })
  gone.client.stream.destroy()
  await watcher.messages(1)
  await mosquittoSaw(mosquitto, `Client ${tag}-gone closed its connection.`)
  const left = await connectPeer(url, version, { clientId: `${tag}-left`, will: will('left') })
  await left.client.endAsync()
  await mosquittoSaw(mosquitto, `Client ${tag}-left disconnected.`)
  // Mosquitto has processed the DISCONNECT: a will would be out already, before this marker.
  await watcher.client.publishAsync(`${tag}/will/left`, 'marker', { qos: 1 })
  await watcher.messages(2)
  await watcher.client.endAsync()
  return relative(watcher.inbox, tag)
}

export interface SessionResult { firstPresent: boolean, secondPresent: boolean, offline: string[], afterEndPresent: boolean }

/** Persistent session: subscribe, leave, messages sent meanwhile arrive on return; then end the session. */
export async function persistentSession (firstUrl: string, secondUrl: string, version: Version, tag: string, mosquitto: Mosquitto): Promise<SessionResult> {
  const clientId = `${tag}-persist`
  const opts: IClientOptions = { clientId, clean: false, ...(version === 5 && { properties: { sessionExpiryInterval: 300 } }) }
  // Each connection is a new socket to Mosquitto: wait until it has processed a DISCONNECT
  // before connecting again, or the next CONNECT may overtake it.
  const leave = async (peer: Peer, disconnect = {}): Promise<void> => {
    const mark = mosquitto.log().length
    await peer.client.endAsync(disconnect)
    await mosquittoSaw(mosquitto, `Client ${clientId} disconnected.`, mark)
  }
  const first = await connectPeer(firstUrl, version, opts)
  await first.client.subscribeAsync(`${tag}/s`, { qos: 1 })
  await leave(first)
  const pub = await connectPeer(mosquitto.url, version, { clientId: `${tag}-spub` })
  for (let i = 0; i < 5; i++) await pub.client.publishAsync(`${tag}/s`, `offline ${i}`, { qos: 1 })
  await pub.client.endAsync()
  const second = await connectPeer(secondUrl, version, opts)
  await second.messages(5)
  // End the session: MQTT 5 by a DISCONNECT with session expiry 0, 3.1.1 by a clean connect.
  if (version === 5) {
    await leave(second, { properties: { sessionExpiryInterval: 0 } })
  } else {
    await leave(second)
    await leave(await connectPeer(secondUrl, version, { clientId, clean: true }))
  }
  const third = await connectPeer(secondUrl, version, opts)
  await third.client.endAsync(version === 5 ? { properties: { sessionExpiryInterval: 0 } } : {})
  return {
    firstPresent: first.connack?.sessionPresent ?? true,
    secondPresent: second.connack?.sessionPresent ?? false,
    offline: second.inbox.map((m) => m.payload),
    afterEndPresent: third.connack?.sessionPresent ?? true
  }
}

/**
 * A client publishes QoS 0 and disconnects normally at once (MQTT.js writes PUBLISH, DISCONNECT
 * and FIN back to back): the message must arrive and the will must not be published.
 */
export async function lastWords (url: string, version: Version, tag: string, mosquitto: Mosquitto): Promise<{ inbox: string[], seen: string }> {
  const watcher = await connectPeer(mosquitto.url, version, { clientId: `${tag}-watch` })
  await watcher.client.subscribeAsync(`${tag}/#`, { qos: 1 })
  const clientId = `${tag}-last`
  const peer = await connectPeer(url, version, { clientId, will: { topic: `${tag}/will`, payload: Buffer.from('will'), qos: 1, retain: false } })
  peer.client.publish(`${tag}/msg`, 'last words', { qos: 0 })
  await peer.client.endAsync()
  const seen = await mosquittoSaw(mosquitto, [`Client ${clientId} disconnected.`, `Client ${clientId} closed its connection.`])
  // Mosquitto is done with the client: its message or will is out before this marker.
  await watcher.client.publishAsync(`${tag}/marker`, 'marker', { qos: 1 })
  await watcher.until('the marker', () => watcher.inbox.find((m) => m.payload === 'marker'))
  await watcher.client.endAsync()
  return { inbox: relative(watcher.inbox, tag).map((m) => `${m.topic} ${m.payload}`), seen: seen.replace(clientId, 'X') }
}

/** Unsubscribe stops delivery: after UNSUBACK only the other subscription's marker arrives. */
export async function unsubscribe (url: string, version: Version, tag: string): Promise<{ inbox: string[], unsuback: string[] }> {
  const sub = await connectPeer(url, version, { clientId: `${tag}-us` })
  await sub.client.subscribeAsync({ [`${tag}/a`]: { qos: 1 }, [`${tag}/b`]: { qos: 1 } })
  const pub = await connectPeer(url, version, { clientId: `${tag}-up` })
  await pub.client.publishAsync(`${tag}/a`, 'one', { qos: 1 })
  await sub.messages(1)
  await sub.client.unsubscribeAsync([`${tag}/a`, `${tag}/never`])
  await pub.client.publishAsync(`${tag}/a`, 'two', { qos: 1 })
  await pub.client.publishAsync(`${tag}/b`, 'marker', { qos: 1 })
  await sub.messages(2)
  const unsuback = sub.last('unsuback') as { granted?: number[] | number, reasonCode?: number } | undefined
  await Promise.all([sub, pub].map((p) => p.client.endAsync()))
  return { inbox: sub.inbox.map((m) => `${m.topic.slice(tag.length + 1)} ${m.payload}`), unsuback: [JSON.stringify(unsuback?.granted ?? null)] }
}

/** Session takeover: a second client with the same ID; what does the first one get? */
export async function takeover (url: string, version: Version, tag: string): Promise<{ first: string[], firstClosed: boolean, secondCode: number | undefined }> {
  const first = await connectPeer(url, version, { clientId: `${tag}-dup` })
  const second = await connectPeer(url, version, { clientId: `${tag}-dup` })
  await first.gone()
  const result = { first: first.after(), firstClosed: first.closed, secondCode: connackCode(second) }
  await second.client.endAsync()
  return result
}

// ---- raw keepalive ---------------------------------------------------------------------------

export interface KeepaliveResult { packets: string[], closedAfterMs: number }

/** A raw client with keepalive 1 s: pings once, then goes silent until the broker closes it. */
export async function keepalive (url: string, version: Version, tag: string): Promise<KeepaliveResult> {
  const { hostname, port } = new URL(url)
  const socket = net.connect(Number(port), hostname)
  const parser = mqttPacket.parser({ protocolVersion: version })
  const packets: string[] = []
  let pongAt = 0
  parser.on('packet', (p: Packet) => {
    packets.push('reasonCode' in p && p.reasonCode !== undefined ? `${p.cmd}:${p.reasonCode}` : p.cmd)
    if (p.cmd === 'connack') socket.write(mqttPacket.generate({ cmd: 'pingreq' }))
    if (p.cmd === 'pingresp') pongAt = Date.now()
  })
  socket.on('data', (chunk: Buffer) => { parser.parse(chunk) })
  socket.on('error', () => {})
  const closed = new Promise<void>((resolve) => socket.once('close', () => { resolve() }))
  socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clientId: `${tag}-ka`, clean: true, keepalive: 1 }, { protocolVersion: version }))
  const timeout = setTimeout(() => { socket.destroy() }, 12_000)
  await closed
  clearTimeout(timeout)
  return { packets, closedAfterMs: pongAt === 0 ? -1 : Date.now() - pongAt }
}

/**
 * A raw client that pipelines CONNECT, SUBSCRIBE, PUBLISH (QoS 1, to itself) and PINGREQ in
 * one TCP write, before any CONNACK: the proxy must queue and replay them in order.
 */
export async function pipelined (url: string, version: Version, tag: string): Promise<string[]> {
  const { hostname, port } = new URL(url)
  const socket = net.connect(Number(port), hostname)
  const parser = mqttPacket.parser({ protocolVersion: version })
  const packets: string[] = []
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`pipelined: only got ${packets.join(', ')}`)) }, WAIT_MS)
    parser.on('packet', (p: Packet) => {
      const code = 'reasonCode' in p && p.reasonCode !== undefined ? `:${p.reasonCode}` : ''
      const granted = p.cmd === 'suback' ? ` ${p.granted.join(',')}` : ''
      packets.push(p.cmd === 'publish' ? `publish ${p.topic.slice(tag.length + 1)} ${p.payload.toString()} q${p.qos}` : `${p.cmd}${code}${granted}`)
      if (['pingresp', 'publish', 'puback'].every((c) => packets.some((s) => s.startsWith(c)))) { clearTimeout(timer); resolve() }
    })
    socket.once('close', () => { clearTimeout(timer); reject(new Error(`pipelined: closed after ${packets.join(', ')}`)) })
  })
  socket.on('data', (chunk: Buffer) => { parser.parse(chunk) })
  socket.on('error', () => {})
  const opts = { protocolVersion: version }
  socket.write(Buffer.concat([
    mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clientId: `${tag}-pipe`, clean: true, keepalive: 30 }, opts),
    mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${tag}/p`, qos: 1 }] }, opts),
    mqttPacket.generate({ cmd: 'publish', messageId: 2, topic: `${tag}/p`, payload: Buffer.from('early'), qos: 1, dup: false, retain: false }, opts),
    mqttPacket.generate({ cmd: 'pingreq' }, opts)
  ]))
  try {
    await done
  } finally {
    socket.end(mqttPacket.generate({ cmd: 'disconnect' }, opts))
  }
  return packets
}
