// The acl plugin's HTTP authorization hook (EMQX 5's format) through the proxy in front of a
// private Mosquitto: publishes and SUBSCRIBE filters allowed or denied by the hook (3.1.1 and 5),
// the request's JSON, local rules first, the cache (a second publish to a topic makes no
// request), deliveries never asked, an auth hook's superuser, and a hook that is down (onError).

import t, { type Test } from 'tap'
import mqtt, { type MqttClient } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { startHookServer, type HookServer, type HookRequest } from '../helpers/hook-server.js'
import { clientV, nextMessage } from '../helpers/e2e-mqtt.js'
import { publishCode, reloadableProxy, suback } from '../helpers/reload.js'
import { parseExposition, valueOf } from '../helpers/metrics-scrape.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

/** Allows topics under ok/, denies the rest. */
const byTopic = (req: HookRequest): 'allow' | 'deny' => String(req.body['topic']).startsWith('ok/') ? 'allow' : 'deny'

async function setup (t: Test, http: Record<string, unknown> = {}, acl: Record<string, unknown> = {}, before: Array<Record<string, unknown>> = []): Promise<{ proxy: TestProxy, hook: HookServer }> {
  const hook = await startHookServer()
  t.teardown(() => hook.stop())
  hook.script = byTopic
  const proxy = await startProxy({ config: { upstream: mosquitto.url, plugins: [...before, { name: 'acl', ...acl, http: { url: hook.url, timeoutMs: 400, ...http } }] } })
  t.teardown(() => proxy.stop())
  return { proxy, hook }
}

/** A client straight on Mosquitto that sees every publish that reached the broker. */
async function watcher (t: Test): Promise<{ client: MqttClient, got: string[] }> {
  const client = await mqtt.connectAsync(mosquitto.url, { reconnectPeriod: 0 })
  t.teardown(async () => { await client.endAsync(true) })
  const got: string[] = []
  client.on('message', (topic) => { got.push(topic) })
  await client.subscribeAsync('#', { qos: 1 })
  return { client, got }
}

for (const version of [4, 5] as const) {
  const mode = `MQTT ${version === 5 ? '5' : '3.1.1'}`
  const fail = version === 5 ? 0x87 : 0x80

  t.test(`${mode}: publish and subscribe decided by the hook; the request's JSON`, async (t) => {
    const { proxy, hook } = await setup(t)
    const seen = await watcher(t)
    const c = await clientV(t, proxy.url, version, { clientId: `pub${version}` })
    const end = nextMessage(seen.client, 'ok/end')
    t.equal(await publishCode(c, 'no/a', 1), version === 5 ? 0x87 : 0, 'denied (3.1.1: acknowledged and dropped)')
    t.equal(await publishCode(c, 'ok/a', 1), 0)
    t.equal(await publishCode(c, 'ok/end', 1), 0)
    await end
    t.same(seen.got.filter((x) => x !== 'ok/end'), ['ok/a'], 'only the allowed publish reached the broker')
    t.match(hook.requests[0]?.body, { clientid: `pub${version}`, username: '', peerhost: '127.0.0.1', action: 'publish', topic: 'no/a', qos: '1', retain: 'false' })
    t.same(Object.keys(hook.requests[0]?.body ?? {}).sort(), ['action', 'clientid', 'peerhost', 'qos', 'retain', 'topic', 'username'])
    t.same(await suback(c, ['ok/x', 'no/x', 'ok/y/#'], 1), [1, fail, 1], 'SUBACK merged in order')
    t.match(hook.requests.find((r) => r.body['topic'] === 'no/x')?.body, { action: 'subscribe', qos: '1' })
    const denied = proxy.logs.lines.filter((l) => l.msg === 'acl denied')
    t.match(denied[0], { action: 'publish', topic: 'no/a', rule: 'http', ruleText: `${hook.url} said deny` })
    t.match(denied[1], { action: 'subscribe', deniedCount: 1, denied: [{ filter: 'no/x', rule: 'http' }] })
  })
}

t.test('cache: a second publish to the same topic makes no request; deliveries are never asked', async (t) => {
  const { proxy, hook } = await setup(t)
  const c = await clientV(t, proxy.url, 5, { clientId: 'cached' })
  t.same(await suback(c, ['ok/t'], 1), [1])
  const got = nextMessage(c, 'ok/t')
  t.equal(await publishCode(c, 'ok/t', 1), 0)
  await got
  const asked = hook.requests.length
  t.equal(asked, 2, 'one subscribe and one publish question; the delivery is not asked')
  t.equal(await publishCode(c, 'ok/t', 1), 0)
  t.equal(await publishCode(c, 'no/t', 1), 0x87)
  t.equal(await publishCode(c, 'no/t', 1), 0x87)
  t.equal(hook.requests.length, asked + 1, 'the second publish to each topic was answered from the cache')
  t.equal(await publishCode(c, 'ok/t', 0 as 1), 0)
  await hook.waitForRequests(asked + 2) // another QoS is another question (QoS 0: nothing to wait for but the request)
  t.equal(await publishCode(c, 'ok/t', 1), 0)
  t.equal(hook.requests.length, asked + 2)
  const families = parseExposition(await proxy.server.metrics.registry.metrics())
  t.ok((valueOf(families, 'mqtt_guard_acl_http_cache_lookups_total', { outcome: 'hit' }) ?? 0) >= 2)
  t.equal(valueOf(families, 'mqtt_guard_acl_http_requests_total', { result: 'deny' }), 1)
})

