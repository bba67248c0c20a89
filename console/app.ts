// The console page: an overview fed by Server-Sent Events (`/events`; its charts are in
// charts.ts), the clients table with one client's page and a kick button, and the findings of
// `doctor`. Everything shown comes from the network (client IDs, topics), so it is written as
// text, never as HTML.

import type { ClientPage, ConnectionView, Finding, Overview } from '../src/views.js'
import type { TraceLine } from '../plugins/trace/format.js'
import { rangeButtons, updateCharts } from './charts.js'

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id)
  if (el === null) throw new Error(`#${id} missing`)
  return el as T
}

function text (id: string, value: string | number): void {
  $(id).textContent = String(value)
}

/** Replaces a table's body with rows of text cells; `onClick` makes rows clickable. */
function rows (tableId: string, data: Array<Array<string | number>>, onClick?: (index: number) => void): void {
  const body = $(tableId).querySelector('tbody') as HTMLTableSectionElement
  body.replaceChildren(...data.map((cells, i) => {
    const tr = document.createElement('tr')
    for (const cell of cells) {
      const td = document.createElement('td')
      td.textContent = String(cell)
      tr.append(td)
    }
    if (onClick !== undefined) tr.addEventListener('click', () => { onClick(i) })
    return tr
  }))
}

const VERSIONS: Record<number, string> = { 3: '3.1', 4: '3.1.1', 5: '5' }
const ms = (v: number | null): string => v === null ? '–' : `${v} ms`

// A header no cross-origin page can send without a preflight: the server's proof, with the
// Origin, that a POST or DELETE carrying the cookie comes from this page.
const SAME_ORIGIN = { 'x-requested-with': 'mqtt-guard-console' }

async function api (path: string, init: RequestInit = {}): Promise<Response> {
  const res = await fetch(path, { credentials: 'same-origin', ...init, headers: { ...SAME_ORIGIN, ...init.headers as Record<string, string> | undefined } })
  if (res.status === 401) showLogin()
  return res
}

// ---- login -------------------------------------------------------------------------------

function showLogin (): void {
  $('login').hidden = false
  $('token').focus()
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault()
  const token = $<HTMLInputElement>('token').value
  void fetch('/login', { method: 'POST', headers: { 'content-type': 'application/json', ...SAME_ORIGIN }, body: JSON.stringify({ token }) }).then((res) => {
    if (!res.ok) { text('login-error', 'wrong token'); return }
    $('login').hidden = true
    text('login-error', '')
    connect()
    void show(location.hash.slice(1) || 'overview')
  })
})

// ---- overview ----------------------------------------------------------------------------

function renderOverview (o: Overview): void {
  text('ov-connections', o.connections)
  text('ov-connects', o.connects)
  text('ov-rate-in', o.rates.in)
  text('ov-rate-out', o.rates.out)
  text('ov-dupes', o.duplicatesRemoved.in + o.duplicatesRemoved.out)
  text('ov-rtt-broker', ms(o.roundTrips.broker))
  text('ov-rtt-client', ms(o.roundTrips.client))
  updateCharts(o.series)
  rows('ov-refusals', o.refusals.map((r) => [r.code, r.reasonCode, r.count]))
  rows('ov-verdicts', o.verdicts.map((v) => [v.plugin, v.action, v.count]))
  rows('ov-health', Object.entries(o.health).map(([k, v]) => [k, v === true ? 'ok' : v === false ? 'DOWN' : v]))
  rows('ov-certs', o.certificates.map((c) => [c.listener, c.subject, c.days]))
  // Several brokers only: which broker is up, how many clients each holds.
  $('ov-brokers-box').hidden = o.brokers.length === 0
  rows('ov-brokers', o.brokers.map((b) => [b.url, b.state === 'down' ? 'DOWN' : b.state, b.connections, b.lastError ?? '']))
}

rangeButtons(document.querySelectorAll<HTMLButtonElement>('#ov-range button'), $('ov-range-title'))

let source: EventSource | null = null

/** The live feed; the browser reconnects by itself, and the badge says when it is away. */
function connect (): void {
  source?.close()
  source = new EventSource('/events')
  const status = $('status')
  source.addEventListener('open', () => { status.textContent = 'live'; status.className = 'status live' })
  source.addEventListener('error', () => {
    status.textContent = 'disconnected'
    status.className = 'status down'
    // A 401 ends the stream for good: ask for the token.
    void fetch('/overview', { credentials: 'same-origin' }).then((res) => { if (res.status === 401) { source?.close(); showLogin() } }, () => {})
  })
  source.addEventListener('overview', (event) => { renderOverview(JSON.parse((event as MessageEvent<string>).data) as Overview) })
}

// ---- clients -----------------------------------------------------------------------------

let clients: ConnectionView[] = []

async function loadClients (): Promise<void> {
  const res = await api('/connections')
  if (!res.ok) return
  clients = await res.json() as ConnectionView[]
  renderClients()
}

