// What the admin endpoint answers to requests an attacker would send (issue 18, points 3, 4
// and 6): a cross-origin POST carrying the console's cookie is refused while the console's own
// request works, run-time traces are bounded, malformed encodings are a 400 with one line and no
// stack in the log, and the console's feed keeps its once-a-second cadence however many
// viewers join. Also: the caps on live viewers.

import t, { type Test } from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { tempDir } from '../helpers/auth-clients.js'
import { parseExposition, valueOf } from '../helpers/metrics-scrape.js'

const TOKEN = 'admin-requests-token-0123'

async function proxy (t: Test, admin: Record<string, unknown> = {}, trace: Record<string, unknown> = {}): Promise<TestProxy & { admin: string }> {
  const destination = path.join(await tempDir(t, 'mqtt-guard-admin-req-'), 'trace.jsonl')
  const p = await startProxy({ config: { upstream: 'embedded', admin: { listen: '127.0.0.1:0', ...admin }, plugins: [{ name: 'trace', enabled: false, destination, ...trace }] } })
  t.teardown(() => p.stop())
  return { ...p, admin: `http://127.0.0.1:${p.server.admin?.port ?? 0}` }
}

async function cookieOf (admin: string): Promise<string> {
  const res = await fetch(`${admin}/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: TOKEN }) })
  return (res.headers.get('set-cookie') ?? '').split(';')[0] as string
}

const bearer = { authorization: `Bearer ${TOKEN}` }
const traceBody = JSON.stringify({ filters: { clientId: 'victim' }, for: '10m' })

t.test('a cross-origin POST with the console\'s cookie is refused; the console\'s own request works', async (t) => {
  const p = await proxy(t, { token: TOKEN })
  const cookie = await cookieOf(p.admin)
  const host = new URL(p.admin).host
  const other = `http://127.0.0.1:${Number(new URL(p.admin).port) + 1}` // another port: the same site
  const attack = { cookie, origin: other, 'sec-fetch-site': 'same-site', 'content-type': 'text/plain;charset=UTF-8' }
  const refused = await fetch(`${p.admin}/traces`, { method: 'POST', headers: attack, body: traceBody })
  t.equal(refused.status, 403, 'Origin of another port, Sec-Fetch-Site same-site: 403')
  t.match(await refused.json(), { error: /cross-origin request refused/ })
  const noOrigin = await fetch(`${p.admin}/traces`, { method: 'POST', headers: { cookie, 'content-type': 'text/plain' }, body: traceBody })
  t.equal(noOrigin.status, 403, 'cookie, no Origin, text/plain: 403 (no JSON type, no custom header)')
  t.same(await (await fetch(`${p.admin}/traces`, { headers: bearer })).json(), [], 'no trace started')
  const page = { cookie, origin: `http://${host}`, 'sec-fetch-site': 'same-origin', 'content-type': 'application/json' }
  const ok = await fetch(`${p.admin}/traces`, { method: 'POST', headers: page, body: traceBody })
  t.equal(ok.status, 201, 'the same request from the console page: 201')
  const { id } = await ok.json() as { id: string }
  const { 'content-type': _type, ...pageNoType } = page
  t.equal((await fetch(`${p.admin}/traces/${id}`, { method: 'DELETE', headers: pageNoType })).status, 403, 'DELETE with the cookie needs X-Requested-With')
  t.equal((await fetch(`${p.admin}/traces/${id}`, { method: 'DELETE', headers: { ...pageNoType, 'x-requested-with': 'mqtt-guard-console' } })).status, 200)
  const script = await fetch(`${p.admin}/traces`, { method: 'POST', headers: { ...bearer, 'content-type': 'text/plain' }, body: traceBody })
  t.equal(script.status, 201, 'a script with the bearer token needs no proof')
  const m = parseExposition(await (await fetch(`${p.admin}/metrics`, { headers: bearer })).text())
  t.equal(valueOf(m, 'mqtt_guard_admin_refusals_total', { reason: 'cross_origin' }), 3, 'refusals counted')
})

t.test('without a token: a browser\'s cross-origin POST is refused, a script\'s is not', async (t) => {
  const p = await proxy(t)
  const evil = await fetch(`${p.admin}/traces`, { method: 'POST', headers: { origin: 'http://evil.example', 'content-type': 'text/plain' }, body: traceBody })
  t.equal(evil.status, 403)
  const kick = await fetch(`${p.admin}/connections/someone`, { method: 'DELETE', headers: { origin: 'http://evil.example' } })
  t.equal(kick.status, 403, 'a cross-origin kick too')
  t.equal((await fetch(`${p.admin}/traces`, { method: 'POST', body: traceBody })).status, 201, 'curl-like: no Origin, no cookie')
})

