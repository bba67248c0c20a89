// `mqtt-guard probe`: walks one connection the way an operator would check it by hand, step by
// step, each with its time: name resolution, TCP, TLS (chain, host name, expiry), WebSocket
// upgrade, CONNECT → CONNACK in words with the likely fix, then a subscription and a round trip
// at QoS 0, 1 and 2 on a probe topic. It stops at the first step that fails. It speaks to any
// broker (hand-made packets with mqtt-packet over net/tls/ws), mqtt-guard included. The steps below MQTT
// (resolve, TCP, TLS, WebSocket) and probe's types are in probe-network.ts.

import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import type { Duplex } from 'node:stream'
import mqtt, { type IPubackPacket, type IPubcompPacket, type IPubrecPacket, type Packet } from 'mqtt-packet'
import { connackAdvice, publishFix, reasonText } from '../wire/reason-codes.js'
import { explainJwt } from './probe-jwt.js'
import { elapsed, handshake, resolve, StepFailed, tcp, upgrade, type ProbeOptions, type ProbeReport, type ProbeStep, type ProbeVersion, type RecordStep } from './probe-network.js'

export type { ProbeOptions, ProbeReport, ProbeStep, ProbeVersion, StepName } from './probe-network.js'

const SCHEMES: Record<string, { port: number, tls: boolean, ws: boolean }> = {
  'mqtt:': { port: 1883, tls: false, ws: false },
  'tcp:': { port: 1883, tls: false, ws: false },
  'mqtts:': { port: 8883, tls: true, ws: false },
  'ssl:': { port: 8883, tls: true, ws: false },
  'ws:': { port: 80, tls: false, ws: true },
  'wss:': { port: 443, tls: true, ws: true }
}

const ACCEPTED = 'mqtt://HOST[:PORT], mqtts://, ws://HOST[:PORT]/PATH, wss://, or HOST[:PORT]'

/**
 * What `probe ARG` dials, as a URL: ARG itself when it names a scheme, else HOST, HOST:PORT,
 * [IPV6]:PORT or a bare IPv6 address, meaning mqtt:// (mqtts:// when `tls`: the --cafile and
 * --cert habit of mosquitto_pub, which then also defaults to 8883). Or why it cannot be probed.
 */
export function probeUrl (arg: string, tls = false): { url: string } | { problem: string } {
  // A scheme is letters then "://": `localhost:1884` is a host and a port, not scheme "localhost:".
  const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(arg) ? arg : `${tls ? 'mqtts' : 'mqtt'}://${net.isIPv6(arg) ? `[${arg}]` : arg}`
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return { problem: `not a URL or HOST[:PORT]: ${arg} (expected ${ACCEPTED})` }
  }
  if (SCHEMES[parsed.protocol] === undefined) return { problem: `unsupported scheme ${parsed.protocol} in ${arg} (expected ${ACCEPTED}; tcp:// and ssl:// also work)` }
  if (parsed.hostname === '') return { problem: `${arg} names no host (expected ${ACCEPTED})` }
  return { url }
}

export async function runProbe (options: ProbeOptions): Promise<ProbeReport> {
  const url = new URL(options.url)
  const scheme = SCHEMES[url.protocol] as { port: number, tls: boolean, ws: boolean }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  const port = url.port === '' ? scheme.port : Number(url.port)
  const clientId = options.clientId ?? `mqtt-guard-probe-${randomBytes(4).toString('hex')}`
  const report: ProbeReport = { url: options.url, clientId, protocolVersion: options.protocolVersion, ok: false, steps: [] }
  const record = (step: ProbeStep): ProbeStep => {
    report.steps.push(step)
    options.onStep?.(step)
    if (!step.ok) throw new StepFailed(step.detail)
    return step
  }
  const sockets: Array<{ destroy: () => void }> = []
  try {
    const address = await resolve(host, record)
    let stream: Duplex
    if (!scheme.ws) {
      const socket = await tcp(address, port, options.timeoutMs, record)
      sockets.push(socket)
      stream = scheme.tls ? await handshake(socket, host, options, record) : socket
    } else {
      // The WebSocket library dials on its own: check the port and the certificate first on a
      // connection of our own, so each layer's failure has its own step.
      const socket = await tcp(address, port, options.timeoutMs, record)
      sockets.push(socket)
      if (scheme.tls) await handshake(socket, host, options, record)
      socket.destroy()
      const ws = await upgrade(url, options, record)
      sockets.push(ws.socket)
      stream = ws.stream
    }
    const session = new Session(stream, options.protocolVersion)
    sockets.push(session)
    await connect(session, clientId, options, record)
    const topic = options.topic ?? `mqtt-guard/probe/${clientId}`
    const granted = await subscribe(session, topic, options, record)
    for (const qos of [0, 1, 2] as const) await roundTrip(session, topic, qos, granted, options, record)
    const start = performance.now()
    session.send({ cmd: 'disconnect' })
    session.end()
    record({ step: 'disconnect', ok: true, ms: elapsed(start), detail: 'DISCONNECT sent, connection closed' })
    report.ok = true
  } catch (err) {
    if (!(err instanceof StepFailed)) throw err
  } finally {
    for (const s of sockets) s.destroy()
  }
  return report
}

