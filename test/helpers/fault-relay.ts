// A TCP relay (between a client and the proxy, or the proxy and a broker) that can lose a
// packet on purpose. cutOn: it cuts both sockets when the next frame of a type comes from its
// client side, before forwarding it ("the proxy's link to the broker died just after the
// client's PUBACK"). swallowOn: from the next frame of a type on, one direction is silently
// lost while the link stays up ("the PUBACK was still in the proxy when it was killed").

import net from 'node:net'

export interface FaultRelay {
  readonly port: number
  readonly url: string
  /** The next frame of this MQTT packet type (4 = PUBACK) towards the broker is lost with the link. */
  cutOn: (type: number) => Promise<void>
  /** From the next frame of this type coming from `from` on, that direction of that link is lost. */
  swallowOn: (type: number, from: 'client' | 'server') => Promise<void>
  stop: () => Promise<void>
}

/** Splits a byte stream into MQTT frames by the fixed header. */
function frames (onFrame: (frame: Buffer) => boolean): (chunk: Buffer) => void {
  let buffered: Buffer = Buffer.alloc(0)
  return (chunk) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
    for (;;) {
      let length = 0
      let multiplier = 1
      let i = 1
      for (; i < buffered.length && i <= 4; i++) {
        const byte = buffered[i] as number
        length += (byte & 0x7f) * multiplier
        multiplier *= 128
        if ((byte & 0x80) === 0) break
      }
      if (i >= buffered.length || buffered.length < i + 1 + length) return
      const frame = buffered.subarray(0, i + 1 + length)
      buffered = buffered.subarray(i + 1 + length)
      if (!onFrame(frame)) return
    }
  }
}

export async function startFaultRelay (brokerPort: number): Promise<FaultRelay> {
  let armed: { type: number, done: () => void } | undefined
  let swallow: { type: number, from: 'client' | 'server', done: () => void } | undefined
  /** True when `frame` from `from` is the one to swallow: the caller then stops forwarding. */
  const swallows = (frame: Buffer, from: 'client' | 'server'): boolean => {
    if (swallow === undefined || swallow.from !== from || (frame[0] as number) >> 4 !== swallow.type) return false
    const { done } = swallow
    swallow = undefined
    done()
    return true
  }
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const broker = net.connect({ port: brokerPort, host: '127.0.0.1' })
    for (const s of [client, broker]) {
      sockets.add(s)
      s.on('close', () => { sockets.delete(s) })
      s.on('error', () => {})
    }
    const lost = { client: false, server: false }
    broker.on('data', frames((frame) => {
      if (lost.server || swallows(frame, 'server')) {
        lost.server = true
        return true
      }
      client.write(frame)
      return true
    }))
    broker.on('close', () => { client.destroy() })
    client.on('close', () => { broker.destroy() })
    client.on('data', frames((frame) => {
      if (armed !== undefined && (frame[0] as number) >> 4 === armed.type) {
        const { done } = armed
        armed = undefined
        client.destroy()
        broker.destroy()
        done()
        return false
      }
      if (lost.client || swallows(frame, 'client')) {
        lost.client = true
        return true
      }
      broker.write(frame)
      return true
    }))
  })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  const port = (server.address() as net.AddressInfo).port
  return {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    cutOn: async (type) => { await new Promise<void>((resolve) => { armed = { type, done: resolve } }) },
    swallowOn: async (type, from) => { await new Promise<void>((resolve) => { swallow = { type, from, done: resolve } }) },
    stop: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
}
