// Two Duplex streams wired to each other in memory: what one writes, the other reads.
// Used to hand the embedded aedes broker a "socket" without a TCP round trip. A write completes
// only when the other side has room (push() returned true or it asked for more), so a slow
// reader holds back the writer exactly like a socket would.

import { Duplex } from 'node:stream'

class Side extends Duplex {
  peer!: Side
  private pendingCallback: (() => void) | null = null

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.peer.push(chunk)) callback()
    else this.peer.pendingCallback = callback
  }

  override _read (): void {
    const callback = this.pendingCallback
    this.pendingCallback = null
    if (callback !== null) callback()
  }

  override _final (callback: (error?: Error | null) => void): void {
    this.peer.push(null)
    callback()
  }

  override _destroy (error: Error | null, callback: (error?: Error | null) => void): void {
    const callback2 = this.pendingCallback
    this.pendingCallback = null
    if (callback2 !== null) callback2()
    if (!this.peer.destroyed) this.peer.destroy()
    callback(error)
  }
}

export function duplexPair (): [Duplex, Duplex] {
  const a = new Side()
  const b = new Side()
  a.peer = b
  b.peer = a
  return [a, b]
}