class Session {
  private readonly parser: mqtt.Parser
  private readonly packets: Packet[] = []
  private waiter: (() => void) | null = null
  closed = false
  nextId = 1

  constructor (private readonly stream: Duplex, private readonly version: ProbeVersion) {
    this.parser = mqtt.parser({ protocolVersion: version })
    this.parser.on('packet', (p: Packet) => { this.arrived(p) })
    this.parser.on('error', () => { this.stream.destroy() })
    stream.on('data', (chunk: Buffer) => { this.parser.parse(chunk) })
    const gone = (): void => { this.closed = true; this.wake() }
    stream.on('close', gone)
    stream.on('end', gone)
    stream.on('error', gone)
  }

  private arrived (p: Packet): void {
    if (p.cmd === 'publish' && p.qos === 1) this.send({ cmd: 'puback', messageId: p.messageId as number })
    if (p.cmd === 'publish' && p.qos === 2) this.send({ cmd: 'pubrec', messageId: p.messageId as number })
    if (p.cmd === 'pubrel') this.send({ cmd: 'pubcomp', messageId: p.messageId as number })
    if (p.cmd === 'pubrec' && (p.reasonCode ?? 0) < 0x80) this.send({ cmd: 'pubrel', messageId: p.messageId as number })
    this.packets.push(p)
    this.wake()
  }

  private wake (): void {
    const w = this.waiter
    this.waiter = null
    w?.()
  }

  send (packet: Packet): void {
    if (!this.closed) this.stream.write(mqtt.generate(packet, { protocolVersion: this.version }))
  }

  /** The first packet (received so far or later) that `match` accepts; undefined on close or timeout. */
  async next<P extends Packet> (match: (p: Packet) => p is P, timeoutMs: number): Promise<P | 'closed' | 'timeout'> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const i = this.packets.findIndex(match)
      if (i >= 0) return this.packets.splice(i, 1)[0] as P
      if (this.closed) return 'closed'
      const left = deadline - Date.now()
      if (left <= 0) return 'timeout'
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiter = () => { clearTimeout(timer); resolve() }
      })
    }
  }

  end (): void {
    this.stream.end()
  }

  destroy (): void {
    this.stream.destroy()
  }
}

const is = <C extends Packet['cmd']>(cmd: C, test: (p: Extract<Packet, { cmd: C }>) => boolean = () => true) =>
  (p: Packet): p is Extract<Packet, { cmd: C }> => p.cmd === cmd && test(p as Extract<Packet, { cmd: C }>)

async function connect (session: Session, clientId: string, options: ProbeOptions, record: RecordStep): Promise<void> {
  const start = performance.now()
  const v = options.protocolVersion
  session.send({
    cmd: 'connect', protocolId: v === 3 ? 'MQIsdp' : 'MQTT', protocolVersion: v, clientId, clean: true, keepalive: 30,
    ...(options.username !== undefined ? { username: options.username } : {}),
    ...(options.password !== undefined ? { password: Buffer.from(options.password) } : {})
  })
  const connack = await session.next(is('connack'), options.timeoutMs)
  if (connack === 'closed' || connack === 'timeout') {
    record({
      step: 'connect', ok: false, ms: elapsed(start),
      detail: connack === 'closed' ? 'the server closed the connection without a CONNACK' : `no CONNACK within ${options.timeoutMs} ms`,
      fix: connack === 'closed'
        ? `the server may not speak MQTT ${v === 5 ? '5' : v === 4 ? '3.1.1' : '3.1'} (try -V ${v === 5 ? '311' : '5'}), may want TLS on this port (mqtts://), or refused the client ID; its log says which`
        : 'the server accepted the connection but does not answer MQTT: a wrong port, or a TLS port used without mqtts://'
    })
    return
  }
  const code = v === 5 ? connack.reasonCode ?? 0 : connack.returnCode ?? 0
  const { meaning, fix } = connackAdvice(v, code)
  const props = connack.properties ?? {}
  const facts = [`session present: ${connack.sessionPresent ? 'yes' : 'no'}`]
  if (props.assignedClientIdentifier !== undefined) facts.push(`assigned client ID ${props.assignedClientIdentifier}`)
  if (props.serverKeepAlive !== undefined) facts.push(`server keepalive ${props.serverKeepAlive} s`)
  if (props.maximumQoS !== undefined) facts.push(`maximum QoS ${props.maximumQoS}`)
  if (props.reasonString !== undefined) facts.push(`reason: ${props.reasonString}`)
  const refused = v === 5 ? code >= 0x80 : code !== 0
  // A refused JWT: what its own claims say is wrong (decoded locally; the token is never shown).
  const jwt = refused ? explainJwt(options.username, options.password) : undefined
  record({ step: 'connect', ok: !refused, ms: elapsed(start), detail: `CONNACK ${meaning} (${facts.join(', ')})`, fix: jwt === undefined ? fix : `${jwt}. ${fix ?? ''}`.trim(), data: { code, sessionPresent: connack.sessionPresent, properties: connack.properties } })
}

