// Two Duplex streams wired to each other in memory: what one writes, the other reads.
// Used to hand the embedded aedes broker a "socket" without a TCP round trip. A write completes
// only when the other side has room (push() returned true or it asked for more), so a slow
// reader holds back the writer exactly like a socket would. When one side is destroyed, the
// other still reads what was already sent and then ends, as after a TCP FIN: a refusing
// CONNACK followed by a close must reach the client.

import { Duplex } from 'node:stream'

class Side extends Duplex {
  peer!: Side
  private pendingCallback: (() => void) | null = null
  private eof = false
  private peerGone = false

  constructor () {
    // Like a socket without half-open support: once the other side is gone and everything it
    // sent has been read, this side ends and closes too, so aedes always sees a close.
    super({ allowHalfOpen: false })
  }

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    // Like writing to a socket the other end has closed: the bytes go nowhere.
    if (this.peerGone) return callback()
    if (this.peer.push(chunk)) callback()
    else this.peer.pendingCallback = callback
  }

  override _read (): void {
    const callback = this.pendingCallback
    this.pendingCallback = null
    if (callback !== null) callback()
  }

  override _final (callback: (error?: Error | null) => void): void {
    this.peer.pushEof()
    callback()
  }

  override _destroy (error: Error | null, callback: (error?: Error | null) => void): void {
    const pending = this.pendingCallback
    this.pendingCallback = null
    if (pending !== null) pending()
    if (!this.peer.destroyed) {
      this.peer.peerGone = true
      this.peer.pushEof()
    }
    callback(error)
  }

  private pushEof (): void {
    if (this.eof) return
    this.eof = true
    this.push(null)
  }
}

export function duplexPair (): [Duplex, Duplex] {
  const a = new Side()
  const b = new Side()
  a.peer = b
  b.peer = a
  return [a, b]
}
