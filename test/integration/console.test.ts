// The web console in a real browser (playwright-core driving Debian's chromium, headless; no
// browser download) against a proxy in front of a real Mosquitto: the token login, overview
// numbers that match known traffic, a client in the table, its page, and a kick that closes
// it; the findings; the live badge going "disconnected" while the proxy restarts and "live"
// again after. A screenshot of each page is kept as a test artifact.

import t, { type Test } from 'tap'
import { existsSync } from 'node:fs'
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

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const TOKEN = 'pw-console-token-0123456789'
const PUBLISHED = 40
const DENIED = 5

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
  const errors: string[] = []
  page.on('pageerror', (err) => { errors.push(err.message) })
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

  const shot = async (name: string): Promise<void> => {
    await page.screenshot({ path: `${artifactName(`console-${name}`)}.png`, fullPage: true })
  }

  /** Known traffic: a subscriber and two publishers, PUBLISHED messages delivered, DENIED refused. */
  async function traffic (t: Test): Promise<{ pub2: MqttClient, refused: number | undefined }> {
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
    return { pub2, refused }
  }

  // The clients belong to the whole file: the later tests look at them and kick one.
  const { pub2, refused } = await traffic(t)

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
    t.not(await page.textContent('#ov-rtt-broker'), '–', 'a broker-leg round trip')
    await shot('overview')
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
    await shot('trace')
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
  })
}
