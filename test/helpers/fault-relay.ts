// A TCP relay between the proxy and a broker that can lose a packet on purpose: armed with
// a packet type, it cuts both sockets when the next frame of that type comes from the proxy,
// before forwarding it. "The proxy's link to the broker died just after the client's PUBACK."

import net from 'node:net'

export interface FaultRelay {
  readonly port: number
  readonly url: string
  /** The next frame of this MQTT packet type (4 = PUBACK) towards the broker is lost with the link. */
  cutOn: (type: number) => Promise<void>
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
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const broker = net.connect({ port: brokerPort, host: '127.0.0.1' })
    for (const s of [client, broker]) {
      sockets.add(s)
      s.on('close', () => { sockets.delete(s) })
      s.on('error', () => {})
    }
    broker.on('data', (chunk: Buffer) => { client.write(chunk) })
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
    stop: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
}
