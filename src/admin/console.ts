// The web console's server side, on the admin port: its static files (no build step for the
// user: HTML and CSS ship in console/, the script is compiled by `npm ci`, the chart library is
// the uplot package's own build), a login that turns the admin token into an HttpOnly cookie (a
// browser cannot send a bearer header when it navigates or opens an EventSource), and the live
// feed: an overview snapshot every second over Server-Sent Events, on each page's own schedule,
// with the whole time-series window only in a page's first event.

import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import type http from 'node:http'
import type { Overview } from '../views.js'
import { seriesAfter } from '../observe/series.js'
import { decodePart } from './requests.js'
import type { Viewer, Viewers } from './stream.js'

const ROOT = new URL('../../../', import.meta.url)
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
    if (name === TOKEN_COOKIE) return decodePart(value.join('='), `cookie ${TOKEN_COOKIE}`)
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

/**
 * The SSE feed: one snapshot a second per page, on each page's own timer, so a page gets one a
 * second however many others open or close. Pages that ask within the same half second share
 * one snapshot. A page gets the whole time-series window in its first event and then only the
 * points it does not have, so a second costs a few hundred bytes per page, not the hour; a page
 * too far behind skips a second and gets the points it missed in the next event.
 */
export class Feed {
  /** Each open page, with the time of the newest point it was sent (null: none yet). */
  private readonly pages = new Map<Viewer, { has: number | null, timer: NodeJS.Timeout }>()
  private latest: { at: number, overview: Promise<Overview> } | undefined

  constructor (private readonly snapshot: () => Promise<Overview>, private readonly viewers: Viewers, private readonly everyMs = 1000) {}

  /** A new page; the caller checked that the viewers have room. */
  open (res: http.ServerResponse): void {
    const viewer = this.viewers.open('events', 'events', res)
    const timer = setInterval(() => { void this.send(viewer) }, this.everyMs)
    this.pages.set(viewer, { has: null, timer })
    res.once('close', () => {
      clearInterval(timer)
      this.pages.delete(viewer)
    })
    void this.send(viewer)
  }

  private async overview (): Promise<Overview> {
    const now = Date.now()
    if (this.latest === undefined || now - this.latest.at >= this.everyMs / 2) this.latest = { at: now, overview: this.snapshot() }
    return await this.latest.overview
  }

  private async send (viewer: Viewer): Promise<void> {
    const overview = await this.overview()
    const page = this.pages.get(viewer)
    if (page === undefined) return
    const newest = overview.series.t.at(-1) ?? null
    const series = page.has === null ? overview.series : seriesAfter(overview.series, page.has)
    if (!viewer.send('overview', JSON.stringify({ ...overview, series }))) return
    if (newest !== null && (page.has === null || newest > page.has)) page.has = newest
  }

  close (): void {
    for (const [viewer, page] of this.pages) {
      clearInterval(page.timer)
      viewer.end()
    }
    this.pages.clear()
  }
}