function renderClients (): void {
  const q = $<HTMLInputElement>('client-search').value.trim().toLowerCase()
  const shown = clients.filter((c) => q === '' || [c.clientId, c.username ?? '', c.address].some((v) => v.toLowerCase().includes(q)))
  rows('client-table', shown.map((c) => [
    c.clientId, c.username ?? '', c.address, VERSIONS[c.protocolVersion] ?? String(c.protocolVersion), c.since.slice(11, 19),
    c.subscriptions.map((s) => `${s.filter} (${s.qos})`).join(', '), `${c.bytesIn} / ${c.bytesOut}`, c.lastRefusal ?? ''
  ]), (i) => { void openClient(shown[i]?.clientId ?? '') })
}

let openClientId: string | null = null

async function openClient (clientId: string): Promise<void> {
  openClientId = clientId
  const res = await api(`/clients/${encodeURIComponent(clientId)}`)
  if (!res.ok) return
  const page = await res.json() as ClientPage
  $('client-page').hidden = false
  text('cp-title', page.clientId)
  text('cp-message', '')
  rows('cp-live', page.connections.map((c) => [c.address, c.since.replace('T', ' ').slice(0, 19), c.subscriptions.map((s) => s.filter).join(', ')]))
  rows('cp-history', page.history.map((e) => [e.at.replace('T', ' ').slice(0, 19), e.address, e.admitted ? 'yes' : 'refused', e.words]))
}

$('cp-kick').addEventListener('click', () => {
  const id = openClientId
  if (id === null) return
  void api(`/connections/${encodeURIComponent(id)}`, { method: 'DELETE' }).then(async (res) => {
    text('cp-message', res.ok ? 'closed' : `not closed (HTTP ${res.status})`)
    await new Promise((resolve) => setTimeout(resolve, 300))
    await loadClients()
    await openClient(id)
  })
})

$('client-search').addEventListener('input', renderClients)

// ---- findings ----------------------------------------------------------------------------

async function loadFindings (): Promise<void> {
  const res = await api('/diagnostics')
  if (!res.ok) return
  const { findings } = await res.json() as { findings: Finding[] }
  const order = { error: 0, warning: 1, info: 2 }
  $('findings-list').replaceChildren(...findings.sort((a, b) => order[a.severity] - order[b.severity]).map((f) => {
    const box = document.createElement('div')
    box.className = `finding ${f.severity}`
    box.dataset.id = f.id
    const head = document.createElement('div')
    const sev = document.createElement('span')
    sev.className = 'sev'
    sev.textContent = f.severity
    const summary = document.createElement('span')
    summary.textContent = `${f.id}: ${f.summary}`
    head.append(sev, summary)
    const evidence = document.createElement('ul')
    evidence.append(...f.evidence.map((e) => { const li = document.createElement('li'); li.textContent = e; return li }))
    const fix = document.createElement('div')
    fix.className = 'fix'
    fix.textContent = f.fix
    box.append(head, evidence, fix)
    return box
  }))
  if (findings.length === 0) text('findings-list', 'no findings')
}

$('findings-refresh').addEventListener('click', () => { void loadFindings() })

// ---- live trace --------------------------------------------------------------------------

const MAX_LINES = 5000
let traceId: string | null = null
let traceSource: EventSource | null = null
let lines: string[] = []
let paused = false
let held: string[] = []

function traceState (message: string): void {
  text('trace-state', message)
}

$('trace-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const filters: Record<string, string> = {}
  for (const [key, id] of [['clientId', 'tf-client'], ['username', 'tf-user'], ['topic', 'tf-topic']] as const) {
    const v = $<HTMLInputElement>(id).value.trim()
    if (v !== '') filters[key] = v
  }
  void api('/traces', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ filters, for: $<HTMLInputElement>('tf-for').value.trim() || '10m' }) }).then(async (res) => {
    const body = await res.json() as { id?: string, error?: string }
    if (res.status === 404) { traceState('the trace plugin is not loaded: add `- name: trace` to the plugins in the config'); return }
    if (!res.ok || body.id === undefined) { traceState(`not started: ${body.error ?? `HTTP ${res.status}`}`); return }
    watchTrace(body.id)
  })
})

function watchTrace (id: string): void {
  traceSource?.close()
  traceId = id
  $<HTMLButtonElement>('trace-stop').disabled = false
  // Running on the proxy already, but lines reach this page only once its live stream is open:
  // "running" is shown from then on, so what a user does after seeing it is on the page.
  traceState(`trace ${id} starting…`)
  traceSource = new EventSource(`/traces/${encodeURIComponent(id)}/live`)
  traceSource.addEventListener('line', (event) => {
    const line = (event as MessageEvent<string>).data
    if (paused) { held.push(line); return }
    addLine(line)
  })
  traceSource.addEventListener('dropped', (event) => {
    const { dropped } = JSON.parse((event as MessageEvent<string>).data) as { dropped: number }
    traceState(`trace ${id} running; ${dropped} lines not shown: this page fell behind`)
  })
  traceSource.addEventListener('error', () => { traceState(`trace ${id}: disconnected, reconnecting…`) })
  traceSource.addEventListener('open', () => { traceState(`trace ${id} running`) })
}

