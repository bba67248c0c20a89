// The console's time series: one point a second for the last hour, recorded always (whether or
// not a page is open) from counters the proxy keeps anyway, so the packet path pays nothing.
//
// Each point holds what happened in its second (the deltas of the cumulative counters), not a
// rate computed from them: the points of a window add up to the exact count, which is what an
// operator checks a chart against ("I sent 40, the chart says 40"). Round trips are the mean of
// the samples taken in that second, null when there was none (a gap, not a zero).
//
// One resolution for the whole hour: 3600 points of 9 numbers (plus one column per refusal code
// that occurred, bounded by the error catalog) is about 300 KB, small enough that a second,
// coarser ring for the hour (1 s for 15 min + 10 s for the hour) would save little and make
// every consumer merge two. The 1 h chart still has about three points per pixel.
//
// A sample is taken just after each whole second of the wall clock, so a point's time is a
// whole second, unique and increasing, and two instances' charts line up. Measured (idle
// proxy, this machine): a sample, counters read and one push and shift per column, about 5 µs
// a second (counting the open connections walks them: about 20 µs more per 1000); building the
// whole window about 25 µs, once a second while a console page is open. The whole window is
// about 110 KB of JSON, sent once per page; a second's part about 200 bytes.

import type { Series, SeriesColumns } from '../views.js'
import type { Leg } from './metrics.js'

/** The cumulative counters one sample reads; the recorder stores their deltas. */
export interface Counters {
  /** Open connections now (a level, not a counter). */
  connections: number
  connects: number
  /** Refused connections by GUARD_ERR_* code (or `broker`). */
  refusals: ReadonlyMap<string, number>
  publishIn: number
  publishOut: number
  /** Round-trip seconds sampled so far, and how many samples, per leg. */
  roundTrips: Record<Leg, { sum: number, count: number }>
}

const ZERO: Counters = {
  connections: 0, connects: 0, refusals: new Map(), publishIn: 0, publishOut: 0,
  roundTrips: { client: { sum: 0, count: 0 }, broker: { sum: 0, count: 0 } }
}

/** Applies `f` to every column of a window but the refusals by code. */
function mapColumns (s: SeriesColumns, f: <T>(column: T[]) => T[]): SeriesColumns {
  return {
    t: f(s.t),
    connections: f(s.connections),
    connects: f(s.connects),
    refusals: f(s.refusals),
    publishIn: f(s.publishIn),
    publishOut: f(s.publishOut),
    rttClient: f(s.rttClient),
    rttBroker: f(s.rttBroker)
  }
}

/** The mean of the samples between two readings, in ms rounded to µs; null without any. */
function meanMs (now: { sum: number, count: number }, before: { sum: number, count: number }): number | null {
  const n = now.count - before.count
  return n <= 0 ? null : Math.round((now.sum - before.sum) / n * 1e6) / 1e3
}

export class SeriesRecorder {
  private readonly columns: SeriesColumns = mapColumns(
    { t: [], connections: [], connects: [], refusals: [], publishIn: [], publishOut: [], rttClient: [], rttBroker: [] }, () => [])

  /** Refusals per second by code; a column starts when its code first occurs (zeros before). */
  private readonly byCode = new Map<string, number[]>()
  private previous: Counters = ZERO
  private timer: NodeJS.Timeout | undefined
  private closed = false

  /**
   * `read` gives the counters now; they are all zero when the recorder starts (it starts with
   * the server), so the first point counts everything since then.
   */
  constructor (private readonly read: () => Promise<Counters>, private readonly keep = 3600, private readonly clock: () => number = Date.now) {}

  /** Samples after each whole second from now on, until close(). */
  start (): this {
    this.schedule()
    return this
  }

  private schedule (): void {
    if (this.closed) return
    // 5 ms past the second: a timer that fires a little early still lands in the right second.
    this.timer = setTimeout(() => { void this.sample().finally(() => { this.schedule() }) }, 1005 - this.clock() % 1000)
    this.timer.unref()
  }

  /** Records one point for the current second; a second already recorded is skipped. */
  async sample (): Promise<void> {
    const t = Math.floor(this.clock() / 1000)
    const last = this.columns.t.at(-1)
    if (last !== undefined && t <= last) return
    const now = await this.read()
    const before = this.previous
    this.previous = now
    const c = this.columns
    c.t.push(t)
    c.connections.push(now.connections)
    c.connects.push(now.connects - before.connects)
    c.refusals.push(sum(now.refusals) - sum(before.refusals))
    c.publishIn.push(now.publishIn - before.publishIn)
    c.publishOut.push(now.publishOut - before.publishOut)
    c.rttClient.push(meanMs(now.roundTrips.client, before.roundTrips.client))
    c.rttBroker.push(meanMs(now.roundTrips.broker, before.roundTrips.broker))
    for (const [code, n] of now.refusals) {
      let column = this.byCode.get(code)
      if (column === undefined) this.byCode.set(code, column = new Array<number>(c.t.length - 1).fill(0))
      column.push(n - (before.refusals.get(code) ?? 0))
    }
    if (c.t.length > this.keep) {
      mapColumns(c, (column) => { column.shift(); return column })
      for (const column of this.byCode.values()) column.shift()
    }
  }

  /** The whole window, oldest point first. */
  window (): Series {
    const refusalsByCode: Record<string, number[]> = {}
    // A code none of whose refusals is left in the window is not shown.
    for (const [code, column] of this.byCode) if (column.some((n) => n > 0)) refusalsByCode[code] = column.slice()
    return { whole: true, ...mapColumns(this.columns, (column) => column.slice()), refusalsByCode }
  }

  /** The newest point's value of a column, 0 before the first. */
  latest (column: 'publishIn' | 'publishOut'): number {
    return this.columns[column].at(-1) ?? 0
  }

  close (): void {
    this.closed = true
    clearTimeout(this.timer)
  }
}

function sum (counts: ReadonlyMap<string, number>): number {
  let n = 0
  for (const v of counts.values()) n += v
  return n
}

/** The points of `series` after time `t` (seconds): the part to append to what a page has. */
export function seriesAfter (series: Series, t: number): Series {
  let from = series.t.length
  while (from > 0 && (series.t[from - 1] as number) > t) from--
  const refusalsByCode: Record<string, number[]> = {}
  for (const [code, column] of Object.entries(series.refusalsByCode)) refusalsByCode[code] = column.slice(from)
  return { whole: false, ...mapColumns(series, (column) => column.slice(from)), refusalsByCode }
}
