// Where trace lines go: stdout, or a file rotated by size (file → file.1 → … → file.N).
// Lines are written as JSON through pino's own destination (sonic-boom), so a trace file is
// what a pino log would be: one object per line with level, time and msg.

import { existsSync, renameSync, statSync, unlinkSync } from 'node:fs'
import pino from 'pino'

export class TraceSink {
  private readonly out: ReturnType<typeof pino.destination>
  private bytes = 0

  constructor (readonly destination: string, private readonly rotateBytes: number, private readonly keepFiles: number) {
    if (destination === 'stdout') {
      this.out = pino.destination({ dest: 1, sync: false })
    } else {
      this.out = pino.destination({ dest: destination, sync: false, mkdir: true })
      this.bytes = existsSync(destination) ? statSync(destination).size : 0
    }
  }

  write (line: object): void {
    const text = JSON.stringify(line) + '\n'
    this.out.write(text)
    if (this.destination === 'stdout' || this.rotateBytes === 0) return
    this.bytes += Buffer.byteLength(text)
    if (this.bytes >= this.rotateBytes) this.rotate()
  }

  private rotate (): void {
    this.out.flushSync()
    const file = this.destination
    if (existsSync(`${file}.${this.keepFiles}`)) unlinkSync(`${file}.${this.keepFiles}`)
    for (let i = this.keepFiles - 1; i >= 1; i--) {
      if (existsSync(`${file}.${i}`)) renameSync(`${file}.${i}`, `${file}.${i + 1}`)
    }
    renameSync(file, `${file}.1`)
    this.out.reopen()
    this.bytes = 0
  }

  async close (): Promise<void> {
    if (this.destination === 'stdout') {
      this.out.flushSync()
      return
    }
    await new Promise<void>((resolve) => {
      this.out.once('close', () => { resolve() })
      this.out.end()
    })
  }
}
