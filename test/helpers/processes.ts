import { spawn } from 'node:child_process'
import { closeSync, openSync, readFileSync, rmSync, statSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import { freePort } from './ports.js'

/**
 * Process plumbing shared by the broker helpers (mosquitto.ts, redis.ts):
 * back-off polling bounded by a deadline, a child process whose output goes
 * straight to a log file, graceful-then-forceful termination by PID, and a
 * registry of everything started so a test can clean up in `t.teardown`.
 */

/**
 * Call `probe` with exponential back-off (5 ms doubling to 200 ms) until it
 * returns something other than `undefined`; throw once `deadlineMs` elapsed.
 * This is how we wait for events we cannot subscribe to (a port opening).
 */
export async function pollUntil<T>(
  what: string,
  deadlineMs: number,
  probe: () => Promise<T | undefined> | T | undefined
): Promise<T> {
  const end = Date.now() + deadlineMs
  let wait = 5
  for (;;) {
    const v = await probe()
    if (v !== undefined) return v
    const left = end - Date.now()
    if (left <= 0) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`)
    await delay(Math.min(wait, left))
    wait = Math.min(wait * 2, 200)
  }
}

/** One TCP connect attempt; true if something accepted the connection. */
export function canConnect(port: number, host = '127.0.0.1', timeoutMs = 1000): Promise<boolean> {
  return new Promise(resolve => {
    const sock = connect({ port, host })
    const done = (ok: boolean): void => {
      sock.destroy()
      resolve(ok)
    }
    sock.setTimeout(timeoutMs, () => done(false))
    sock.once('connect', () => done(true))
    sock.once('error', () => done(false))
  })
}

/** Resolve once `host:port` accepts TCP connections; reject after `deadlineMs`. */
export async function waitForPort(port: number, deadlineMs = 10_000, host = '127.0.0.1'): Promise<void> {
  await pollUntil(`${host}:${port} to accept connections`, deadlineMs, async () =>
    (await canConnect(port, host)) ? true : undefined
  )
}

/** True while a process with this PID exists (EPERM still means it exists). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Read a file as text, '' if it does not exist yet; `from` skips a byte prefix. */
export function readText(file: string, from = 0): string {
  try {
    return readFileSync(file).subarray(from).toString('utf8')
  } catch {
    return ''
  }
}

function fileSize(file: string): number {
  try {
    return statSync(file).size
  } catch {
    return 0
  }
}

export interface ExitInfo {
  code: number | null
  signal: NodeJS.Signals | null
}

// PIDs of children still running: killed with SIGKILL if the test process
// exits without having stopped them, so a failed test does not leak brokers.
const livePids = new Set<number>()
const liveDirs = new Set<string>()
// tap ends a test file that overran its timeout with a signal, which skips 'exit' handlers
// unless the signal itself is turned into an exit: then the children above die too.
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  if (process.listenerCount(signal) === 0) process.once(signal, () => { process.exit(128 + (signal === 'SIGTERM' ? 15 : 2)) })
}
process.on('exit', () => {
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
  for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true })
})

/** A child process whose stdout+stderr are appended to `logFile`. */
export class LoggedChild {
  readonly pid: number
  readonly exited: Promise<ExitInfo>
  /** Byte offset in the log file where this process's output starts. */
  readonly logOffset: number
  #exit: ExitInfo | undefined

  constructor(pid: number, exited: Promise<ExitInfo>, readonly logFile: string, logOffset: number) {
    this.pid = pid
    this.logOffset = logOffset
    this.exited = exited.then(info => {
      this.#exit = info
      livePids.delete(pid)
      return info
    })
    livePids.add(pid)
  }

  get running(): boolean {
    return this.#exit === undefined
  }

  /** What this process has logged so far. */
  log(): string {
    return readText(this.logFile, this.logOffset)
  }

  /** Signal by PID, but only while it is still our child (never a reused PID). */
  signal(sig: NodeJS.Signals = 'SIGTERM'): boolean {
    if (!this.running) return false
    try {
      process.kill(this.pid, sig)
      return true
    } catch {
      return false
    }
  }
}

/**
 * Spawn `command` with stdout/stderr going directly to `logFile` (a file
 * descriptor, not a pipe: a chatty broker can never block on a full pipe,
 * whatever the test process is doing). Rejects if it cannot be started.
 */
export async function spawnLogged(
  command: string,
  args: string[],
  opts: { cwd: string; logFile: string }
): Promise<LoggedChild> {
  const offset = fileSize(opts.logFile)
  const fd = openSync(opts.logFile, 'a')
  try {
    const child = spawn(command, args, { cwd: opts.cwd, stdio: ['ignore', fd, fd] })
    const exited = new Promise<ExitInfo>(resolve => {
      child.once('exit', (code, signal) => resolve({ code, signal }))
    })
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve)
      child.once('error', reject)
    })
    if (child.pid === undefined) throw new Error(`${command}: spawned without a PID`)
    return new LoggedChild(child.pid, exited, opts.logFile, offset)
  } finally {
    // the child holds its own copy of the descriptor
    closeSync(fd)
  }
}

/** SIGTERM, then SIGKILL if still running after `graceMs`; resolves once exited. */
export async function terminate(child: LoggedChild, graceMs = 5000): Promise<ExitInfo> {
  if (!child.running) return child.exited
  child.signal('SIGTERM')
  const ac = new AbortController()
  const grace = delay(graceMs, undefined, { signal: ac.signal }).catch(() => undefined)
  const info = await Promise.race([child.exited, grace])
  ac.abort()
  if (info !== undefined) return info
  child.signal('SIGKILL')
  return child.exited
}

// ---- cleanup registry --------------------------------------------------

const cleanups = new Set<() => Promise<void>>()

/** Register an async cleanup; returns a function that unregisters it. */
export function registerCleanup(fn: () => Promise<void>): () => void {
  cleanups.add(fn)
  return () => cleanups.delete(fn)
}

/** Run (and forget) every registered cleanup; use as `t.teardown(cleanupAll)`. */
export async function cleanupAll(): Promise<void> {
  const fns = [...cleanups]
  cleanups.clear()
  const results = await Promise.allSettled(fns.map(fn => fn()))
  const errors = results.flatMap(r => (r.status === 'rejected' ? [r.reason as unknown] : []))
  if (errors.length > 0) throw new AggregateError(errors, 'cleanupAll: some cleanups failed')
}

// ---- a restartable server on a private port -----------------------------

export interface ServerSpec {
  /** For messages, e.g. 'mosquitto'. */
  name: string
  command: string
  /** Private temp dir; removed by stop(). */
  dir: string
  logFile: string
  startTimeoutMs: number
  /** argv for a start on `port` (may (re)write a config file first). */
  argv(port: number): Promise<string[]> | string[]
  /** One readiness check of the freshly started process; true = serving. */
  probe(port: number, child: LoggedChild): Promise<boolean>
  url(port: number): string
}

const IN_USE = /address already in use/i

/**
 * Start one process on `port` and wait until `probe` says it serves.
 * Returns 'in-use' if it exited because the port was taken (a race with
 * freePort); throws with the log tail on any other failure.
 */
async function startOnPort(spec: ServerSpec, port: number): Promise<LoggedChild | 'in-use'> {
  const child = await spawnLogged(spec.command, await spec.argv(port), { cwd: spec.dir, logFile: spec.logFile })
  try {
    return await pollUntil(`${spec.name} on port ${port}`, spec.startTimeoutMs, async () => {
      if (!child.running) {
        if (IN_USE.test(child.log())) return 'in-use' as const
        const info = await child.exited
        throw new Error(`exited early (code ${info.code}, signal ${info.signal})`)
      }
      return (await spec.probe(port, child)) ? child : undefined
    })
  } catch (err) {
    await terminate(child, 1000)
    const tail = child.log().split('\n').slice(-30).join('\n')
    throw new Error(`${spec.name} failed to start: ${(err as Error).message}\n--- ${spec.logFile} ---\n${tail}`)
  }
}

/** Handle to a server started by startServer(). */
export class ServerHandle {
  #child: LoggedChild
  #stopped = false
  readonly #unregister: () => void

  constructor(readonly spec: ServerSpec, readonly port: number, child: LoggedChild) {
    this.#child = child
    liveDirs.add(spec.dir)
    this.#unregister = registerCleanup(() => this.stop())
  }

  get pid(): number {
    return this.#child.pid
  }

  get url(): string {
    return this.spec.url(this.port)
  }

  get running(): boolean {
    return this.#child.running
  }

  /** Everything the server logged (all starts), for debugging failures. */
  log(): string {
    return readText(this.spec.logFile)
  }

  /** Send a signal to the current process (fault tests: 'SIGKILL', 'SIGSTOP', ...). */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    this.#child.signal(signal)
  }

  /** Resolves when the current process has exited (e.g. after kill()). */
  exited(): Promise<ExitInfo> {
    return this.#child.exited
  }

  /**
   * Stop the current process (if still running) and start a new one on the
   * SAME port, same dir and config. Retries briefly if the port is still held.
   */
  async restart(): Promise<void> {
    if (this.#stopped) throw new Error(`${this.spec.name}: restart() after stop()`)
    // a SIGSTOPped process would ignore SIGTERM until continued
    this.#child.signal('SIGCONT')
    await terminate(this.#child)
    let lastErr: unknown
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const started = await startOnPort(this.spec, this.port)
        if (started !== 'in-use') {
          this.#child = started
          return
        }
        lastErr = new Error(`${this.spec.name}: port ${this.port} still in use`)
      } catch (err) {
        lastErr = err
      }
      await delay(100 * (attempt + 1)) // back-off between bounded retries
    }
    throw lastErr
  }

  /** Terminate (SIGTERM, then SIGKILL), wait for exit, remove the temp dir. Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    this.#unregister()
    this.#child.signal('SIGCONT')
    await terminate(this.#child)
    await rm(this.spec.dir, { recursive: true, force: true })
    liveDirs.delete(this.spec.dir)
  }
}

/**
 * Start `spec` on a free port, retrying with a new port (bounded) when the
 * port was taken between freePort() and the bind. On failure the temp dir
 * is removed. The handle is registered for cleanupAll().
 */
export async function startServer(spec: ServerSpec, attempts = 5): Promise<ServerHandle> {
  try {
    for (let i = 0; i < attempts; i++) {
      const port = await freePort()
      const started = await startOnPort(spec, port)
      if (started !== 'in-use') return new ServerHandle(spec, port, started)
    }
    throw new Error(`${spec.name}: no free port after ${attempts} attempts`)
  } catch (err) {
    await rm(spec.dir, { recursive: true, force: true })
    throw err
  }
}