t.test('run-time traces: at most maxDurationMs (default 1 h), a body of { filters, for } only', async (t) => {
  const p = await proxy(t, {}, { payload: 'none' })
  const post = async (body: unknown): Promise<{ status: number, body: Record<string, unknown> }> => {
    const res = await fetch(`${p.admin}/traces`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return { status: res.status, body: await res.json() as Record<string, unknown> }
  }
  t.match(await post({ for: '2h' }), { status: 400, body: { error: /^for: at most 3600 s \(the trace plugin's maxDurationMs\)/ } })
  t.match(await post({ for: '24h' }), { status: 400 })
  t.match(await post({ for: 3_600_001 }), { status: 400 })
  t.match(await post({ payload: 'text' }), { status: 400, body: { error: /^payload: unknown/ } }, 'payloads cannot be asked for')
  const one = await post({ for: '1h' })
  t.equal(one.status, 201)
  const left = Date.parse(String(one.body.until)) - Date.now()
  t.ok(left > 3_590_000 && left <= 3_600_000, 'an hour is allowed')
  const short = await proxy(t, {}, { maxDurationMs: 60_000 })
  const res = await fetch(`${short.admin}/traces`, { method: 'POST', body: JSON.stringify({}) })
  const spec = await res.json() as { until: string }
  t.ok(Date.parse(spec.until) - Date.now() <= 60_000, 'no `for`: 10 minutes, or maxDurationMs when shorter')
})

/** Sends raw bytes and returns the status line and body of the answer. */
async function raw (port: number, request: string): Promise<{ status: number, body: string }> {
  const s = net.connect(port, '127.0.0.1')
  await once(s, 'connect')
  s.end(request)
  let text = ''
  for await (const chunk of s) text += (chunk as Buffer).toString()
  return { status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) }
}

t.test('malformed encodings and bad HTTP: 400 with one line, no stack in the log', async (t) => {
  const p = await proxy(t, { token: TOKEN, maxBodyBytes: 2048 })
  const port = Number(new URL(p.admin).port)
  const cases: Array<[string, RequestInit, RegExp]> = [
    ['/metrics', { headers: { cookie: 'mqtt_guard_token=%E0%A4%A' } }, /^cookie mqtt_guard_token: malformed percent-encoding$/],
    ['/connections/%E0%A4%A', { method: 'DELETE', headers: bearer }, /^path: malformed percent-encoding$/],
    ['/clients/%ZZ', { headers: bearer }, /^path: malformed percent-encoding$/],
    ['/traces/%ZZ/live', { headers: bearer }, /^trace ID: malformed percent-encoding$/],
    ['/traces/%ZZ', { method: 'DELETE', headers: bearer }, /^trace ID: malformed percent-encoding$/],
    ['/traces', { method: 'POST', headers: bearer, body: '{"filters":' }, /^body is not JSON$/]
  ]
  for (const [where, init, error] of cases) {
    const res = await fetch(`${p.admin}${where}`, init)
    t.equal(res.status, 400, `${init.method ?? 'GET'} ${where}: 400`)
    t.match(await res.json(), { error }, 'one line saying what is wrong')
  }
  const big = await fetch(`${p.admin}/traces`, { method: 'POST', headers: bearer, body: JSON.stringify({ filters: { clientId: 'x'.repeat(4096) } }) })
  t.equal(big.status, 413, 'a body over admin.maxBodyBytes: 413')
  t.match(await raw(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n'), { status: 400, body: /malformed HTTP request/ })
  t.match(await raw(port, 'GET http://[::1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ' + TOKEN + '\r\nConnection: close\r\n\r\n'), { status: 400 })
  t.same(p.logs.lines.filter((l) => l.level >= 50 || JSON.stringify(l).includes('"stack"')), [], 'nothing at error level, no stack')
})

/** Opens /events and counts its overview events. */
async function feedViewer (t: Test, admin: string): Promise<{ events: number, status: number }> {
  const controller = new AbortController()
  t.teardown(() => { controller.abort() })
  const res = await fetch(`${admin}/events`, { signal: controller.signal })
  const viewer = { events: 0, status: res.status }
  if (res.body === null || res.status !== 200) return viewer
  void (async () => {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) viewer.events += Buffer.from(chunk).toString().split('event: overview').length - 1
  })().catch(() => {})
  return viewer
}

t.test('/events: about one update a second per viewer while 19 more join', async (t) => {
  const p = await proxy(t, { maxViewers: 30, maxViewersPerStream: 30 })
  const first = await feedViewer(t, p.admin)
  const started = performance.now()
  const others = []
  for (let i = 0; i < 19; i++) {
    others.push(await feedViewer(t, p.admin))
    await sleep(150) // spread over three seconds
  }
  await sleep(6000 - (performance.now() - started))
  const seconds = (performance.now() - started) / 1000
  t.ok(first.events >= seconds - 2 && first.events <= seconds + 2, `the first viewer: ${first.events} updates in ${seconds.toFixed(1)} s`)
  t.ok(others.every((v) => v.status === 200 && v.events >= 2), 'every viewer fed')
})

t.test('viewer caps: per stream and in all, 503 past them, counted', async (t) => {
  const p = await proxy(t, { maxViewers: 5, maxViewersPerStream: 3 })
  const feeds = []
  for (let i = 0; i < 4; i++) feeds.push(await feedViewer(t, p.admin))
  t.same(feeds.map((f) => f.status), [200, 200, 200, 503], 'a fourth /events viewer: 503')
  const started = await (await fetch(`${p.admin}/traces`, { method: 'POST', body: JSON.stringify({}) })).json() as { id: string }
  const live = []
  for (let i = 0; i < 3; i++) live.push((await fetch(`${p.admin}/traces/${started.id}/live`)).status)
  t.same(live, [200, 200, 503], 'five streams in all (admin.maxViewers)')
  const m = parseExposition(await (await fetch(`${p.admin}/metrics`)).text())
  t.equal(valueOf(m, 'mqtt_guard_admin_refusals_total', { reason: 'viewers' }), 2)
  t.equal(valueOf(m, 'mqtt_guard_admin_viewers', { stream: 'events' }), 3)
})
