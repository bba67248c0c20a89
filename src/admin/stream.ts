// Server-Sent Events that cannot grow the proxy's memory: each viewer may be behind by at most
// viewerBufferBytes (what node:http holds for it, unsent). Past that its events are dropped and
// counted; once it catches up it gets one `dropped` event naming how many it missed. A viewer
// that stays full for STALL_MS is closed: it holds a connection and a descriptor for nothing.
// Viewers are capped in all and per stream, so a hundred idle tabs cannot pile up.

import type http from 'node:http'
import type { AdminSpec } from '../config/config.js'

/** What the metrics and the refusal log read: by stream kind (`events`, `trace`). */
export interface StreamCounters {
  open: Record<string, number>
  dropped: Record<string, number>
  closed: Record<string, number>
}

export const STREAM_KINDS = ['events', 'trace', 'plugin'] as const
export type StreamKind = typeof STREAM_KINDS[number]

const STALL_MS = 30_000
// A comment line now and then: proxies and browsers keep an idle stream open, and a viewer
// that went away without a FIN is found by the write failing.
const HEARTBEAT_MS = 15_000

/** Starts a Server-Sent Events response; the browser reconnects by itself 1 s after it ends. */
export function openEvents (res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
  res.write('retry: 1000\n\n')
}

export function sseText (event: string, data: string): string {
  return `event: ${event}\ndata: ${data.replace(/\n/g, '\ndata: ')}\n\n`
}

/** One open stream to one viewer. */
export class Viewer {
  private droppedSince = 0
  private fullSince: number | undefined
  private readonly heartbeat: NodeJS.Timeout
  private closed = false

  constructor (
    private readonly res: http.ServerResponse,
    readonly kind: StreamKind,
    private readonly limit: number,
    private readonly counters: StreamCounters,
    onEnd: () => void
  ) {
    openEvents(res)
    this.heartbeat = setInterval(() => { if (this.hasRoom(16)) this.write(': keep-alive\n\n') }, HEARTBEAT_MS)
    this.heartbeat.unref()
    res.on('drain', () => { this.caughtUp() })
    res.once('close', () => {
      this.closed = true
      clearInterval(this.heartbeat)
      onEnd()
    })
  }

  /** Whether it has room for `bytes` more now; a stalled viewer is closed. */
  hasRoom (bytes: number): boolean {
    if (this.closed) return false
    // An event larger than the whole buffer (a page's first hour of points) still goes alone.
    const behind = this.res.writableLength
    if (behind === 0 || behind + bytes <= this.limit) return true
    const now = Date.now()
    this.fullSince ??= now
    if (now - this.fullSince > STALL_MS) {
      this.counters.closed[this.kind] = (this.counters.closed[this.kind] ?? 0) + 1
      this.res.destroy()
    }
    return false
  }

  /** Sends one event, or drops it (counted) when the viewer is too far behind. */
  send (event: string, data: string): boolean {
    // Checked before the text is built: a hundred viewers behind cost a comparison each.
    if (!this.hasRoom(data.length + event.length + 16)) {
      this.dropped(1)
      return false
    }
    this.write(sseText(event, data))
    return true
  }

  /** Counts events the caller did not send because hasRoom said no. */
  private dropped (n: number): void {
    this.droppedSince += n
    this.counters.dropped[this.kind] = (this.counters.dropped[this.kind] ?? 0) + n
  }

  private caughtUp (): void {
    this.fullSince = undefined
    if (this.droppedSince === 0 || this.closed) return
    this.write(sseText('dropped', JSON.stringify({ dropped: this.droppedSince, reason: 'this viewer fell behind' })))
    this.droppedSince = 0
  }

  private write (text: string): void {
    if (!this.closed) this.res.write(text)
  }

  end (): void {
    this.res.end()
  }
}

/** The open viewers of every stream, within admin.maxViewers and admin.maxViewersPerStream. */
export class Viewers {
  readonly counters: StreamCounters = { open: {}, dropped: {}, closed: {} }
  private readonly byStream = new Map<string, Set<Viewer>>()
  private total = 0

  constructor (private readonly spec: Pick<AdminSpec, 'maxViewers' | 'maxViewersPerStream' | 'viewerBufferBytes'>) {
    for (const kind of STREAM_KINDS) {
      this.counters.open[kind] = 0
      this.counters.dropped[kind] = 0
      this.counters.closed[kind] = 0
    }
  }

  /** Why `stream` cannot take another viewer now, or undefined when it can. */
  full (stream: string): string | undefined {
    if (this.total >= this.spec.maxViewers) return `${this.total} live streams open (admin.maxViewers)`
    const n = this.byStream.get(stream)?.size ?? 0
    if (n >= this.spec.maxViewersPerStream) return `${n} viewers of ${stream} (admin.maxViewersPerStream)`
    return undefined
  }

  /** A viewer of `stream` (e.g. `events`, `trace:ab12`); the caller checked full() first. */
  open (stream: string, kind: StreamKind, res: http.ServerResponse): Viewer {
    let set = this.byStream.get(stream)
    if (set === undefined) this.byStream.set(stream, set = new Set())
    const viewers = set
    const viewer = new Viewer(res, kind, this.spec.viewerBufferBytes, this.counters, () => {
      viewers.delete(viewer)
      if (viewers.size === 0) this.byStream.delete(stream)
      this.total--
      this.counters.open[kind] = (this.counters.open[kind] ?? 1) - 1
    })
    set.add(viewer)
    this.total++
    this.counters.open[kind] = (this.counters.open[kind] ?? 0) + 1
    return viewer
  }

  close (): void {
    for (const set of this.byStream.values()) for (const v of set) v.end()
  }
}
