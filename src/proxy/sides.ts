// The two sockets of a Connection and the flow between them: every byte to a side goes
// through that side's Coalescer (one write per read, order kept), and a destination that is
// full holds the other side's reading until it drains. A broker socket that reads into a
// ReadBuffer (upstream/read-buffer.ts) hands its chunks here directly; its buffer is reused
// for the next read unless something still holds bytes of the chunk.

import type { Duplex } from 'node:stream'
import { Coalescer } from './coalescer.js'
import type { Framer } from '../wire/framer.js'
import { HOLD, Valve } from './lane.js'
import { readBufferOf } from '../upstream/read-buffer.js'

/** Time given to sockets to flush on close before they are destroyed. */
export const CLOSE_GRACE_MS = 2000

export class Sides {
  broker: Duplex | null = null
  readonly clientValve: Valve
  brokerValve: Valve | null = null
  bytesIn = 0
  bytesOut = 0
  /** When the client last sent anything (ms since epoch): tells a keepalive timeout apart. */
  clientDataAt = Date.now()
  /** Times the client could not take what the broker sent (its socket buffer full). */
  clientStalls = 0
  private stalledMs = 0
  private stalledAt = 0
  private clientFull = false
  private brokerChunkKept = false
  private brokerFull = false
  private readonly toBrokerBatch = new Coalescer((bytes) => { if (this.broker !== null) this.write(this.broker, bytes) })
  private readonly toClientBatch = new Coalescer((bytes) => { this.write(this.client, bytes) })

  constructor (readonly client: Duplex) {
    this.clientValve = new Valve(client)
  }

  attachBroker (socket: Duplex): Valve {
    this.broker = socket
    this.brokerValve = new Valve(socket)
    return this.brokerValve
  }

  /**
   * Lets go of the broker socket (failover: rehome): what was still batched for it is dropped
   * (the session record resends what matters), a hold it caused on the client is released.
   */
  detachBroker (): Duplex | null {
    const old = this.broker
    this.toBrokerBatch.drop()
    this.broker = null
    this.brokerValve = null
    if (this.brokerFull) {
      this.brokerFull = false
      this.clientValve.release(HOLD.destinationFull)
    }
    return old
  }

  /** Frames every chunk read from one side; what that produces for the other side is batched. */
  read (from: 'client' | 'broker', framer: Framer, fail: (err: unknown) => void): void {
    if (from === 'client') {
      this.client.on('data', (chunk: Buffer) => {
        this.bytesIn += chunk.length
        this.clientDataAt = Date.now()
        this.frame(chunk, framer, this.toBrokerBatch, fail)
      })
    } else {
      const broker = this.broker as Duplex
      const reads = readBufferOf(broker)
      const handle = (chunk: Buffer): void => {
        this.bytesOut += chunk.length
        this.brokerChunkKept = false
        this.frame(chunk, framer, this.toClientBatch, fail)
        // The buffer is read into again unless a frame of this chunk waits in a lane or the
        // client's socket still holds bytes of it (a write the kernel did not take at once).
        if (this.brokerChunkKept || this.client.writableLength > 0) reads?.keep()
      }
      if (reads === undefined) broker.on('data', handle)
      else reads.take(handle)
    }
  }

  /** A frame of the broker chunk being framed is kept past its read (it takes the lane). */
  keepBrokerChunk (): void {
    this.brokerChunkKept = true
  }

  private frame (chunk: Buffer, framer: Framer, batch: Coalescer, fail: (err: unknown) => void): void {
    batch.begin(chunk)
    try {
      framer.push(chunk)
    } catch (err) {
      fail(err)
    }
    batch.finish()
  }

  /** Milliseconds the broker side was held for the client, the current stall included. */
  clientStalledMs (): number {
    return this.stalledMs + (this.clientFull ? Date.now() - this.stalledAt : 0)
  }

  toClient (bytes: Buffer): void {
    this.toClientBatch.add(bytes)
  }

  toBroker (bytes: Buffer): void {
    this.toBrokerBatch.add(bytes)
  }

  /** `buf[start..end)`, a packet of which no view was made (the plain path), to each side. */
  toClientSpan (buf: Buffer, start: number, end: number): void {
    this.toClientBatch.addSpan(buf, start, end)
  }

  toBrokerSpan (buf: Buffer, start: number, end: number): void {
    this.toBrokerBatch.addSpan(buf, start, end)
  }

  /** Writes what is pending, ends both sockets, and destroys them if they linger. */
  end (): void {
    this.toClientBatch.finish()
    this.toBrokerBatch.finish()
    this.client.end()
    this.broker?.end()
    const sockets = [this.client, this.broker].filter((s): s is Duplex => s !== null && !s.destroyed)
    if (sockets.length === 0) return
    const grace = setTimeout(() => { for (const s of sockets) s.destroy() }, CLOSE_GRACE_MS)
    let open = sockets.length
    for (const s of sockets) s.once('close', () => { if (--open === 0) clearTimeout(grace) })
  }

  destroy (): void {
    this.client.destroy()
    this.broker?.destroy()
  }

  /** Writes with backpressure: a full destination holds the other side's reading. */
  private write (to: Duplex, bytes: Buffer): void {
    if (to.destroyed || to.writableEnded) return
    if (to.write(bytes)) return
    if (to === this.client) {
      if (this.clientFull || this.brokerValve === null) return
      this.clientFull = true
      this.clientStalls++
      this.stalledAt = Date.now()
      this.brokerValve.hold(HOLD.destinationFull)
      to.once('drain', () => {
        this.clientFull = false
        this.stalledMs += Date.now() - this.stalledAt
        this.brokerValve?.release(HOLD.destinationFull)
      })
    } else {
      if (this.brokerFull) return
      this.brokerFull = true
      this.clientValve.hold(HOLD.destinationFull)
      to.once('drain', () => { this.brokerFull = false; this.clientValve.release(HOLD.destinationFull) })
    }
  }
}
