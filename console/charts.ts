// The overview's charts (uPlot, loaded as its own script before this module): connections,
// CONNECTs and refusals per second, PUBLISH in and out per second, and the round trip per leg,
// over the last 15 minutes or the last hour. The page keeps the window the feed sent first and
// appends the points of each later event. A proxy younger than the range shows all it has,
// across the whole width, under the heading "Since the proxy started at …" (a new user's first
// quarter of an hour would otherwise be a sliver at the right edge); at least a minute is
// shown, the part before the first point shaded.

import type UPlot from 'uplot'
import type { Series } from '../src/views.js'

declare const uPlot: typeof UPlot

/** The most a page keeps: the server's window (src/observe/series.ts). */
const KEEP = 3600
const HEIGHT = 190
const FONT = '12px system-ui, sans-serif'
const MUTED = '#66707a'
const GRID = '#eceff2'
/** Counts are whole numbers: no tick at 0.5 connections. */
const COUNT_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6]
/** One colour per refusal code, stacked in this order. */
const REFUSAL_COLOURS = ['#cf222e', '#e16f24', '#bf8700', '#8250df', '#a40e26', '#6e7781']

type Column = Array<number | null>
interface ChartSpec {
  el: string
  title: string
  unit: string
  /** Series labels, colours and columns, from the window; `raw` is shown in the legend when drawn stacked. */
  series: (s: Series) => Array<{ label: string, colour: string, data: Column, raw?: Column, bars?: boolean, stepped?: boolean, fill?: string, points?: boolean }>
}

const SPECS: ChartSpec[] = [
  { el: 'chart-connections', title: 'Connections open', unit: 'connections', series: (s) => [{ label: 'open', colour: '#2f6fb0', fill: 'rgba(47, 111, 176, 0.12)', data: s.connections, stepped: true }] },
  { el: 'chart-connects', title: 'CONNECTs and refusals per second', unit: 'per second', series: connectsAndRefusals },
  {
    el: 'chart-publish',
    title: 'PUBLISH per second',
    unit: 'per second',
    series: (s) => [{ label: 'in (client → broker)', colour: '#2f6fb0', fill: 'rgba(47, 111, 176, 0.12)', data: s.publishIn }, { label: 'out (broker → client)', colour: '#1a7f37', data: s.publishOut }]
  },
  {
    el: 'chart-rtt',
    title: 'Round trip per leg (mean of the second)',
    unit: 'ms',
    series: (s) => [{ label: 'broker leg', colour: '#8250df', data: s.rttBroker, points: true }, { label: 'client leg', colour: '#e16f24', data: s.rttClient, points: true }]
  }
]

/** CONNECTs as a line, refusals as bars stacked by code (drawn from the top one down). */
function connectsAndRefusals (s: Series): ReturnType<ChartSpec['series']> {
  const codes = Object.keys(s.refusalsByCode).sort()
  const line = { label: 'CONNECT', colour: '#2f6fb0', data: s.connects }
  if (codes.length === 0) return [line, { label: 'refused', colour: REFUSAL_COLOURS[0] as string, data: s.refusals, bars: true }]
  let below: number[] = s.t.map(() => 0)
  const stacked = codes.map((code, i) => {
    const raw = s.refusalsByCode[code] ?? []
    below = below.map((b, j) => b + (raw[j] ?? 0))
    return { label: `refused ${code.replace(/^GUARD_ERR_/, '')}`, colour: REFUSAL_COLOURS[i % REFUSAL_COLOURS.length] as string, data: below, raw, bars: true }
  })
  return [line, ...stacked.reverse()]
}

let held: Series | null = null
let span = 900
let heading: HTMLElement | null = null
/** The least the x axis spans, so that a proxy's first seconds are not one wide bar. */
const MIN_SPAN = 60

/**
 * The x range for points ending at `t`: point i covers the second before t[i], so the window
 * holds data from t[0] - 1; the range is the last `span` seconds of that, or all of it.
 */
