// A raw-socket MQTT client for tests that send hand-made or malformed bytes: net + mqtt-packet.
// It records every byte and every packet it receives, and lets a test wait for a packet or
// for the socket to close (events, never sleeps). Not a fake broker: it only ever dials out.

import net from 'node:net'
import { EventEmitter } from 'node:events'
import mqttPacket from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'

export type RawVersion = 3 | 4 | 5

export interface RawCloseInfo {
  /** Milliseconds from connect to 'close'. */
  afterMs: number
  hadError: boolean
}

export class RawMqttClient {
  /** Every byte received, in order. */
  received: Buffer = Buffer.alloc(0)
  readonly packets: Packet[] = []
  readonly parseErrors: Error[] = []
  /** Resolves when the socket closes (for whatever reason). */
  readonly closed: Promise<RawCloseInfo>
  isClosed = false
  private readonly events = new EventEmitter()
  private readonly parser: mqttPacket.Parser
  private readonly connectedAt = Date.now()

  private constructor (readonly socket: net.Socket, readonly protocolVersion: RawVersion, collect: boolean) {
    this.parser = mqttPacket.parser({ protocolVersion })
    this.parser.on('packet', (p: Packet) => {
      if (collect) this.packets.push(p)
      this.events.emit('packet', p)
    })
    this.parser.on('error', (err: Error) => { this.parseErrors.push(err) })
    socket.on('data', (chunk: Buffer) => {
      if (collect) this.received = Buffer.concat([this.received, chunk])
      this.parser.parse(chunk)
    })
    socket.on('error', () => { /* 'close' follows; a reset is a close for these tests */ })
    this.closed = new Promise((resolve) => {
      socket.once('close', (hadError) => {
        this.isClosed = true
        resolve({ afterMs: Date.now() - this.connectedAt, hadError })
      })
    })
  }

  /**
   * Opens a TCP connection. `collect: false` keeps no copy of received bytes or packets
   * (for floods); 'packet' events still fire.
   */
  static async open (port: number, protocolVersion: RawVersion = 4, collect = true): Promise<RawMqttClient> {
    const socket = net.connect({ host: '127.0.0.1', port })
    socket.setNoDelay(true)
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => { socket.removeListener('error', reject); resolve() })
      socket.once('error', reject)
    })
    return new RawMqttClient(socket, protocolVersion, collect)
  }

  /** Opens, sends a CONNECT for `clientId` and waits for its CONNACK. */
  static async connected (port: number, protocolVersion: RawVersion, clientId: string, collect = true): Promise<RawMqttClient> {
    const client = await RawMqttClient.open(port, protocolVersion, collect)
    const connack = client.next('connack')
    client.sendPacket({ cmd: 'connect', protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT', protocolVersion, clientId, clean: true, keepalive: 60 })
    const packet = await connack
    const code = protocolVersion === 5 ? packet.reasonCode : packet.returnCode
    if (code !== 0) throw new Error(`CONNACK code ${String(code)}`)
    return client
  }

  get localPort (): number {
    return this.socket.localPort ?? 0
  }

  /** Writes raw bytes; returns what socket.write returned. */
  send (bytes: Buffer | number[]): boolean {
    return this.socket.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes))
  }

  sendPacket (packet: Packet): boolean {
    return this.send(mqttPacket.generate(packet, { protocolVersion: this.protocolVersion }))
  }

  on (event: 'packet', listener: (p: Packet) => void): void {
    this.events.on(event, listener)
  }

  /** The next packet of this type (already received ones count), or a rejection after timeoutMs. */
  async next<C extends Packet['cmd']> (cmd: C, timeoutMs = 5000): Promise<Extract<Packet, { cmd: C }>> {
    const seen = this.packets.find((p) => p.cmd === cmd)
    if (seen !== undefined) return seen as Extract<Packet, { cmd: C }>
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.events.removeListener('packet', onPacket)
        reject(new Error(`no ${cmd} within ${timeoutMs} ms (got: ${this.packets.map((p) => p.cmd).join(', ') || 'nothing'})`))
      }, timeoutMs)
      const onPacket = (p: Packet): void => {
        if (p.cmd !== cmd) return
        clearTimeout(timer)
        this.events.removeListener('packet', onPacket)
        resolve(p as Extract<Packet, { cmd: C }>)
      }
      this.events.on('packet', onPacket)
    })
  }

  /** Like next(), but each received packet is returned once: for a sequence of the same type. */
  async take<C extends Packet['cmd']> (cmd: C, timeoutMs = 5000): Promise<Extract<Packet, { cmd: C }>> {
    const packet = await this.next(cmd, timeoutMs)
    const i = this.packets.indexOf(packet)
    if (i >= 0) this.packets.splice(i, 1)
    return packet
  }

  /** Resolves when the peer closed the socket; rejects if it is still open after timeoutMs. */
  async waitClose (timeoutMs = 5000): Promise<RawCloseInfo> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new Error(`socket still open after ${timeoutMs} ms`)) }, timeoutMs)
    })
    try {
      return await Promise.race([this.closed, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  pause (): void { this.socket.pause() }
  resume (): void { this.socket.resume() }

  /** Closes from our side (idempotent) and waits for 'close'. */
  async destroy (): Promise<void> {
    this.socket.destroy()
    await this.closed
  }
}

/** Encodes a Remaining Length as the variable byte integer of [MQTT-1.5.5]. */
export function remainingLength (n: number): number[] {
  const out: number[] = []
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    out.push(byte)
  } while (n > 0)
  return out
}

/**
 * A CONNECT made by hand: protocol name, any level, connect flags (clean session by default),
 * keepalive 60, a client ID. mqtt-packet's generator refuses what these tests must send.
 */
export function handMadeConnect (level: number, clientId: string, name = 'MQTT', flags = 0x02): Buffer {
  const str = (s: string): number[] => [s.length >> 8, s.length & 0xff, ...Buffer.from(s)]
  const props = level === 5 ? [0] : []
  const body = [...str(name), level, flags, 0, 60, ...props, ...str(clientId)]
  return Buffer.from([0x10, ...remainingLength(body.length), ...body])
}
