// Where trace lines go: stdout, or a file rotated by size (file → file.1 → … → file.N).
// Each line is a JSON object like a pino log line (level, time, msg). Lines are joined into
// one write of up to BATCH_BYTES (a system call for hundreds of lines), at most FLUSH_MS late,
// one write in flight at a time; if the disk cannot keep up, lines beyond MAX_PENDING are
// dropped and counted, so a trace never grows the proxy's memory without bound. A missing
// folder is not created: the options' check refuses it, naming the key, before the sink opens.

import { closeSync, existsSync, openSync, renameSync, statSync, unlinkSync, write } from 'node:fs'

const BATCH_BYTES = 256 * 1024
const FLUSH_MS = 200
const MAX_PENDING = 32 * 1024 * 1024

export class TraceSink {
  private fd: number
  // The batch being filled: lines are encoded straight into it, once.
  private batch = Buffer.allocUnsafe(BATCH_BYTES)
  private pendingBytes = 0
  private full: Buffer[] = []
  private writing = false
  private bytes = 0
  private closed = false
  private readonly timer: NodeJS.Timeout
  /** Lines dropped because the destination fell behind. */
  dropped = 0

  constructor (readonly destination: string, private readonly rotateBytes: number, private readonly keepFiles: number) {
    if (destination === 'stdout') {
      this.fd = 1
    } else {
      this.fd = openSync(destination, 'a')
      this.bytes = existsSync(destination) ? statSync(destination).size : 0
    }
    this.timer = setInterval(() => { this.flush() }, FLUSH_MS)
    this.timer.unref()
  }

  /** One serialised line, newline included. */
  writeText (text: string): void {
    if (this.closed) return
    if (this.queuedBytes() > MAX_PENDING) {
      this.dropped++
      return
    }
    // A UTF-8 character takes at most 3 bytes per UTF-16 unit.
    if (this.pendingBytes + text.length * 3 > this.batch.length) this.seal(text.length * 3)
    this.pendingBytes += this.batch.write(text, this.pendingBytes)
    if (this.pendingBytes >= BATCH_BYTES / 2) this.flush()
  }

  private queuedBytes (): number {
    return this.pendingBytes + this.full.length * BATCH_BYTES
  }

  /** Closes the batch being filled (queues it) and starts one with room for `need` bytes. */
  private seal (need: number): void {
    if (this.pendingBytes > 0) this.full.push(this.batch.subarray(0, this.pendingBytes))
    this.batch = Buffer.allocUnsafe(Math.max(BATCH_BYTES, need))
    this.pendingBytes = 0
  }

  /** Writes what is gathered; one write at a time, in order. */
  private flush (done?: () => void): void {
    if (this.writing || (this.pendingBytes === 0 && this.full.length === 0)) {
      done?.()
      return
    }
    this.seal(0)
    const chunk = this.full.length === 1 ? this.full[0] as Buffer : Buffer.concat(this.full)
    this.full = []
    this.writing = true
    write(this.fd, chunk, 0, chunk.length, null, () => {
      this.writing = false
      if (this.destination !== 'stdout' && this.rotateBytes > 0) {
        this.bytes += chunk.length
        if (this.bytes >= this.rotateBytes) this.rotate()
      }
      if (this.pendingBytes >= BATCH_BYTES / 2 || this.full.length > 0 || (done !== undefined && this.pendingBytes > 0)) this.flush(done)
      else done?.()
    })
  }

  private rotate (): void {
    const file = this.destination
    closeSync(this.fd)
    if (existsSync(`${file}.${this.keepFiles}`)) unlinkSync(`${file}.${this.keepFiles}`)
    for (let i = this.keepFiles - 1; i >= 1; i--) {
      if (existsSync(`${file}.${i}`)) renameSync(`${file}.${i}`, `${file}.${i + 1}`)
    }
    renameSync(file, `${file}.1`)
    this.fd = openSync(file, 'a')
    this.bytes = 0
  }

  async close (): Promise<void> {
    clearInterval(this.timer)
    await new Promise<void>((resolve) => {
      const finish = (): void => {
        if (this.writing) { setTimeout(finish, 5); return }
        this.flush(() => {
          this.closed = true
          if (this.fd !== 1) closeSync(this.fd)
          resolve()
        })
      }
      finish()
    })
  }
}
