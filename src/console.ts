// The web console's server side, on the admin port: its static files (no build step for the
// user: HTML and CSS ship in console/, the script is compiled by `npm ci`), a login that turns
// the admin token into an HttpOnly cookie (a browser cannot send a bearer header when it
// navigates or opens an EventSource), and the live feed: an overview snapshot every second
// over Server-Sent Events, computed once per tick for every open page.

import { readFile } from 'node:fs/promises'
import type http from 'node:http'
import type { Overview } from './admin-api.js'


const ROOT = new URL('../../', import.meta.url)
const FILES: Record<string, { url: URL, type: string }> = {
  '/': { url: new URL('console/index.html', ROOT), type: 'text/html; charset=utf-8' },
  '/console/style.css': { url: new URL('console/style.css', ROOT), type: 'text/css; charset=utf-8' },
  '/console/app.js': { url: new URL('dist/console-build/console/app.js', ROOT), type: 'text/javascript; charset=utf-8' }
}

export const TOKEN_COOKIE = 'mqtt_guard_token'

/** The token from the console's cookie, if the request carries one. */
export function cookieToken (req: http.IncomingMessage): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [name, ...value] = part.trim().split('=')
    if (name === TOKEN_COOKIE) return decodeURIComponent(value.join('='))
  }
  return undefined
}

/** Serves a console file; false when `path` is not one. */
export async function serveStatic (path: string, res: http.ServerResponse): Promise<boolean> {
  const file = FILES[path]
  if (file === undefined) return false
  try {
    const body = await readFile(file.url)
    res.writeHead(200, {
      'content-type': file.type,
      'cache-control': 'no-cache',
      // The page runs only its own script and talks only to this server.
      'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
      'x-content-type-options': 'nosniff'
    })
    res.end(body)
  } catch {
    res.writeHead(500, { 'content-type': 'text/plain' })
    res.end(`console file missing: ${file.url.pathname} (run npm ci, which builds it)\n`)
  }
  return true
}

/** Starts a Server-Sent Events response; the browser reconnects by itself 1 s after it ends. */
export function openEvents (res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
  res.write('retry: 1000\n\n')
}

/** Connection counts per minute for the last hour, recorded whether or not a page is open. */
export class History {
  private readonly samples: Array<{ at: string, connections: number }> = []
  private readonly timer: NodeJS.Timeout

  constructor (private readonly count: () => number, everyMs = 60_000) {
    this.record()
    this.timer = setInterval(() => { this.record() }, everyMs)
    this.timer.unref()
  }

  private record (): void {
    this.samples.push({ at: new Date().toISOString(), connections: this.count() })
    if (this.samples.length > 60) this.samples.shift()
  }

  get values (): Array<{ at: string, connections: number }> {
    return [...this.samples]
  }

  close (): void {
    clearInterval(this.timer)
  }
}

/** The SSE feed: one snapshot a second while at least one page listens, sent to all of them. */
export class Feed {
  private readonly listeners = new Set<http.ServerResponse>()
  private timer: NodeJS.Timeout | null = null

  constructor (private readonly snapshot: () => Promise<Overview>, private readonly everyMs = 1000) {}

  open (req: http.IncomingMessage, res: http.ServerResponse): void {
    openEvents(res)
    this.listeners.add(res)
    req.on('close', () => {
      this.listeners.delete(res)
      if (this.listeners.size === 0 && this.timer !== null) {
        clearInterval(this.timer)
        this.timer = null
      }
    })
    void this.tick()
    this.timer ??= setInterval(() => { void this.tick() }, this.everyMs)
  }

  private async tick (): Promise<void> {
    if (this.listeners.size === 0) return
    const data = `event: overview\ndata: ${JSON.stringify(await this.snapshot())}\n\n`
    for (const res of this.listeners) res.write(data)
  }

  close (): void {
    if (this.timer !== null) clearInterval(this.timer)
    for (const res of this.listeners) res.end()
    this.listeners.clear()
  }
}
