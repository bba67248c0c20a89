// The web console in a real browser (playwright-core driving Debian's chromium, headless; no
// browser download) against a proxy in front of a real Mosquitto: the token login, overview
// numbers that match known traffic, charts whose points add up to that traffic (read from the
// uPlot instances the page made) with axes, units, a range switch and the window's width, the
// feed sending the whole window once and then only new points, a client in the table, its
// page, and a kick that closes it; the findings; the live badge going "disconnected" while the
// proxy restarts and "live" again after; no script error and nothing the page's CSP blocked. A screenshot of each page is kept as a test artifact; the README's three
// (docs/images) are checked against the console's sources and retaken with UPDATE_SCREENSHOTS=1.

import t, { type Test } from 'tap'
import { existsSync, statSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import type { MqttClient } from 'mqtt'
import { tempDir } from '../helpers/auth-clients.js'
import { chromium, type Browser, type Page } from 'playwright-core'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { clientV, refusedCode } from '../helpers/e2e-mqtt.js'
import { freePort } from '../helpers/ports.js'
import { pollUntil } from '../helpers/processes.js'
import { artifactName } from '../helpers/artifacts.js'
import type { Overview } from '../../src/views.js'
import { CHARTS, PROBE, hourOfPoints, total, type Chart } from '../helpers/console-page.js'
import { HOW_TO_UPDATE, IMAGES, UPDATING, readManifest, sourcesHash, writeManifest } from '../helpers/screenshots.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const TOKEN = 'pw-console-token-0123456789'
const PUBLISHED = 40
const DENIED = 5
/**
 * Publishes of the live part of the charts test: k in each of the seconds that follow. For the
 * README's screenshot, a minute of it (a wave, and a visitor connecting now and then).
 */
const BURSTS = UPDATING
  ? Array.from({ length: 60 }, (_, i) => Math.round(14 + 10 * Math.sin(i / 5) + (i * 7) % 5))
  : [6, 14, 9, 20, 4, 16, 11, 7, 18, 12]

if (!existsSync(CHROMIUM)) {
  t.fail(`${CHROMIUM} not found: this test needs Debian's chromium (apt-get install -y chromium); .ci/run installs it`)
} else {
  const mosquitto = await startMosquitto()
  t.teardown(() => mosquitto.stop())
  const adminPort = await freePort()
  const proxyConfig = {
    upstream: mosquitto.url,
    admin: { listen: `127.0.0.1:${adminPort}`, token: TOKEN },
    plugins: [
      { name: 'acl', rules: [{ deny: 'publish', topic: 'console/secret' }, { allow: ['publish', 'subscribe', 'receive'], topic: 'console/#' }] },
      { name: 'trace', destination: path.join(await tempDir(t, 'mqtt-guard-console-'), 'trace.jsonl'), payload: 'text', enabled: false }
    ]
  }
  const start = async (): Promise<TestProxy> => await startProxy({ config: proxyConfig })
  let proxy = await start()
  t.teardown(async () => { await proxy.stop() })
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, headless: true })
  t.teardown(async () => { await browser.close() })
  const page: Page = await browser.newPage({ viewport: { width: 1280, height: 800 } })
  await page.addInitScript(PROBE)
  const errors: string[] = []
  page.on('pageerror', (err) => { errors.push(err.message) })
  const consoleErrors: string[] = []
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()) })
  const admin = `http://127.0.0.1:${adminPort}`

  /** Waits until the element's text is `want` (or matches it). */
  const until = async (selector: string, want: string | RegExp, timeoutMs = 10_000): Promise<void> => {
    await pollUntil(`${selector} shows ${String(want)}`, timeoutMs, async () => {
      const got = await page.textContent(selector).catch(() => null) ?? ''
      return (typeof want === 'string' ? got === want : want.test(got)) ? true : undefined
    })
  }
  const rowsAre = async (selector: string, n: number): Promise<void> => {
    await pollUntil(`${n} rows in ${selector}`, 10_000, async () => await page.locator(selector).count() === n ? true : undefined)
  }

  const docShots: string[] = []
  /** An artifact of every run; with UPDATE_SCREENSHOTS=1 also the README's view of it. */
  const shot = async (name: string, readme?: string): Promise<void> => {
    await page.screenshot({ path: `${artifactName(`console-${name}`)}.png`, fullPage: true })
    if (!UPDATING || readme === undefined) return
    await page.mouse.move(0, 0)
    await page.screenshot({ path: path.join(IMAGES, `console-${readme}.png`) })
    docShots.push(`console-${readme}.png`)
  }
  const charts = async (on = page): Promise<Chart[]> => await on.evaluate(CHARTS) as Chart[]
  const chart = async (title: RegExp, on = page): Promise<Chart> => {
    const found = (await charts(on)).find((c) => title.test(c.title))
    if (found === undefined) throw new Error(`no chart titled ${String(title)}`)
    return found
  }
  /** A column of a chart, by the start of its series' label. */
  const column = (c: Chart, label: string): Array<number | null> => c.data[c.labels.findIndex((l) => l.startsWith(label))] ?? []

  /** Known traffic: a subscriber and two publishers, PUBLISHED messages delivered, DENIED refused. */
  async function traffic (t: Test): Promise<{ pub1: MqttClient, pub2: MqttClient, refused: number | undefined, received: () => number }> {
    const sub = await clientV(t, proxy.url, 5, { clientId: 'console-sub' })
    await sub.subscribeAsync('console/#', { qos: 1 })
    const pub1 = await clientV(t, proxy.url, 4, { clientId: 'console-pub-1' })
    // pub-2's first attempt is refused: its will is on a topic it may not publish to.
    const refused = await refusedCode(t, proxy.url, 5, { clientId: 'console-pub-2', will: { topic: 'console/secret', payload: Buffer.from('gone'), qos: 0, retain: false } })
    const pub2 = await clientV(t, proxy.url, 5, { clientId: 'console-pub-2' })
    let received = 0
    sub.on('message', (topic) => { if (topic === 'console/data') received++ })
    for (let i = 0; i < PUBLISHED; i++) await pub1.publishAsync('console/data', String(i), { qos: 1 })
    await pollUntil(`${PUBLISHED} messages at the subscriber`, 10_000, () => received === PUBLISHED ? true : undefined)
    for (let i = 0; i < DENIED; i++) await pub2.publishAsync('console/secret', 'no', { qos: 1 }).catch(() => undefined)
    return { pub1, pub2, refused, received: () => received }
  }

  // The clients belong to the whole file: the later tests look at them and kick one.
  const { pub1, pub2, refused, received } = await traffic(t)

  t.test('the README\'s screenshots show the pages as they are now', async (t) => {
    if (UPDATING) return t.pass('taking them again (UPDATE_SCREENSHOTS=1)')
    const manifest = readManifest()
    t.equal(manifest?.sources, sourcesHash(), `the console's sources changed since docs/images was taken: ${HOW_TO_UPDATE}`)
    for (const file of manifest?.files ?? []) t.ok(existsSync(path.join(IMAGES, file)), `${file} is there`)
    t.equal(manifest?.files.length, 3, 'the overview, a client\'s page and a live trace')
  })

  t.test('login with the admin token, then the overview matches the traffic', async (t) => {
    t.equal(refused, 0x87, 'console-pub-2 was refused once (its will topic), then connected')
    await page.goto(admin)
    await page.waitForSelector('#login:not([hidden])')
    await page.fill('#token', 'wrong-token')
    await page.click('#login button')
    await until('#login-error', 'wrong token')
    await page.fill('#token', TOKEN)
    await page.click('#login button')
    await until('#status', 'live')
    await until('#ov-connections', '3')
    t.equal(await page.textContent('#ov-connections'), '3', 'three clients connected')
    t.equal(await page.textContent('#ov-connects'), '4', 'four CONNECTs (one refused)')
    await until('#ov-refusals tbody', /GUARD_ERR_NOT_AUTHORIZED1351/)
    t.pass('the refusal by its code: GUARD_ERR_NOT_AUTHORIZED, 0x87 (135), once')
    await until('#ov-verdicts tbody', new RegExp(`aclreject${DENIED + 1}`))
    t.match(await page.textContent('#ov-verdicts tbody'), `aclreject${DENIED + 1}`, `${DENIED + 1} denials by the acl plugin (publishes and the will)`)
    t.match(await page.textContent('#ov-health tbody'), /listeningokupstreamok/, 'health')
    t.equal(await page.isVisible('#ov-brokers'), false, 'no brokers table with one broker')
    t.not(await page.textContent('#ov-rtt-broker'), '–', 'a broker-leg round trip')
  })

  t.test('the charts: the traffic, second by second, with axes, units and a range switch', async (t) => {
    await pollUntil('four charts', 10_000, async () => (await charts()).length === 4 ? true : undefined)
    t.equal(await page.locator('.chart canvas').count(), 4, 'each drawn on a canvas')
    // The first event carries the window since the proxy started: it adds up to the traffic so far.
    const inBefore = PUBLISHED + DENIED
    const publish = await pollUntil(`${inBefore} PUBLISH in on the chart`, 10_000, async () => {
      const c = await chart(/^PUBLISH/)
      return total(column(c, 'in')) >= inBefore ? c : undefined
    })
    t.equal(total(column(publish, 'in')), inBefore, `PUBLISH in: ${PUBLISHED} delivered and ${DENIED} the acl refused`)
    t.equal(total(column(publish, 'out')), PUBLISHED, 'PUBLISH out: the deliveries to the subscriber')
    const connects = await chart(/^CONNECTs/)
    t.equal(total(column(connects, 'CONNECT')), 4, 'four CONNECTs')
    t.same(connects.labels.filter((l) => l.startsWith('refused')), ['refused NOT_AUTHORIZED'], 'refusals stacked by code')
    t.equal(total(column(connects, 'refused NOT_AUTHORIZED')), 1, 'the one refused CONNECT')
    const open = await chart(/^Connections/)
    t.equal(column(open, 'open').at(-1), 3, 'three connections open')
    t.equal(open.legend[1], '3', 'the legend shows the newest point')
    const seconds = open.data[0] ?? []
    t.ok(seconds.every((s, i) => i === 0 || (Number.isInteger(s) && (s as number) > (seconds[i - 1] as number))), 'one point per whole second, in order')

    // Then the feed appends a point a second: a burst of publishes in each of the next seconds.
    let visitor: MqttClient | undefined
    for (const [second, burst] of BURSTS.entries()) {
      const points = (await chart(/^PUBLISH/)).data[0]?.length ?? 0
      await pollUntil('a new point', 5000, async () => ((await chart(/^PUBLISH/)).data[0]?.length ?? 0) > points ? true : undefined)
      for (let i = 0; i < burst; i++) await pub1.publishAsync('console/data', `live ${i}`, { qos: 1 })
      if (UPDATING && second % 12 === 2) visitor = await clientV(t, proxy.url, 5, { clientId: `console-visitor-${second}` })
      if (second % 12 === 8) await visitor?.endAsync()
    }
    const live = BURSTS.reduce((a, b) => a + b, 0)
    await pollUntil('the subscriber got them all', 10_000, () => received() === PUBLISHED + live ? true : undefined)
    const after = await pollUntil(`${inBefore + live} PUBLISH in on the chart`, 10_000, async () => {
      const c = await chart(/^PUBLISH/)
      return total(column(c, 'in')) >= inBefore + live && total(column(c, 'out')) >= PUBLISHED + live ? c : undefined
    })
    t.equal(total(column(after, 'in')), inBefore + live, `then ${live} more in`)
    t.equal(total(column(after, 'out')), PUBLISHED + live, `and ${live} more out`)
    const rtt = await chart(/^Round trip/)
    t.ok(column(rtt, 'broker').some((v) => v !== null && v > 0), 'broker-leg round trips (QoS 1 PUBLISH to PUBACK)')
    t.ok(column(rtt, 'client').some((v) => v !== null && v > 0), 'client-leg round trips (QoS 1 delivery to PUBACK)')

    const drawn = await page.evaluate('[...window.__drawn]') as string[]
    for (const unit of ['connections', 'per second', 'ms']) t.ok(drawn.includes(unit), `an axis labelled "${unit}"`)
    t.ok(drawn.some((s) => /^\d\d:\d\d(:\d\d)?$/.test(s)), 'time labels on the x axis')
    await shot('overview', 'overview')
    // This proxy is younger than either range: the charts span all it has, from the second
    // before its first point (at least a minute), under a heading that says so.
    const sinceStart = (c: Chart): [number, number] => {
      const seconds = c.data[0] as number[]
      const newest = seconds.at(-1) as number
      return [Math.min(newest - 60, (seconds[0] as number) - 1), newest]
    }
    for (const range of ['3600', '900']) {
      await page.click(`#ov-range button[data-range="${range}"]`)
      const now = await charts()
      t.same(now.map((c) => c.x), now.map(sinceStart), `${range} s chosen: every chart shows all since the proxy started`)
      t.match(await page.textContent('#ov-range-title'), /^Since the proxy started at \d\d:\d\d:\d\d$/)
    }
    // Narrower window, narrower charts (two columns become one), and back.
    const wide = (await charts()).map((c) => c.width)
    await page.setViewportSize({ width: 700, height: 800 })
    await pollUntil('charts one column wide', 5000, async () => (await charts()).every((c) => c.width > 600 && c.width <= 680) ? true : undefined)
    await page.setViewportSize({ width: 1280, height: 800 })
    await pollUntil('charts two columns wide again', 5000, async () => (await charts()).every((c, i) => c.width === wide[i]) ? true : undefined)
    t.ok(wide.every((w) => w > 500 && w < 640), `they follow the window: ${wide.join(', ')} px at 1280, one column at 700`)
    t.same(await page.evaluate('window.__csp'), [], 'nothing blocked by the Content-Security-Policy')
    // Before the login the page's requests were answered 401: the browser logs those.
    t.same(consoleErrors.filter((e) => !/status of 401/.test(e)), [], 'no error in the browser console')
    t.same(errors, [], 'no script error')
  })

  t.test('the feed: the whole window in a page\'s first event, then only the new points', async (t) => {
    const events: Overview[] = []
    const controller = new AbortController()
    t.teardown(() => { controller.abort() })
    const res = await fetch(`${admin}/events`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: controller.signal })
    const decoder = new TextDecoder()
    let text = ''
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      text += decoder.decode(chunk, { stream: true })
      for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
        const data = /^data: (.*)$/m.exec(text.slice(0, end))?.[1]
        if (data !== undefined) events.push(JSON.parse(data) as Overview)
        text = text.slice(end + 2)
      }
      if (events.length >= 3) break
    }
    controller.abort()
    const [first, ...later] = events as [Overview, Overview, Overview]
    t.equal(first.series.whole, true, 'the first: the whole window')
    t.ok(first.series.t.length > 10, `${first.series.t.length} points, since the proxy started`)
    for (const e of later) {
      t.equal(e.series.whole, false, 'then parts to append')
      t.ok(e.series.t.length <= 2, `of the newest points only (${e.series.t.length})`)
    }
    const seconds = [...first.series.t, ...later.flatMap((e) => e.series.t)]
    const held = (await proxy.server.overview()).series.t
    t.same(seconds, held.filter((s) => s <= (seconds.at(-1) as number)), 'together: each point the proxy holds, once, in order')
  })

  t.test('the range switch, on a page fed an hour of points', async (t) => {
    const fed = await browser.newPage({ viewport: { width: 1280, height: 800 } })
    t.teardown(async () => { await fed.close() })
    await fed.addInitScript(PROBE)
    const fedErrors: string[] = []
    fed.on('pageerror', (err) => { fedErrors.push(err.message) })
    const overview = hourOfPoints(Math.floor(Date.now() / 1000))
    const newest = overview.series.t.at(-1) as number
    // One event, and the next attempt an hour away: the page keeps what it was sent.
    await fed.route('**/events', async (route) => {
      await route.fulfill({ status: 200, contentType: 'text/event-stream', body: `retry: 3600000\n\nevent: overview\ndata: ${JSON.stringify(overview)}\n\n` })
    })
    await fed.goto(admin)
    await pollUntil('four charts', 10_000, async () => (await charts(fed)).length === 4 ? true : undefined)
    t.same((await charts(fed)).map((c) => c.x), Array(4).fill([newest - 900, newest]), '15 min: the last 900 seconds, every chart')
    t.equal(await fed.textContent('#ov-range-title'), 'Last 15 minutes')
    await fed.click('#ov-range button[data-range="3600"]')
    t.same((await charts(fed)).map((c) => c.x), Array(4).fill([newest - 3600, newest]), '1 h: the last hour')
    t.equal(await fed.textContent('#ov-range-title'), 'Last hour')
    t.equal(await fed.getAttribute('#ov-range button[data-range="3600"]', 'class'), 'active')
    const connects = await chart(/^CONNECTs/, fed)
    const refused = connects.labels.filter((l) => l.startsWith('refused'))
    t.same([...refused].sort(), ['refused BAD_CREDENTIALS', 'refused NOT_AUTHORIZED'], 'a series per code')
    // Drawn stacked (the top series holds the sum), shown in the legend as each code's own count.
    const legend = (label: string): string | undefined => connects.legend[connects.labels.indexOf(label)]
    t.equal(legend('refused BAD_CREDENTIALS'), '1')
    t.equal(legend('refused NOT_AUTHORIZED'), '2')
    t.equal(column(connects, refused[0] as string).at(-1), 3, 'the top of the stack: both codes')
    // Several brokers: the overview lists them, a down one in capitals with its last error.
    t.equal(await fed.isVisible('#ov-brokers'), true, 'the brokers table, with several brokers')
    t.match(await fed.textContent('#ov-brokers tbody'), /mqtt:\/\/10\.0\.0\.1:1883up30mqtt:\/\/10\.0\.0\.2:1883DOWN0broker 10\.0\.0\.2:1883 unreachable: ECONNREFUSEDmqtt:\/\/10\.0\.0\.3:1883draining19/)
    await fed.screenshot({ path: `${artifactName('console-fed-hour')}.png` })
    t.same(fedErrors, [], 'no script error')
  })

  t.test('the clients table, one client\'s page, and a kick that closes it', async (t) => {
    await page.click('nav a[data-tab=clients]')
    await rowsAre('#client-table tbody tr', 3)
    await page.fill('#client-search', 'pub-1')
    await rowsAre('#client-table tbody tr', 1)
    t.match(await page.textContent('#client-table tbody'), /console-pub-1.*127\.0\.0\.1.*3\.1\.1/)
    await page.click('#client-table tbody tr')
    await until('#cp-title', 'console-pub-1')
    t.equal(await page.locator('#cp-live tbody tr').count(), 1, 'connected now')
    await page.click('#cp-kick')
    await until('#cp-message', 'closed')
    await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.clientId === 'console-pub-1' && l.reason === 'GUARD_ERR_ADMIN_KICK')
    await until('#cp-history tbody', /closed by an operator/)
    t.match(await page.textContent('#cp-history tbody'), /127\.0\.0\.1yesclosed \(GUARD_ERR_ADMIN_KICK\): closed by an operator/, 'how it ended')
    await shot('client')
    await page.fill('#client-search', '')
    await rowsAre('#client-table tbody tr', 2)
    t.pass('gone from the table')
    await page.fill('#client-search', 'pub-2')
    await rowsAre('#client-table tbody tr', 1)
    const row = await page.textContent('#client-table tbody') ?? ''
    t.match(row, /refused \(GUARD_ERR_NOT_AUTHORIZED\): not authorized, 20\d\d-/, `its last refusal, in words: ${row}`)
    await page.click('#client-table tbody tr')
    await until('#cp-title', 'console-pub-2')
    await until('#cp-history tbody', /refused/)
    t.equal(await page.locator('#cp-live tbody tr').count(), 1, 'console-pub-2: connected now, after its refused first try')
    await shot('client-pub-2', 'client')
    await page.fill('#client-search', '')
  })

  t.test('findings, each with its fix', async (t) => {
    await page.click('nav a[data-tab=findings]')
    await page.waitForSelector('#findings-list .finding[data-id=acl-denials]')
    const text = await page.textContent('#findings-list .finding[data-id=acl-denials]') ?? ''
    t.match(text, new RegExp(`${DENIED + 1} ACL denials.*${DENIED + 1} × publish of console/secret by console-pub-2`), 'the ACL denials, by the rule that decided them')
    await shot('findings')
  })

  t.test('a live trace started from the page: the packets in order, details, downloads', async (t) => {
    await page.click('nav a[data-tab=trace]')
    await page.fill('#tf-client', 'console-pub-2')
    await page.click('#trace-start')
    await until('#trace-state', /^trace [0-9a-f]+ running$/)
    await pub2.publishAsync('console/data', 'traced', { qos: 1 })
    await pub2.publishAsync('console/secret', 'refused', { qos: 1 }).catch(() => undefined)
    await rowsAre('#trace-rows .seq', 6)
    const rowsText = (await page.locator('#trace-rows .seq .arrow').allTextContents()).filter((a) => a !== '')
    t.same(rowsText.map((r) => r.replace(/#\d+/, '#N')), [
      'PUBLISH #N q1 console/data ──▶', // client → proxy
      'PUBLISH #N q1 console/data ──▶', // proxy → broker
      '◀── PUBACK #N rc 0x0', // broker → proxy
      '◀── PUBACK #N rc 0x0', // proxy → client
      'PUBLISH #N q1 console/secret REFUSED by acl ──▶',
      '◀── PUBACK #N rc 0x87 PROXY'
    ].slice(0, rowsText.length), 'client, proxy and broker lanes in order, the refusal marked')
    t.match(await page.textContent('#trace-rows'), /“traced”/, 'the payload, since this trace keeps it')
    await page.click('#trace-rows .seq >> nth=0')
    t.match(await page.textContent('#trace-detail'), /"type": "publish"/, 'details on click')
    await shot('trace', 'trace')
    const [json] = await Promise.all([page.waitForEvent('download'), page.click('#trace-json')])
    const saved = await readFile(await json.path(), 'utf8')
    t.equal(saved.trim().split('\n').length, 6, 'JSON lines: one per packet')
    const [pcap] = await Promise.all([page.waitForEvent('download'), page.click('#trace-pcap')])
    const bytes = await readFile(await pcap.path())
    t.equal(bytes.readUInt32LE(0), 0x0a0d0d0a, 'a pcapng file (section header block)')
    await page.click('#trace-stop')
    await until('#trace-state', /stopped$/)
  })

  t.test('the proxy restarts: the badge says disconnected, then live again', async (t) => {
    await page.click('nav a[data-tab=overview]')
    await proxy.stop()
    await until('#status', 'disconnected')
    t.pass('disconnected')
    proxy = await start()
    await until('#status', 'live', 15_000)
    await until('#ov-connections', '0')
    t.pass('live again, with the new process\'s numbers')
    await pollUntil('no page errors', 1000, () => errors.length === 0 ? true : undefined).catch(() => undefined)
    t.same(errors, [], 'no script error on the page')
    t.same(await page.evaluate('window.__csp'), [], 'nothing blocked by the Content-Security-Policy')
  })

  if (UPDATING) {
    t.test('the README\'s screenshots, taken again', async (t) => {
      writeManifest(docShots)
      t.equal(docShots.length, 3, docShots.join(', '))
      for (const file of docShots) t.ok(statSync(path.join(IMAGES, file)).size < 250_000, `${file}: small enough to commit`)
    })
  }
}