function xRange (t: ArrayLike<number>): { from: number, to: number, young: boolean } {
  const to = last(t) ?? Math.floor(Date.now() / 1000)
  const start = (t[0] ?? to) - 1
  return { from: Math.min(to - MIN_SPAN, Math.max(start, to - span)), to, young: start > to - span }
}
interface Made { chart: UPlot, labels: string, destroy: () => void }
const charts = new Map<string, Made>()

/** A new window replaces what the page holds; a part is appended to it. */
export function updateCharts (part: Series): void {
  held = part.whole || held === null ? part : appended(held, part)
  const extra = held.t.length - KEEP
  if (extra > 0) held = trimmed(held, extra)
  draw()
}

function appended (have: Series, part: Series): Series {
  const newest = have.t.at(-1) ?? -Infinity
  let from = part.t.findIndex((t) => t > newest)
  if (from < 0) from = part.t.length
  const byCode: Record<string, number[]> = {}
  // A code new in the part had no refusals before it; one missing from it, none in it.
  for (const code of new Set([...Object.keys(have.refusalsByCode), ...Object.keys(part.refusalsByCode)])) {
    const before = have.refusalsByCode[code] ?? have.t.map(() => 0)
    byCode[code] = before.concat((part.refusalsByCode[code] ?? part.t.map(() => 0)).slice(from))
  }
  return build((get) => get(have).concat(get(part).slice(from)), byCode)
}

function trimmed (s: Series, n: number): Series {
  const byCode: Record<string, number[]> = {}
  for (const [code, column] of Object.entries(s.refusalsByCode)) byCode[code] = column.slice(n)
  return build((get) => get(s).slice(n), byCode)
}

/** A window made column by column: `f` is given how to read each column of a Series. */
function build (f: <T>(get: (s: Series) => T[]) => T[], refusalsByCode: Record<string, number[]>): Series {
  return {
    whole: true,
    t: f((s) => s.t),
    connections: f((s) => s.connections),
    connects: f((s) => s.connects),
    refusals: f((s) => s.refusals),
    refusalsByCode,
    publishIn: f((s) => s.publishIn),
    publishOut: f((s) => s.publishOut),
    rttClient: f((s) => s.rttClient),
    rttBroker: f((s) => s.rttBroker)
  }
}

/** What the charts show: the range chosen, or everything since the proxy started. */
function showHeading (): void {
  if (heading === null || held === null) return
  const { young } = xRange(held.t)
  const first = held.t[0]
  heading.textContent = young && first !== undefined ? `Since the proxy started at ${clock(first - 1)}` : span === 900 ? 'Last 15 minutes' : 'Last hour'
}

function draw (): void {
  if (held === null) return
  showHeading()
  for (const spec of SPECS) {
    const series = spec.series(held)
    const data = [held.t, ...series.map((s) => s.data)] as UPlot.AlignedData
    const labels = series.map((s) => s.label).join('\n')
    const have = charts.get(spec.el)
    if (have !== undefined && have.labels === labels) {
      have.chart.setData(data)
      continue
    }
    // A new refusal code is a new series: made again (rare, and simpler than adding one).
    have?.destroy()
    charts.set(spec.el, { ...make(spec, series, data), labels })
  }
}

const last = <T>(column: ArrayLike<T>): T | undefined => column[column.length - 1]
const count = (v: number | null | undefined): string => v === null || v === undefined ? '–' : v >= 1e4 ? `${(v / 1e3).toFixed(1)}k` : String(Math.round(v * 100) / 100)

function make (spec: ChartSpec, series: ReturnType<ChartSpec['series']>, data: UPlot.AlignedData): Omit<Made, 'labels'> {
  const el = document.getElementById(spec.el) as HTMLElement
  const ms = spec.unit === 'ms'
  const opts: UPlot.Options = {
    title: spec.title,
    width: Math.max(el.clientWidth, 300),
    height: HEIGHT,
    padding: [10, 16, 0, 4],
    // With the cursor away, the legend shows the newest point.
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: true, range: (u) => { const { from, to } = xRange(u.data[0]); return [from, to] } },
      y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.15 : ms ? 1 : 2] }
    },
    axes: axes(spec.unit),
    series: [{ label: 'time', value: (u, v, _s, idx) => clock(idx === null ? last(u.data[0]) : v) }, ...series.map((s, i) => seriesOptions(s, i + 1, ms))],
    hooks: { drawClear: [shadeBeforeStart] }
  }
  const chart = new uPlot(opts, data, el)
  const resize = new ResizeObserver(() => { if (el.clientWidth > 0) chart.setSize({ width: el.clientWidth, height: HEIGHT }) })
  resize.observe(el)
  return { chart, destroy: () => { resize.disconnect(); chart.destroy() } }
}

