// The web console's server side, on the admin port: its static files (no build step for the
// user: HTML and CSS ship in console/, the script is compiled by `npm ci`, the chart library is
// the uplot package's own build), a login that turns the admin token into an HttpOnly cookie (a
// browser cannot send a bearer header when it navigates or opens an EventSource), and the live
// feed: an overview snapshot every second over Server-Sent Events, computed once per tick for
// every open page, with the whole time-series window only in a page's first event.

import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import type http from 'node:http'
import type { Overview } from './admin-api.js'
import { seriesAfter } from './series.js'

const ROOT = new URL('../../', import.meta.url)
// Resolved like an import (a dependency, so `npm ci --omit=dev` installs it too).
const uplot = (file: string): URL => pathToFileURL(createRequire(import.meta.url).resolve(`uplot/dist/${file}`))
const JS = 'text/javascript; charset=utf-8'
const FILES: Record<string, { url: URL, type: string }> = {
  '/': { url: new URL('console/index.html', ROOT), type: 'text/html; charset=utf-8' },
  '/console/style.css': { url: new URL('console/style.css', ROOT), type: 'text/css; charset=utf-8' },
  '/console/app.js': { url: new URL('dist/console-build/console/app.js', ROOT), type: JS },
  '/console/charts.js': { url: new URL('dist/console-build/console/charts.js', ROOT), type: JS },
  '/console/uPlot.iife.min.js': { url: uplot('uPlot.iife.min.js'), type: JS },
  '/console/uPlot.min.css': { url: uplot('uPlot.min.css'), type: 'text/css; charset=utf-8' }
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

/**
 * The SSE feed: one snapshot a second while at least one page listens. A page gets the whole
 * time-series window in its first event and then only the points it does not have, so a
 * second costs a few hundred bytes per page, not the hour.
 */
export class Feed {
  /** Each open page, with the time of the newest point it was sent (null: none yet). */
  private readonly listeners = new Map<http.ServerResponse, number | null>()
  private timer: NodeJS.Timeout | null = null

  constructor (private readonly snapshot: () => Promise<Overview>, private readonly everyMs = 1000) {}

  open (req: http.IncomingMessage, res: http.ServerResponse): void {
    openEvents(res)
    this.listeners.set(res, null)
    req.on('close', () => {
      this.listeners.delete(res)
      if (this.listeners.size === 0 && this.timer !== null) {
        clearInterval(this.timer)
        this.timer = null
      }
    })
    void this.send([res])
    this.timer ??= setInterval(() => { void this.send([...this.listeners.keys()]) }, this.everyMs)
  }

  private async send (pages: http.ServerResponse[]): Promise<void> {
    if (pages.length === 0) return
    const overview = await this.snapshot()
    const newest = overview.series.t.at(-1) ?? null
    // Pages that have the same points get the same text.
    const texts = new Map<number | null, string>()
    for (const res of pages) {
      if (!this.listeners.has(res)) continue
      const has = this.listeners.get(res) ?? null
      let text = texts.get(has)
      if (text === undefined) {
        const series = has === null ? overview.series : seriesAfter(overview.series, has)
        texts.set(has, text = `event: overview\ndata: ${JSON.stringify({ ...overview, series })}\n\n`)
      }
      res.write(text)
      if (newest !== null && (has === null || newest > has)) this.listeners.set(res, newest)
    }
  }

  close (): void {
    if (this.timer !== null) clearInterval(this.timer)
    for (const res of this.listeners.keys()) res.end()
    this.listeners.clear()
  }
}
