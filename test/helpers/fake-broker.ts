// A tiny scripted MQTT broker on a kernel-chosen loopback port, for behaviours a real Mosquitto
// won't produce on demand (enhanced AUTH, broker→client topic aliases, a broker that never
// answers CONNECT). Each accepted socket becomes a FakeSession that the test's script drives:
// wait for the next packet, send packets back, close.

import net from 'node:net'
import mqttPacket from 'mqtt-packet'
import type { Packet, PacketCmd } from 'mqtt-packet'

export interface FakeSession {
  readonly socket: net.Socket
  /** Protocol level from the CONNECT (4 until one has been read). */
  readonly version: 3 | 4 | 5
  /** Every packet received so far, in order. */
  readonly received: Packet[]
  /** Resolves with the next unread packet (of `cmd`, skipping nothing: a different cmd rejects). */
  next: (cmd?: PacketCmd, timeoutMs?: number) => Promise<Packet>
  send: (packet: Packet) => void
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>
}

export interface FakeBroker {
  readonly port: number
  /** mqtt://127.0.0.1:PORT */
  readonly url: string
  readonly sessions: FakeSession[]
  /** Destroys every session socket and closes the listener. */
  close: () => Promise<void>
}

export type FakeScript = (session: FakeSession) => void | Promise<void>

class Session implements FakeSession {
  version: 3 | 4 | 5 = 4
  readonly received: Packet[] = []
  readonly closed: Promise<void>
  private read = 0
  private waiter: (() => void) | null = null

  constructor (readonly socket: net.Socket) {
    const parser = mqttPacket.parser()
    parser.on('packet', (packet: Packet) => {
      if (packet.cmd === 'connect') this.version = packet.protocolVersion ?? 4
      this.received.push(packet)
      this.waiter?.()
    })
    parser.on('error', () => { socket.destroy() })
    socket.on('data', (chunk: Buffer) => { parser.parse(chunk) })
    socket.on('error', () => {})
    this.closed = new Promise((resolve) => {
      socket.once('close', () => { this.waiter?.(); resolve() })
    })
  }

  async next (cmd?: PacketCmd, timeoutMs = 5000): Promise<Packet> {
    const deadline = Date.now() + timeoutMs
    while (this.read >= this.received.length) {
      if (this.socket.destroyed) throw new Error(`fake broker: socket closed while waiting for ${cmd ?? 'a packet'}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`fake broker: no ${cmd ?? 'packet'} within ${timeoutMs} ms`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiter = () => { clearTimeout(timer); this.waiter = null; resolve() }
      })
    }
    const packet = this.received[this.read++] as Packet
    if (cmd !== undefined && packet.cmd !== cmd) throw new Error(`fake broker: expected ${cmd}, got ${packet.cmd}`)
    return packet
  }

  send (packet: Packet): void {
    if (!this.socket.destroyed) this.socket.write(mqttPacket.generate(packet, { protocolVersion: this.version }))
  }
}

/** Starts a fake broker; `script` runs once per accepted connection. Script errors close that socket. */
export async function startFakeBroker (script: FakeScript): Promise<FakeBroker> {
  const sessions: Session[] = []
  const server = net.createServer((socket) => {
    const session = new Session(socket)
    sessions.push(session)
    Promise.resolve()
      .then(() => script(session))
      .catch(() => { socket.destroy() })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: '127.0.0.1', port: 0 }, () => { server.removeListener('error', reject); resolve() })
  })
  const port = (server.address() as net.AddressInfo).port
  return {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    sessions,
    close: async () => {
      for (const s of sessions) s.socket.destroy()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
}