t.test('local rules decide first; what they do not decide goes to the hook', async (t) => {
  const { hook, proxy } = await setup(t, {}, { rules: [{ allow: 'publish', topic: 'local/#' }, { deny: 'publish', topic: 'ok/secret' }] })
  const c = await clientV(t, proxy.url, 5)
  t.equal(await publishCode(c, 'local/a', 1), 0)
  t.equal(await publishCode(c, 'ok/secret', 1), 0x87, 'a local deny is not overridden by the hook')
  t.equal(hook.requests.length, 0)
  t.equal(await publishCode(c, 'ok/other', 1), 0)
  t.equal(hook.requests.length, 1)
})

t.test("an auth hook's is_superuser: acl allows everything and asks nothing", async (t) => {
  const authHook = await startHookServer()
  t.teardown(() => authHook.stop())
  authHook.script = (req) => req.body['username'] === 'root' ? 'superuser' : 'allow'
  const { proxy, hook } = await setup(t, {}, {}, [{ name: 'auth', http: { url: authHook.url } }])
  hook.script = () => 'deny'
  const root = await clientV(t, proxy.url, 5, { username: 'root', password: 'x' })
  t.equal(await publishCode(root, 'any/thing', 1), 0)
  t.same(await suback(root, ['#'], 1), [1])
  t.equal(hook.requests.length, 0)
  const user = await clientV(t, proxy.url, 5, { username: 'user', password: 'x' })
  t.equal(await publishCode(user, 'any/thing', 1), 0x87)
  t.equal(hook.requests.length, 1)
})

t.test('the hook down: onError deny refuses with the cause logged; onError allow lets through', async (t) => {
  const down = await setup(t, { breaker: false })
  down.hook.script = () => 'server-error'
  const c = await clientV(t, down.proxy.url, 5)
  t.equal(await publishCode(c, 'ok/a', 1), 0x87)
  t.same(await suback(c, ['ok/a'], 1), [0x87])
  t.match(await down.proxy.logs.waitFor((l) => l.msg === 'acl http hook failed'), { cause: 'bad_status', detail: 'status 500', onError: 'deny', topic: 'ok/a' })
  t.match(down.proxy.logs.find((l) => l.msg === 'acl denied'), { rule: 'http', ruleText: /hook failed: bad_status/ })
  t.match((await down.proxy.server.diagnose()).findings.find((f) => f.id === 'acl-http-failing'), { evidence: [/bad_status 2/] })

  const open = await setup(t, { onError: 'allow', timeoutMs: 200 })
  open.hook.script = () => 'stall'
  const d = await clientV(t, open.proxy.url, 4)
  const started = Date.now()
  t.same(await suback(d, ['no/a'], 1), [1], 'allowed after timeoutMs')
  t.ok(Date.now() - started < 2500)
  t.match(await open.proxy.logs.waitFor((l) => l.msg === 'acl http hook failed'), { cause: 'timeout', onError: 'allow' })
})

t.test('a reload turns the hooks on and moves them; open connections follow', async (t) => {
  const [first, second] = [await startHookServer(), await startHookServer()]
  t.teardown(async () => { await first.stop(); await second.stop() })
  first.script = byTopic
  second.script = () => 'deny'
  const raw = (acl: Record<string, unknown>, auth: Record<string, unknown>): Record<string, unknown> =>
    ({ listen: '127.0.0.1:0', upstream: mosquitto.url, plugins: [{ name: 'auth', allowAnonymous: true, ...auth }, { name: 'acl', rules: [{ allow: 'publish', topic: 'local/#' }], ...acl }] })
  const proxy = await reloadableProxy(t, raw({}, {}))
  const c = await clientV(t, proxy.url, 5)
  t.equal(await publishCode(c, 'ok/a', 1), 0x87, 'no hook: default deny')
  const on = await proxy.reload(raw({ http: { url: first.url } }, { http: { url: first.url } }))
  t.match(on, { applied: true, refused: [] })
  t.equal(await publishCode(c, 'ok/a', 1), 0, 'the open connection asks the new hook')
  t.equal(first.requests.length, 1)
  t.match(await proxy.reload(raw({ http: { url: second.url } }, { http: { url: second.url } })), { applied: true })
  t.equal(await publishCode(c, 'ok/a', 1), 0x87, 'the moved hook decides, its own cache empty')
  t.equal(second.requests.length, 1)
  t.equal((await clientV(t, proxy.url, 5, { username: 'u', password: 'p' }).then(() => 0, (err: Error & { code?: number }) => err.code)), 0x86, 'auth asks the moved hook too')
  t.equal(second.requests.length, 2)
})