/** SUBACK codes that refuse a filter: 0x80 in 3.1.1, any code from 0x80 in MQTT 5. */
async function subscribe (session: Session, topic: string, options: ProbeOptions, record: RecordStep): Promise<number> {
  const start = performance.now()
  const messageId = session.nextId++
  session.send({ cmd: 'subscribe', messageId, subscriptions: [{ topic, qos: 2 }] })
  const suback = await session.next(is('suback', (p) => p.messageId === messageId), options.timeoutMs)
  if (suback === 'closed' || suback === 'timeout') {
    record({ step: 'subscribe', ok: false, ms: elapsed(start), detail: suback === 'closed' ? 'the server closed the connection instead of answering SUBSCRIBE' : `no SUBACK within ${options.timeoutMs} ms`, fix: 'the server refuses the subscription by closing: an invalid topic filter, or an ACL that disconnects; its log says which' })
    return -1
  }
  const granted = suback.granted[0] as number
  if (granted >= 0x80) {
    record({ step: 'subscribe', ok: false, ms: elapsed(start), detail: `SUBACK ${options.protocolVersion === 5 ? reasonText(granted) : '0x80 failure'} for ${topic}`, fix: 'the server refuses this subscription: the ACL does not let this client subscribe to the topic (choose one it may use with -t), or the filter is invalid' })
    return -1
  }
  record({ step: 'subscribe', ok: true, ms: elapsed(start), detail: `${topic} granted QoS ${granted}`, data: { topic, granted } })
  return granted
}

async function roundTrip (session: Session, topic: string, qos: 0 | 1 | 2, granted: number, options: ProbeOptions, record: RecordStep): Promise<void> {
  const step = `qos ${qos}` as const
  const start = performance.now()
  const payload = `mqtt-guard probe qos ${qos} ${randomBytes(6).toString('hex')}`
  const messageId = qos > 0 ? session.nextId++ : undefined
  session.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, retain: false, dup: false, ...(messageId !== undefined ? { messageId } : {}) })
  let ackMs: number | undefined
  if (qos > 0) {
    const ackName = qos === 1 ? 'PUBACK' : 'PUBCOMP'
    // QoS 2 ends with PUBCOMP, or with a PUBREC that refuses it (MQTT 5).
    const ack = await session.next((p: Packet): p is IPubackPacket | IPubcompPacket | IPubrecPacket => p.messageId === messageId &&
      (p.cmd === (qos === 1 ? 'puback' : 'pubcomp') || (p.cmd === 'pubrec' && (p.reasonCode ?? 0) >= 0x80)), options.timeoutMs)
    if (ack === 'closed' || ack === 'timeout') {
      record({ step, ok: false, ms: elapsed(start), detail: ack === 'closed' ? 'the server closed the connection after the PUBLISH' : `no ${ackName} within ${options.timeoutMs} ms`, fix: 'the server refused the publish by closing: the ACL denies publishing to this topic (3.1.1 servers often disconnect), or the message is too large' })
      return
    }
    const code = ack.reasonCode ?? 0
    if (code >= 0x80) {
      record({ step, ok: false, ms: elapsed(start), detail: `${ack.cmd.toUpperCase()} ${reasonText(code)} for ${topic}`, fix: publishFix(code) })
      return
    }
    ackMs = elapsed(start)
  }
  const echo = await session.next(is('publish', (p) => p.topic === topic && p.payload.toString() === payload), options.timeoutMs)
  if (echo === 'closed' || echo === 'timeout') {
    record({
      step, ok: false, ms: elapsed(start),
      detail: echo === 'closed' ? 'the server closed the connection before delivering the message' : `published${ackMs !== undefined ? ' and acknowledged' : ''} but not received back within ${options.timeoutMs} ms`,
      fix: 'the server took the message but did not deliver it to this subscriber: an ACL that refuses receiving (or silently refuses publishing, as 3.1.1 servers do), or a broker that drops QoS above its maximum'
    })
    return
  }
  const delivered = echo.qos
  record({
    step, ok: true, ms: elapsed(start),
    detail: `round trip ${elapsed(start)} ms${ackMs !== undefined ? `, ${qos === 1 ? 'PUBACK' : 'PUBCOMP'} after ${ackMs} ms` : ''}${delivered !== qos ? `, delivered at QoS ${delivered} (granted ${granted})` : ''}`,
    data: { roundTripMs: elapsed(start), ackMs, deliveredQos: delivered }
  })
}
