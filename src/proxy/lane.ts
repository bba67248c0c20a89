// Per-direction ordering and flow control. A Lane runs one frame at a time through a processor
// that may return a promise (a hook awaiting Redis); frames that arrive meanwhile wait in order.
// A Valve pauses a socket while any reason to hold it (destination full, lane queue full) holds.

import type { Duplex } from 'node:stream'

export const HOLD = {
  destinationFull: 1,
  laneQueueFull: 2
} as const

export class Valve {
  private reasons = 0
  /** Times a full lane queue held this side (plugins slower than the traffic). */
  queueFullHolds = 0

  constructor (private readonly stream: Duplex) {}

  hold (reason: number): void {
    if (this.reasons === 0) this.stream.pause()
    if (reason === HOLD.laneQueueFull && (this.reasons & reason) === 0) this.queueFullHolds++
    this.reasons |= reason
  }

  release (reason: number): void {
    if ((this.reasons & reason) === 0) return
    this.reasons &= ~reason
    if (this.reasons === 0 && !this.stream.destroyed) this.stream.resume()
  }

  get held (): boolean {
    return this.reasons !== 0
  }
}

export type FrameProcessor = (frame: Buffer) => void | Promise<void>

export class Lane {
  private readonly queue: Buffer[] = []
  private head = 0
  private waiting = false
  private onIdle: (() => void) | null = null

  constructor (
    private readonly process: FrameProcessor,
    private readonly fail: (err: unknown) => void,
    private readonly valve: Valve,
    private readonly highWater: number
  ) {}

  get idle (): boolean {
    return !this.waiting && this.head === this.queue.length
  }

  /** Calls `callback` once every frame pushed so far has been processed (now, if it has). */
  whenIdle (callback: () => void): void {
    if (this.idle) callback()
    else this.onIdle = callback
  }

  push (frame: Buffer): void {
    if (this.waiting) {
      this.queue.push(frame)
      if (this.queue.length - this.head >= this.highWater) this.valve.hold(HOLD.laneQueueFull)
      return
    }
    this.run(frame)
  }

  private run (frame: Buffer): void {
    let result: void | Promise<void>
    try {
      result = this.process(frame)
    } catch (err) {
      this.fail(err)
      return
    }
    if (result !== undefined) {
      this.waiting = true
      result.then(() => { this.next() }, (err: unknown) => { this.waiting = false; this.fail(err) })
    }
  }

  private next (): void {
    this.waiting = false
    while (!this.waiting && this.head < this.queue.length) {
      const frame = this.queue[this.head] as Buffer
      this.queue[this.head++] = EMPTY
      this.run(frame)
    }
    if (this.head === this.queue.length) {
      this.queue.length = 0
      this.head = 0
      this.valve.release(HOLD.laneQueueFull)
    }
    if (this.idle && this.onIdle !== null) {
      const callback = this.onIdle
      this.onIdle = null
      callback()
    }
  }
}

const EMPTY = Buffer.alloc(0)
