// What the console test reads in the browser: a probe run before the page's scripts (CSP
// violations, text drawn on canvases, the uPlot instances the page makes), the charts as data,
// and an overview with an hour of made-up points to feed a page the range switch is tried on.

import type { Overview, Series } from '../../src/views.js'

/**
 * Runs in the page before its scripts: records CSP violations and the text drawn on canvases
 * (uPlot draws its axes there), and keeps each uPlot instance the page makes, by wrapping the
 * global the library's script defines (`var uPlot = …` assigns through this setter).
 */
export const PROBE = `(() => {
  const w = window
  w.__csp = []
  document.addEventListener('securitypolicyviolation', (e) => { w.__csp.push(e.violatedDirective + ' ' + e.blockedURI) })
  w.__drawn = new Set()
  const fillText = CanvasRenderingContext2D.prototype.fillText
  CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) { w.__drawn.add(String(text)); return fillText.call(this, text, ...rest) }
  w.__charts = []
  Object.defineProperty(w, 'uPlot', { configurable: true, set (U) {
    const made = new Proxy(U, { construct (target, args) { const u = Reflect.construct(target, args); w.__charts.push(u); return u } })
    Object.defineProperty(w, 'uPlot', { value: made, writable: true, configurable: true })
  } })
})()`

/** What one chart on the page holds and shows. */
export interface Chart { title: string, labels: string[], data: Array<Array<number | null>>, x: [number, number], legend: string[], width: number }
export const CHARTS = `window.__charts.filter((u) => u.root.isConnected).map((u) => ({
  title: u.root.querySelector('.u-title')?.textContent ?? '',
  labels: u.series.map((s) => String(s.label)),
  data: u.data.map((c) => Array.from(c)),
  x: [u.scales.x.min, u.scales.x.max],
  width: u.width,
  legend: [...u.root.querySelectorAll('.u-legend .u-value')].map((v) => v.textContent)
}))`
export const total = (column: Array<number | null> | undefined): number => (column ?? []).reduce<number>((a, b) => a + (b ?? 0), 0)

/** An overview as the feed sends it first, with an hour of made-up points ending at `newest`. */
export function hourOfPoints (newest: number): Overview {
  const n = 3600
  const column = <T>(f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i))
  const last = (i: number): boolean => i === n - 1
  const series: Series = {
    whole: true,
    t: column((i) => newest - n + 1 + i),
    connections: column((i) => 20 + (i % 30)),
    connects: column((i) => i % 5),
    refusals: column((i) => last(i) ? 3 : 0),
    refusalsByCode: { GUARD_ERR_BAD_CREDENTIALS: column((i) => last(i) ? 1 : 0), GUARD_ERR_NOT_AUTHORIZED: column((i) => last(i) ? 2 : 0) },
    publishIn: column((i) => i % 40),
    publishOut: column((i) => i % 20),
    rttClient: column((i) => i % 2 === 0 ? null : 1.5),
    rttBroker: column(() => 0.7)
  }
  return {
    at: new Date(newest * 1000).toISOString(), instance: 'fixture', connections: 49, series, connects: 7200, refusals: [],
    rates: { in: 39, out: 19 }, verdicts: [], duplicatesRemoved: { in: 0, out: 0 }, roundTrips: { client: 1.5, broker: 0.7 }, health: {}, certificates: [],
    brokers: [
      { url: 'mqtt://10.0.0.1:1883', state: 'up', connections: 30 },
      { url: 'mqtt://10.0.0.2:1883', state: 'down', connections: 0, lastError: 'broker 10.0.0.2:1883 unreachable: ECONNREFUSED' },
      { url: 'mqtt://10.0.0.3:1883', state: 'draining', connections: 19 }
    ]
  }
}
