// Calls and events between the primary and a worker over the cluster's IPC channel, batched:
// everything asked or told within one turn of the event loop goes as one message (one
// serialisation, one syscall), and so do the replies. A call that gets no reply within its
// timeout, or whose peer goes away, is rejected; a handler's error comes back as the rejection.

/** Either end of the channel: `process` in a worker, a cluster Worker in the primary. */
export interface Port {
  send: (message: unknown, handle: undefined, options: object, callback: (err: Error | null) => void) => unknown
  on: (event: 'message', listener: (message: unknown) => void) => unknown
  removeListener: (event: 'message', listener: (message: unknown) => void) => unknown
}

interface Call { id: number, method: string, args: unknown[] }
interface Reply { id: number, value?: unknown, error?: string }
interface Told { name: string, data: unknown }
/** `mg` tells our messages from anyone else's on the same channel (prom-client's, say). */
interface Batch { mg: 1, calls?: Call[], replies?: Reply[], told?: Told[] }

/** Typed by its author; the arguments arrive as JSON the other end sent. */
type Handler = (...args: never[]) => unknown
type Listener = (data: never) => void

const DEFAULT_TIMEOUT_MS = 10_000

export class Peer {
  private next = 1
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void, reject: (e: Error) => void, timer: NodeJS.Timeout }>()
  private readonly handlers = new Map<string, Handler>()
  private readonly listeners = new Map<string, Set<Listener>>()
  private out: Batch | undefined
  private closed = false
  private readonly onMessage = (message: unknown): void => { this.receive(message) }

  constructor (private readonly port: Port, readonly name: string, private readonly timeoutMs = DEFAULT_TIMEOUT_MS) {
    port.on('message', this.onMessage)
  }

  /** Asks the other end to run `method`; its return value (JSON-serialisable), or its error. */
  async call<T = unknown> (method: string, ...args: unknown[]): Promise<T> {
    if (this.closed) throw new Error(`${this.name}: channel closed`)
    const id = this.next++
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id)
        reject(new Error(`${this.name}: no answer to ${method} within ${this.timeoutMs} ms`))
      }, this.timeoutMs)
      timer.unref()
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, timer })
      ;(this.batch().calls ??= []).push({ id, method, args })
    })
  }

  /** Answers the other end's calls of `method`. */
  handle (method: string, handler: Handler): this {
    this.handlers.set(method, handler)
    return this
  }

  /** Tells the other end something that needs no answer. */
  tell (name: string, data?: unknown): void {
    if (this.closed) return
    const b = this.batch()
    ;(b.told ??= []).push({ name, data })
  }

  /** Listens to what the other end tells under `name`. */
  on (name: string, listener: Listener): () => void {
    let set = this.listeners.get(name)
    if (set === undefined) this.listeners.set(name, set = new Set())
    set.add(listener)
    return () => { set.delete(listener) }
  }

  /** The other end is gone: every waiting call fails, nothing more is sent. */
  close (why = 'the other end went away'): void {
    if (this.closed) return
    this.closed = true
    this.port.removeListener('message', this.onMessage)
    for (const [id, w] of this.waiting) {
      clearTimeout(w.timer)
      w.reject(new Error(`${this.name}: ${why}`))
      this.waiting.delete(id)
    }
  }

  private batch (): Batch {
    if (this.out === undefined) {
      this.out = { mg: 1 }
      setImmediate(() => { this.flush() })
    }
    return this.out
  }

  private flush (): void {
    const out = this.out
    this.out = undefined
    if (out === undefined || this.closed) return
    // With a callback a closed channel (the other end exited) is an error given to it, not an
    // 'error' event nobody listens to: the waiting calls fail now, not at their timeout.
    const failed = (err: Error | null): void => { if (err !== null) this.close(err.message) }
    try {
      this.port.send(out, undefined, {}, failed)
    } catch (err) {
      failed(err as Error)
    }
  }

  private receive (message: unknown): void {
    const m = message as Partial<Batch> | null
    if (m === null || typeof m !== 'object' || m.mg !== 1) return
    for (const r of m.replies ?? []) {
      const w = this.waiting.get(r.id)
      if (w === undefined) continue
      this.waiting.delete(r.id)
      clearTimeout(w.timer)
      if (r.error !== undefined) w.reject(new Error(r.error))
      else w.resolve(r.value)
    }
    for (const t of m.told ?? []) {
      for (const listener of this.listeners.get(t.name) ?? []) {
        try {
          ;(listener as (data: unknown) => void)(t.data)
        } catch {
          // A listener's bug must not stop the others, nor the replies below.
        }
      }
    }
    for (const c of m.calls ?? []) void this.answer(c)
  }

  private async answer (c: Call): Promise<void> {
    const handler = this.handlers.get(c.method)
    let reply: Reply
    try {
      if (handler === undefined) throw new Error(`no handler for ${c.method}`)
      reply = { id: c.id, value: await (handler as (...args: unknown[]) => unknown)(...c.args) }
    } catch (err) {
      reply = { id: c.id, error: (err as Error).message ?? String(err) }
    }
    if (this.closed) return
    ;(this.batch().replies ??= []).push(reply)
  }
}