function axes (unit: string): UPlot.Axis[] {
  const ms = unit === 'ms'
  const lines = { grid: { stroke: GRID, width: 1 }, ticks: { stroke: GRID, width: 1 }, stroke: MUTED, font: FONT }
  return [
    // 24-hour local time; seconds only when the ticks are less than a minute apart.
    { ...lines, values: (_u, splits, _a, _space, incr) => splits.map((v) => clock(v).slice(0, incr < 60 ? 8 : 5)) },
    {
      ...lines, label: unit, labelFont: FONT, labelSize: 20, size: 50,
      ...(ms ? {} : { incrs: COUNT_INCRS }),
      values: (_u, splits) => splits.map((v) => ms ? `${Math.round(v * 100) / 100}` : count(v))
    }
  ]
}

/** One series: a line, steps or stacked bars; its legend shows the newest point, or the hovered one. */
function seriesOptions (s: ReturnType<ChartSpec['series']>[number], index: number, ms: boolean): UPlot.Series {
  const paths = s.bars === true ? uPlot.paths.bars?.({ size: [0.8, 12, 2] }) : s.stepped === true ? uPlot.paths.stepped?.({ align: 1 }) : undefined
  return {
    label: s.label,
    stroke: s.colour,
    width: s.bars === true ? 0 : 1.5,
    fill: s.bars === true ? s.colour : s.fill,
    // A level holds until the next second's reading: steps, not slopes.
    ...(paths === undefined ? {} : { paths }),
    points: s.points === true ? { show: true, size: 4, fill: s.colour } : { show: false },
    value: (u, v, _s, idx) => {
      // Stacked bars are drawn at their sums; the legend says each one's own count.
      const column = s.raw ?? u.data[index] as Column
      const shown = idx === null ? last(column) : s.raw === undefined ? v : s.raw[idx]
      return ms ? (shown === null || shown === undefined ? '–' : `${shown} ms`) : count(shown)
    }
  }
}

function clock (t: number | null | undefined): string {
  return t === null || t === undefined ? '–' : new Date(t * 1000).toTimeString().slice(0, 8)
}

/** Shades the part of the range before the first point: no data, because no proxy yet. */
function shadeBeforeStart (u: UPlot): void {
  const first = u.data[0][0]
  const { left, top, height } = u.bbox
  const x = first === undefined ? left + u.bbox.width : u.valToPos(first - 1, 'x', true)
  if (x <= left + 1) return
  const ctx = u.ctx
  ctx.save()
  ctx.fillStyle = '#f6f8fa'
  ctx.fillRect(left, top, x - left, height)
  const ratio = window.devicePixelRatio
  if (x - left > 170 * ratio) {
    ctx.fillStyle = '#8c959f'
    ctx.font = `${12 * ratio}px system-ui, sans-serif`
    ctx.textAlign = 'center'
    ctx.textBaseline = 'middle'
    ctx.fillText(first === undefined ? 'no data yet' : `proxy started ${clock(first - 1)}`, left + (x - left) / 2, top + height / 2)
  }
  ctx.restore()
}

/** The range buttons: 15 minutes or an hour, for every chart at once. */
export function rangeButtons (buttons: NodeListOf<HTMLButtonElement>, title: HTMLElement): void {
  heading = title
  for (const button of buttons) {
    button.addEventListener('click', () => {
      span = Number(button.dataset.range)
      showHeading()

      for (const b of buttons) b.classList.toggle('active', b === button)
      for (const { chart } of charts.values()) chart.setData(chart.data)
    })
  }
}
