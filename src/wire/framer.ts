// Splits a byte stream into whole MQTT control packets using only the fixed header:
// byte 1 (type and flags) and the Remaining Length variable byte integer [MQTT-2.2.3].
// A packet larger than the limit is refused as soon as its length is known, before any of
// its body is buffered. Whole packets inside one chunk are handed on as views (no copy), or
// first offered as a range of the chunk (no view either) to a handler that may take them.

import { GuardError } from '../errors.js'

/** The largest Remaining Length the encoding can express: 4 bytes of 7 bits [MQTT-2.2.3]. */
export const MAX_REMAINING_LENGTH = 268_435_455

export type FrameHandler = (frame: Buffer) => void

/**
 * Offered each whole packet first as `buf[start..end)`, without making a view of it; returns
 * false to have it handed to the FrameHandler as a Buffer of its own (a view or a copy).
 */
export type SpanHandler = (buf: Buffer, start: number, end: number) => boolean

export class Framer {
  // Header bytes of a packet whose header straddles two chunks (at most 5).
  private header: Buffer | null = null
  // Body of a packet that straddles chunks: allocated once at its full size.
  private partial: Buffer | null = null
  private filled = 0
  private failed = false

  constructor (
    private readonly maxPacketSize: number,
    private readonly onFrame: FrameHandler,
    private readonly onSpan: SpanHandler = () => false
  ) {}

  /** True while bytes of an incomplete packet are held. */
  get holding (): boolean {
    return this.header !== null || this.partial !== null
  }

  /**
   * Feeds one chunk. Calls onFrame for each whole packet, in order.
   * Throws GuardError (GUARD_ERR_MALFORMED or GUARD_ERR_PACKET_TOO_LARGE) on bad framing;
   * after that the framer refuses further input.
   */
  push (chunk: Buffer): void {
    if (this.failed) return
    let offset = 0
    if (this.partial !== null) offset = this.fillPartial(chunk, 0)
    else if (this.header !== null) {
      const joined = Buffer.concat([this.header, chunk])
      this.header = null
      this.consume(joined, 0)
      return
    }
    this.consume(chunk, offset)
  }

  private consume (buf: Buffer, start: number): void {
    let offset = start
    while (offset < buf.length) {
      const total = this.frameLength(buf, offset)
      if (total < 0) {
        this.header = Buffer.from(buf.subarray(offset))
        return
      }
      if (offset + total <= buf.length) {
        if (!this.onSpan(buf, offset, offset + total)) this.onFrame(buf.subarray(offset, offset + total))
        offset += total
        continue
      }
      this.partial = Buffer.allocUnsafe(total)
      this.filled = 0
      this.fillPartial(buf, offset)
      return
    }
  }

  private fillPartial (buf: Buffer, offset: number): number {
    const partial = this.partial as Buffer
    const take = Math.min(partial.length - this.filled, buf.length - offset)
    buf.copy(partial, this.filled, offset, offset + take)
    this.filled += take
    if (this.filled === partial.length) {
      this.partial = null
      this.filled = 0
      if (!this.onSpan(partial, 0, partial.length)) this.onFrame(partial)
    }
    return offset + take
  }

  /** The whole packet's length from its fixed header; -1 when the header is not complete yet. */
  private frameLength (buf: Buffer, offset: number): number {
    let remaining = 0
    let multiplier = 1
    for (let i = 1; i <= 4; i++) {
      const at = offset + i
      if (at >= buf.length) return -1
      const byte = buf[at] as number
      remaining += (byte & 0x7f) * multiplier
      if ((byte & 0x80) === 0) {
        const total = i + 1 + remaining
        if (total > this.maxPacketSize) {
          this.failed = true
          throw new GuardError('GUARD_ERR_PACKET_TOO_LARGE', `packet of ${total} bytes exceeds maxPacketSize ${this.maxPacketSize}`)
        }
        return total
      }
      multiplier *= 128
    }
    // A fifth length byte is malformed [MQTT-1.5.5-1].
    this.failed = true
    throw new GuardError('GUARD_ERR_MALFORMED', 'remaining length longer than 4 bytes')
  }
}
