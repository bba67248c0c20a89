// Reading a broker socket into a buffer of the proxy's own (the `onread` option of net.connect)
// instead of through its stream 'data' events. By default each read gets a new 64 KiB
// allocation, shrunk to the bytes read, wrapped as a Buffer and pushed through the Readable
// machinery (a 'data' event, then a tick to read more). With `onread`, libuv reads into our
// buffer and calls back with the byte count; events other than data ('end', 'close', 'error')
// and pause()/resume() work as before. In the bench this took about a sixth off a bare Node
// relay's CPU per message.
//
// The next read goes into the same buffer, so whoever handles a chunk must say when any part
// of it is still referenced after the handler returns (a frame waiting in a lane, a write the
// kernel did not take at once): keep() gives the next read a new buffer and leaves the old one
// to whoever holds it. The buffer follows demand: small at first (an idle connection holds
// 128 bytes: a CONNACK fits), doubled when a read fills it, halved after many reads that used little of it.

import type { Duplex } from 'node:stream'

const MIN_BYTES = 128
const MAX_BYTES = 64 * 1024
/** Reads in a row that each used under an eighth of the buffer before it is halved. */
const SHRINK_AFTER = 64

export type ChunkHandler = (chunk: Buffer) => void

export class ReadBuffer {
  private buffer = Buffer.allocUnsafe(MIN_BYTES)
  private last = 0
  private small = 0
  private kept = false
  private handler: ChunkHandler | null = null
  private early: Buffer[] | null = null

  /** The `onread` option of net.connect (the callback's true: keep reading; pausing is the Valve's). */
  readonly onread = {
    buffer: (): Buffer => this.next(),
    callback: (bytes: number): boolean => {
      this.read(bytes)
      return true
    }
  }

  /** From now on chunks go to `handler`; those read before it, first (copies). */
  take (handler: ChunkHandler): void {
    this.handler = handler
    const early = this.early
    this.early = null
    for (const chunk of early ?? []) handler(chunk)
  }

  /** The chunk being handled is referenced after its handler returns: read the next one elsewhere. */
  keep (): void {
    this.kept = true
  }

  private read (bytes: number): void {
    this.last = bytes
    const chunk = this.buffer.subarray(0, bytes)
    if (this.handler === null) (this.early ??= []).push(Buffer.from(chunk))
    else this.handler(chunk)
  }

  /** The buffer for the next read: asked for when the socket opens and after every read. */
  private next (): Buffer {
    const size = this.buffer.length
    let want = size
    if (this.last === size && size < MAX_BYTES) {
      want = size * 2
    } else if (this.last < size / 8 && size > MIN_BYTES) {
      if (++this.small >= SHRINK_AFTER) want = size / 2
    } else {
      this.small = 0
    }
    if (want !== size || this.kept) {
      this.buffer = Buffer.allocUnsafe(want)
      this.kept = false
      this.small = 0
    }
    return this.buffer
  }
}

// On the socket itself: a WeakMap of every broker socket made garbage collection slower (its
// entries are ephemerons) and cost memory per connection.
const READ_BUFFER = Symbol('mqtt-guard read buffer')

/** The ReadBuffer a socket reads into, if it was opened with one (its 'data' events never fire). */
export function readBufferOf (socket: Duplex): ReadBuffer | undefined {
  return (socket as Duplex & { [READ_BUFFER]?: ReadBuffer })[READ_BUFFER]
}

export function setReadBuffer (socket: Duplex, reads: ReadBuffer): void {
  (socket as Duplex & { [READ_BUFFER]?: ReadBuffer })[READ_BUFFER] = reads
}
