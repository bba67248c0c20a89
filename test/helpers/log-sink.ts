// An in-memory pino destination: tests assert on parsed log lines and wait for the line they
// expect (an event, not a sleep).

import { Writable } from 'node:stream'
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import { createLogger } from '../../src/log/log.js'
import { keepText } from './artifacts.js'

export type LogLine = Record<string, unknown> & { msg?: string, level: number }

// Every sink's lines are kept as an artifact when the test process ends (see artifacts.ts).
const sinks = new Set<LogSink>()
process.on('exit', () => {
  for (const sink of sinks) keepText('log', sink.lines.map((l) => JSON.stringify(l)).join('\n') + '\n')
})

export class LogSink extends Writable {
  readonly lines: LogLine[] = []
  private readonly events = new EventEmitter()
  private rest = ''

  constructor () {
    super()
    sinks.add(this)
  }

  override _write (chunk: Buffer, _enc: BufferEncoding, callback: () => void): void {
    const text = this.rest + chunk.toString('utf8')
    const parts = text.split('\n')
    this.rest = parts.pop() ?? ''
    for (const part of parts) {
      if (part === '') continue
      const line = JSON.parse(part) as LogLine
      this.lines.push(line)
      this.events.emit('line', line)
    }
    callback()
  }

  find (predicate: (line: LogLine) => boolean): LogLine | undefined {
    return this.lines.find(predicate)
  }

  /** Resolves with the first line (already seen or to come) that matches. */
  async waitFor (predicate: (line: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
    const seen = this.find(predicate)
    if (seen !== undefined) return seen
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.events.removeListener('line', onLine)
        reject(new Error(`no matching log line within ${timeoutMs} ms`))
      }, timeoutMs)
      const onLine = (line: LogLine): void => {
        if (!predicate(line)) return
        clearTimeout(timer)
        this.events.removeListener('line', onLine)
        resolve(line)
      }
      this.events.on('line', onLine)
    })
  }

  logger (level = 'debug'): Logger {
    return createLogger(level, this)
  }
}
