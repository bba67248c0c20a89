// The auth plugin's HTTP source (EMQX 5's HTTP authentication format) through the proxy in
// front of a private Mosquitto, against a scripted hook service (test/helpers/hook-server.ts):
// allow / deny / ignore / 204 / 4xx, each failure (timeout, 500, HTML, garbage) answered by
// onError with its cause logged, the circuit breaker, maxConcurrent, the cache (counted by the
// hook's requests), MQTT 3.1.1 and 5, reload, doctor, and no password or secret in any log line.

import t, { type Test } from 'tap'
import { join } from 'node:path'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { startHookServer, type HookServer } from '../helpers/hook-server.js'
import { assertNoPasswordsLogged, login, loginCode, tempDir } from '../helpers/auth-clients.js'
import { parseExposition, valueOf } from '../helpers/metrics-scrape.js'
import type { LogLine } from '../helpers/log-sink.js'
import type { Plugin } from '../../src/plugin/api.js'
import { passwdCommand } from '../../plugins/auth/passwd.js'

const SECRET = 'hook-Secret-7f3k9q'
const PW = { ann: 'pw-Ann-k2j4', bob: 'pw-Bob-m8n1', new: 'pw-AnnNew-z5x6', file: 'pw-File-w3e2' }
const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const allLogs: LogLine[][] = []
const exposed: string[] = []

interface Setup { proxy: TestProxy, hook: HookServer, superusers: Map<string, boolean | undefined> }

async function setup (t: Test, http: Record<string, unknown> = {}, auth: Record<string, unknown> = {}): Promise<Setup> {
  const hook = await startHookServer()
  t.teardown(() => hook.stop())
  const superusers = new Map<string, boolean | undefined>()
  const recorder: Plugin = {
    name: 'identity-recorder',
    out: { connack: (conn) => { const who = conn.identity; if (who?.username !== undefined) superusers.set(who.username, who.superuser) } }
  }
  const proxy = await startProxy({
    config: {
      upstream: mosquitto.url,
      plugins: [{ name: 'auth', bruteForce: false, ...auth, http: { url: hook.url, timeoutMs: 400, headers: { authorization: `Bearer ${SECRET}` }, ...http } }]
    },
    extraPlugins: [recorder]
  })
  t.teardown(async () => {
    exposed.push(await proxy.server.metrics.registry.metrics())
    await proxy.stop()
  })
  allLogs.push(proxy.logs.lines)
  return { proxy, hook, superusers }
}

/** A login with a fixed client ID (the default body holds it, so the cache key does too). */
async function codeAs (t: Test, url: string, version: 4 | 5, username: string, password: string, clientId: string): Promise<number | undefined> {
  const result = await login(t, url, version, { username, password, clientId })
  if (result.ok) { result.client.end(true); return 0 }
  return result.code
}

const refusals = (proxy: TestProxy): LogLine[] => proxy.logs.lines.filter((l) => l.msg === 'auth refused')

