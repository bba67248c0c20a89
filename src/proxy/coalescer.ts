// Forwarding without a write per packet: while one input chunk is being framed, packets that
// are forwarded unchanged are views into that chunk, usually back to back. The Coalescer
// extends one pending byte range over them and writes it once, at the end of the chunk or
// before anything else is written to the same destination, so order is always kept.

export class Coalescer {
  private chunk: Buffer | null = null
  private start = 0
  private end = 0

  constructor (private readonly write: (bytes: Buffer) => void) {}

  /** A chunk is being framed: views into it may be collected until finish(). */
  begin (chunk: Buffer): void {
    this.chunk = chunk
    this.start = 0
    this.end = 0
  }

  /** Queues bytes for the destination; anything not a view of the chunk is written now. */
  add (bytes: Buffer): void {
    const chunk = this.chunk
    if (chunk !== null && bytes.buffer === chunk.buffer) {
      const offset = bytes.byteOffset - chunk.byteOffset
      if (offset >= 0 && offset + bytes.length <= chunk.length) {
        if (offset !== this.end) {
          this.flush()
          this.start = offset
        }
        this.end = offset + bytes.length
        return
      }
    }
    this.flush()
    this.write(bytes)
  }

  /** Queues `buf[start..end)`: like add(), for a packet of which no view was made. */
  addSpan (buf: Buffer, start: number, end: number): void {
    if (buf === this.chunk) {
      if (start !== this.end) {
        this.flush()
        this.start = start
      }
      this.end = end
      return
    }
    this.flush()
    this.write(start === 0 && end === buf.length ? buf : buf.subarray(start, end))
  }

  flush (): void {
    const chunk = this.chunk
    if (chunk === null || this.end === this.start) return
    const range = this.start === 0 && this.end === chunk.length ? chunk : chunk.subarray(this.start, this.end)
    this.start = this.end
    this.write(range)
  }

  /** Forgets what is pending, unwritten (its destination is gone). */
  drop (): void {
    this.start = this.end
  }

  /** The chunk is done: write what is pending and collect no more from it. */
  finish (): void {
    this.flush()
    this.chunk = null
  }
}