$('trace-stop').addEventListener('click', () => {
  const id = traceId
  if (id === null) return
  traceSource?.close()
  traceSource = null
  traceId = null
  $<HTMLButtonElement>('trace-stop').disabled = true
  void api(`/traces/${encodeURIComponent(id)}`, { method: 'DELETE' }).then(() => { traceState(`trace ${id} stopped`) })
})

const ARROWS = { client: 0, broker: 1 } as const

function addLine (json: string): void {
  lines.push(json)
  if (lines.length > MAX_LINES) lines.shift()
  const l = JSON.parse(json) as TraceLine
  const row = document.createElement('div')
  row.className = 'seq'
  if (['dropped', 'answered', 'refused'].includes(l.verdict)) row.classList.add('stopped')
  if (l.verdict === 'proxy') row.classList.add('made')
  const time = document.createElement('span')
  time.className = 't'
  time.textContent = new Date(l.us / 1000).toISOString().slice(11, 23)
  const label = [l.type.toUpperCase(), l.id !== undefined ? `#${l.id}` : '', l.qos !== undefined && l.type === 'publish' ? `q${l.qos}` : '', l.topic ?? '',
    l.reasonCode !== undefined ? `rc 0x${l.reasonCode.toString(16)}` : '', l.verdict !== 'forwarded' && l.verdict !== 'sent' ? l.verdict.toUpperCase() + (l.plugin !== undefined ? ` by ${l.plugin}` : '') : ''].filter((x) => x !== '').join(' ')
  const cells = [document.createElement('span'), document.createElement('span')]
  for (const c of cells) c.className = 'arrow'
  const cell = cells[ARROWS[l.leg]] as HTMLSpanElement
  cell.classList.add(l.dir)
  // Client lane on the left, broker lane on the right: up goes right, down goes left.
  cell.textContent = l.dir === 'up' ? `${label} ──▶` : `◀── ${label}`
  const note = document.createElement('span')
  note.className = 'note'
  const payload = l.payload?.text ?? l.payload?.hex
  note.textContent = [l.clientId, l.rttUs !== undefined ? `${(l.rttUs / 1000).toFixed(2)} ms` : '', payload !== undefined ? `“${payload.slice(0, 40)}”` : ''].filter((x) => x !== '').join(' · ')
  row.append(time, ...cells, note)
  row.addEventListener('click', () => {
    const detail = $('trace-detail')
    detail.hidden = false
    detail.textContent = JSON.stringify(l, null, 2)
  })
  const list = $('trace-rows')
  list.append(row)
  if (list.children.length > MAX_LINES) list.firstElementChild?.remove()
  list.scrollTop = list.scrollHeight
}

$('trace-pause').addEventListener('click', () => {
  paused = !paused
  text('trace-pause', paused ? 'Resume' : 'Pause')
  if (!paused) {
    for (const line of held) addLine(line)
    held = []
  }
})

$('trace-clear').addEventListener('click', () => {
  lines = []
  held = []
  $('trace-rows').replaceChildren()
  $('trace-detail').hidden = true
})

function download (name: string, blob: Blob): void {
  const a = document.createElement('a')
  a.href = URL.createObjectURL(blob)
  a.download = name
  a.click()
  setTimeout(() => { URL.revokeObjectURL(a.href) }, 1000)
}

$('trace-json').addEventListener('click', () => {
  download(`trace-${traceId ?? 'lines'}.jsonl`, new Blob([lines.map((l) => `${l}\n`).join('')], { type: 'application/x-ndjson' }))
})

$('trace-pcap').addEventListener('click', () => {
  void api('/traces/pcapng', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ lines: lines.map((l) => JSON.parse(l) as unknown) }) }).then(async (res) => {
    const body = await res.json() as { pcapng?: string, skipped?: number, error?: string }
    if (!res.ok || body.pcapng === undefined) { traceState(`no pcapng: ${body.error ?? `HTTP ${res.status}`}`); return }
    const bytes = Uint8Array.from(atob(body.pcapng), (c) => c.charCodeAt(0))
    download(`trace-${traceId ?? 'lines'}.pcapng`, new Blob([bytes], { type: 'application/octet-stream' }))
    if ((body.skipped ?? 0) > 0) traceState(`${body.skipped} lines without packet bytes left out (the trace keeps payloads only with payload: hex or text)`)
  })
})

// ---- tabs --------------------------------------------------------------------------------

let clientTimer: number | undefined

async function show (tab: string): Promise<void> {
  for (const page of document.querySelectorAll<HTMLElement>('[data-page]')) page.hidden = page.id !== tab
  for (const a of document.querySelectorAll<HTMLAnchorElement>('nav a')) a.classList.toggle('active', a.dataset.tab === tab)
  window.clearInterval(clientTimer)
  if (tab === 'clients') {
    await loadClients()
    clientTimer = window.setInterval(() => { void loadClients() }, 2000)
  }
  if (tab === 'findings') await loadFindings()
}

window.addEventListener('hashchange', () => { void show(location.hash.slice(1) || 'overview') })
connect()
void show(location.hash.slice(1) || 'overview')