for (const version of [4, 5] as const) {
  const code = (v4: number, v5: number): number => version === 5 ? v5 : v4

  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: allow, deny, superuser; the request's JSON and headers`, async (t) => {
    const { proxy, hook, superusers } = await setup(t)
    hook.script = (req) => req.body['username'] === 'ann' ? 'allow' : req.body['username'] === 'root' ? 'superuser' : 'deny'
    t.equal(await loginCode(t, proxy.url, version, 'ann', PW.ann), 0)
    const first = hook.requests[0]
    t.same(Object.keys(first?.body ?? {}).sort(), ['clientid', 'password', 'peerhost', 'username'])
    t.match(first?.body, { username: 'ann', password: PW.ann, peerhost: '127.0.0.1', clientid: /^mqttjs_/ })
    t.match(first?.headers, { 'content-type': 'application/json', authorization: `Bearer ${SECRET}` })
    t.equal(first?.path, '/mqtt/auth')
    t.equal(superusers.get('ann'), false)
    t.equal(await loginCode(t, proxy.url, version, 'root', PW.bob), 0)
    t.equal(superusers.get('root'), true, 'is_superuser reaches conn.identity')
    t.equal(await loginCode(t, proxy.url, version, 'bob', PW.bob), code(4, 0x86), 'hook deny: bad credentials')
    t.match(refusals(proxy).at(-1), { reason: 'http-denied', username: 'bob' })
  })

  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: a failing hook answers 3 / 0x88 (onError deny) with the cause logged`, async (t) => {
    const { proxy, hook } = await setup(t, { breaker: false })
    const rows: Array<[string, string, RegExp]> = [
      ['server-error', 'bad_status', /status 500/],
      ['html', 'bad_answer', /not JSON \(content-type text\/html\)/],
      ['garbage', 'bad_answer', /do not parse/]
    ]
    for (const [reply, cause, detail] of rows) {
      hook.script = () => reply as 'html'
      t.equal(await loginCode(t, proxy.url, version, `u-${reply}`, PW.ann), code(3, 0x88), reply)
      const failed = await proxy.logs.waitFor((l) => l.msg === 'auth http hook failed' && l.username === `u-${reply}`)
      t.match(failed, { cause, detail, onError: 'deny', hook: hook.url })
      t.match(refusals(proxy).at(-1), { reason: 'auth-service-unavailable', username: `u-${reply}` })
    }
  })
}

t.test('ignore, 4xx and onError next go to the next source: none left is an unknown user; 204 allows', async (t) => {
  const dir = await tempDir(t, 'mqtt-guard-auth-http-')
  const file = join(dir, 'passwd')
  t.equal(await passwdCommand([file, 'fay', '--password', PW.file]), 0)
  const { proxy, hook } = await setup(t, { onError: 'next', breaker: false }, { passwordFile: file })
  hook.script = (req) => req.body['username'] === 'ivy' ? 'ignore' : req.body['username'] === 'fred' ? 'forbidden' : req.body['username'] === 'sam' ? 'server-error' : 'no-content'
  t.equal(await loginCode(t, proxy.url, 5, 'fay', PW.file), 0, 'the password file decides first')
  t.equal(await loginCode(t, proxy.url, 5, 'fay', PW.ann), 0x86, 'a wrong password in the file is not asked of the hook')
  t.equal(hook.requests.length, 0)
  t.equal(await loginCode(t, proxy.url, 5, 'ivy', PW.ann), 0x86, 'ignore')
  t.equal(await loginCode(t, proxy.url, 4, 'fred', PW.ann), 4, '403 is ignore (as EMQX)')
  t.equal(await loginCode(t, proxy.url, 5, 'sam', PW.ann), 0x86, 'a 500 with onError next')
  t.same(refusals(proxy).slice(-3).map((l) => l.reason), ['unknown-user', 'unknown-user', 'unknown-user'])
  t.equal(await loginCode(t, proxy.url, 5, 'nia', PW.ann), 0, '204 allows')
})

t.test('onError allow admits, logged at warn', async (t) => {
  const { proxy, hook } = await setup(t, { onError: 'allow', breaker: false })
  hook.script = () => 'server-error'
  t.equal(await loginCode(t, proxy.url, 5, 'ann', PW.ann), 0)
  t.match(await proxy.logs.waitFor((l) => l.msg === 'auth http hook failed'), { level: 40, cause: 'bad_status', onError: 'allow' })
})

t.test('a stalled hook costs at most timeoutMs per CONNECT', async (t) => {
  const { proxy, hook } = await setup(t, { timeoutMs: 300, breaker: false })
  hook.script = () => 'stall'
  for (const version of [4, 5] as const) {
    const started = Date.now()
    t.equal(await loginCode(t, proxy.url, version, `slow${version}`, PW.ann), version === 5 ? 0x88 : 3)
    const took = Date.now() - started
    t.ok(took >= 290 && took < 2500, `answered after ${took} ms (timeoutMs 300, the hook stalls 5 s)`)
  }
  t.match(await proxy.logs.waitFor((l) => l.msg === 'auth http hook failed'), { cause: 'timeout', detail: 'no answer within 300 ms' })
})

t.test('the circuit opens after N failures, answers at once without a request, then closes again', async (t) => {
  const { proxy, hook } = await setup(t, { breaker: { failures: 3, openMs: 1500 } })
  hook.script = () => 'server-error'
  for (let i = 0; i < 3; i++) t.equal(await loginCode(t, proxy.url, 5, `ann${i}`, PW.ann), 0x88)
  t.match(await proxy.logs.waitFor((l) => l.msg === 'http hook: circuit opened'), { failures: 3, cause: 'bad_status', openMs: 1500 })
  hook.script = () => 'allow'
  t.equal(await loginCode(t, proxy.url, 4, 'ann-open', PW.ann), 3, 'circuit open: onError deny')
  t.equal(hook.requests.length, 3, 'no request while open')
  t.match(await proxy.logs.waitFor((l) => l.msg === 'auth http hook failed' && l.username === 'ann-open'), { cause: 'circuit_open' })
  const findings = (await proxy.server.diagnose()).findings
  t.match(findings.find((f) => f.id === 'auth-http-failing'), { severity: 'error', summary: /circuit open/ })
  // After openMs one CONNECT is the probe; until then each is refused at once (bounded loop).
  const deadline = Date.now() + 10_000
  let got: number | undefined
  while ((got = await loginCode(t, proxy.url, 5, 'ann-probe', PW.ann)) !== 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.equal(got, 0, 'admitted once the probe succeeded')
  await proxy.logs.waitFor((l) => l.msg === 'http hook: circuit closed')
  const text = await proxy.server.metrics.registry.metrics()
  const families = parseExposition(text)
  t.equal(valueOf(families, 'mqtt_guard_auth_http_circuit_state'), 0)
  t.ok((valueOf(families, 'mqtt_guard_auth_http_requests_total', { result: 'circuit_open' }) ?? 0) >= 1)
  t.equal(valueOf(families, 'mqtt_guard_auth_http_requests_total', { result: 'bad_status' }), 3)
  t.ok((valueOf(families, 'mqtt_guard_auth_http_request_duration_seconds_count') ?? 0) >= 4)
})

t.test('over maxConcurrent requests in flight, a CONNECT is answered at once by onError', async (t) => {
  const { proxy, hook } = await setup(t, { maxConcurrent: 1, timeoutMs: 3000, breaker: false })
  hook.script = (req) => req.body['username'] === 'slow' ? 'stall' : 'allow'
  const slow = login(t, proxy.url, 5, { username: 'slow', password: PW.ann })
  await hook.waitForRequests(1)
  const started = Date.now()
  t.equal(await loginCode(t, proxy.url, 5, 'quick', PW.bob), 0x88)
  t.ok(Date.now() - started < 2000, 'not queued behind the stalled request')
  t.equal(hook.requests.length, 1, 'the second request never went out')
  t.match(await proxy.logs.waitFor((l) => l.msg === 'auth http hook failed' && l.username === 'quick'), { cause: 'in_flight_limit' })
  t.match(await slow, { ok: false }, 'the stalled one times out after 3 s')
})

t.test('answers are cached; a new password is asked again; deny answers for denyCacheMs', async (t) => {
  const { proxy, hook } = await setup(t, { cacheMs: 60_000, denyCacheMs: 0 })
  hook.script = (req) => req.body['password'] === PW.bob ? 'deny' : 'allow'
  t.equal(await codeAs(t, proxy.url, 5, 'ann', PW.ann, 'c1'), 0)
  t.equal(await codeAs(t, proxy.url, 4, 'ann', PW.ann, 'c1'), 0)
  t.equal(hook.requests.length, 1, 'the second CONNECT was answered from the cache')
  t.equal(await codeAs(t, proxy.url, 5, 'ann', PW.new, 'c1'), 0)
  t.equal(hook.requests.length, 2, 'a changed password is asked again')
  t.equal(await codeAs(t, proxy.url, 5, 'ann', PW.bob, 'c1'), 0x86)
  t.equal(await codeAs(t, proxy.url, 5, 'ann', PW.bob, 'c1'), 0x86)
  t.equal(hook.requests.length, 4, 'denyCacheMs 0: deny answers are not kept')
  await proxy.server.reload()
  t.equal(await codeAs(t, proxy.url, 5, 'ann', PW.ann, 'c1'), 0)
  t.equal(hook.requests.length, 5, 'SIGHUP empties the cache')
  const families = parseExposition(await proxy.server.metrics.registry.metrics())
  t.equal(valueOf(families, 'mqtt_guard_auth_http_cache_lookups_total', { outcome: 'hit' }), 1)
})

t.test('deny answers are cached for denyCacheMs', async (t) => {
  const { proxy, hook } = await setup(t, { denyCacheMs: 60_000 })
  hook.script = () => 'deny'
  t.equal(await codeAs(t, proxy.url, 5, 'ann', PW.ann, 'c2'), 0x86)
  t.equal(await codeAs(t, proxy.url, 5, 'ann', PW.ann, 'c2'), 0x86)
  t.equal(hook.requests.length, 1)
})

t.test('options: http alone is enough; a bad URL, a user in the URL, an unknown placeholder are refused', async (t) => {
  await t.rejects(startProxy({ config: { upstream: mosquitto.url, plugins: [{ name: 'auth', http: { url: 'ftp://x/' } }] } }), /plugins\[0\]\.http\.url: expected an http:\/\/ or https:\/\/ URL/)
  await t.rejects(startProxy({ config: { upstream: mosquitto.url, plugins: [{ name: 'auth', http: { url: 'http://u:p@127.0.0.1/' } }] } }), /plugins\[0\]\.http\.url: a user or password in the URL is not accepted/)
  await t.rejects(startProxy({ config: { upstream: mosquitto.url, plugins: [{ name: 'auth', http: { url: 'http://127.0.0.1/', body: { u: '${user}' } } }] } }), /plugins\[0\]\.http\.body\.u: unknown placeholder \$\{user\}/)
})

t.test('a body template: only the fields it names, placeholders filled', async (t) => {
  const { proxy, hook } = await setup(t, { body: { user: '${username}', secret: 'pw=${password}', fixed: 'x' } })
  t.equal(await loginCode(t, proxy.url, 5, 'ann', PW.ann), 0)
  t.same(hook.requests[0]?.body, { user: 'ann', secret: `pw=${PW.ann}`, fixed: 'x' })
})

t.test('no password and no hook secret in any log line or metric', async (t) => {
  t.ok(allLogs.length >= 10)
  assertNoPasswordsLogged(t, allLogs.flat(), [...Object.values(PW), SECRET])
  t.ok(exposed.length >= 10)
  t.notOk(exposed.some((text) => [...Object.values(PW), SECRET].some((p) => text.includes(p))), 'no secret in the metrics')
})
