// Runs `node bin/mqtt-guard.js ...` (the compiled CLI in dist/) as a child process with piped
// output: stdout is split into JSON log lines that a test can wait for, stderr is kept as text.
// Every started child is killed by its own PID at process exit if a test did not stop it.

import { spawn, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { fileURLToPath } from 'node:url'
import { keepText } from './artifacts.js'

/** Repository root: dist/test/helpers/ is three levels below it. */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const BIN = fileURLToPath(new URL('../../../bin/mqtt-guard.js', import.meta.url))

export type CliLine = Record<string, unknown> & { msg?: string }
export interface CliExit { code: number | null, signal: NodeJS.Signals | null }

const live = new Set<ChildProcess>()
// tap ends a test file that overran its timeout with a signal, which skips 'exit' handlers
// unless the signal itself is turned into an exit: then the children above die too.
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  if (process.listenerCount(signal) === 0) process.once(signal, () => { process.exit(128 + (signal === 'SIGTERM' ? 15 : 2)) })
}
process.on('exit', () => {
  for (const child of live) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
})

export class CliProcess {
  readonly lines: CliLine[] = []
  stdout = ''
  stderr = ''
  readonly exited: Promise<CliExit>
  private readonly events = new EventEmitter()
  private rest = ''
  private exitInfo: CliExit | undefined

  constructor (readonly child: ChildProcess) {
    live.add(child)
    child.stdout?.on('data', (chunk: Buffer) => { this.onStdout(chunk.toString('utf8')) })
    child.stderr?.on('data', (chunk: Buffer) => { this.stderr += chunk.toString('utf8') })
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        live.delete(child)
        keepText('cli', this.stdout + this.stderr)
        this.exitInfo = { code, signal }
        this.events.emit('exit')
        resolve(this.exitInfo)
      })
    })
  }

  get running (): boolean { return this.exitInfo === undefined }

  private onStdout (text: string): void {
    this.stdout += text
    const parts = (this.rest + text).split('\n')
    this.rest = parts.pop() ?? ''
    for (const part of parts) {
      if (!part.startsWith('{')) continue
      let line: CliLine
      try {
        line = JSON.parse(part) as CliLine
      } catch {
        continue // a command's own output (say, `probe --json`, pretty-printed), not a log line
      }
      this.lines.push(line)
      this.events.emit('line', line)
    }
  }

  /** First JSON line (seen or to come) that matches; rejects if the process exits first. */
  async waitFor (predicate: (line: CliLine) => boolean, timeoutMs = 10_000): Promise<CliLine> {
    const seen = this.lines.find(predicate)
    if (seen !== undefined) return seen
    return await new Promise((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer)
        this.events.removeListener('line', onLine)
        this.events.removeListener('exit', onExit)
      }
      const timer = setTimeout(() => { cleanup(); reject(new Error(`no matching line within ${timeoutMs} ms; stderr: ${this.stderr}`)) }, timeoutMs)
      const onLine = (line: CliLine): void => { if (predicate(line)) { cleanup(); resolve(line) } }
      const onExit = (): void => { cleanup(); reject(new Error(`exited (${JSON.stringify(this.exitInfo)}) first; stderr: ${this.stderr}`)) }
      this.events.on('line', onLine)
      this.events.once('exit', onExit)
    })
  }

  /** Waits for `mqtt-guard listening` and returns the first bound port. */
  async listening (timeoutMs = 20_000): Promise<number> {
    const line = await this.waitFor((l) => l.msg === 'mqtt-guard listening', timeoutMs)
    const first = (line.listen as string[] | undefined)?.[0] ?? ''
    return Number(first.slice(first.lastIndexOf(':') + 1))
  }

  /** Waits for `mqtt-guard listening` and returns the admin endpoint's port. */
  async adminPort (timeoutMs = 20_000): Promise<number> {
    const line = await this.waitFor((l) => l.msg === 'mqtt-guard listening', timeoutMs)
    const admin = typeof line.admin === 'string' ? line.admin : ''
    return Number(admin.slice(admin.lastIndexOf(':') + 1))
  }

  signal (sig: NodeJS.Signals = 'SIGTERM'): void {
    if (!this.running || this.child.pid === undefined || this.child.exitCode !== null || this.child.signalCode !== null) return
    try {
      process.kill(this.child.pid, sig)
    } catch (err) {
      // Exited, 'close' not yet emitted: nothing left to signal.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
    }
  }

  /** SIGTERM, SIGKILL after `graceMs`; resolves once exited. For t.teardown. */
  async stop (graceMs = 5000): Promise<CliExit> {
    if (!this.running) return this.exited
    this.signal('SIGTERM')
    const timer = setTimeout(() => { this.signal('SIGKILL') }, graceMs)
    const info = await this.exited
    clearTimeout(timer)
    return info
  }
}

export function runCli (args: string[], options: { env?: Record<string, string>, cwd?: string } = {}): CliProcess {
  // MQTT_GUARD_* from the test runner's own environment must not leak into the child.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MQTT_GUARD_')))
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: options.cwd ?? ROOT,
    // The admin endpoint's default port is fixed; tests that run in parallel each take a free one.
    env: { ...env, MQTT_GUARD_ADMIN: '127.0.0.1:0', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  return new CliProcess(child)
}

/** Runs a command that is expected to exit by itself. */
export async function runToExit (args: string[], options: { env?: Record<string, string>, cwd?: string, timeoutMs?: number } = {}):
Promise<CliExit & { stdout: string, stderr: string }> {
  const proc = runCli(args, options)
  const timer = setTimeout(() => { proc.signal('SIGKILL') }, options.timeoutMs ?? 20_000)
  const info = await proc.exited
  clearTimeout(timer)
  return { ...info, stdout: proc.stdout, stderr: proc.stderr }
}
