// The HTTP hook client's parts (src/plugin/http-hook.ts, http-hook-parts.ts) with a fake clock:
// the breaker's states, the cache's TTL and bound, a table of answers and how each is read,
// body templates, the options' defaults; and one hook against a local server for joined questions.

import t from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Registry } from 'prom-client'
import { Breaker, TtlCache, readAnswer } from '../../src/plugin/http-hook-parts.js'
import { HttpHook, httpHookSchema, renderBody } from '../../src/plugin/http-hook.js'
import { parseWith } from '../../src/config/zod.js'
import { LogSink } from '../helpers/log-sink.js'
import { startHookServer } from '../helpers/hook-server.js'

t.test('breaker: closed, open after N failures in a row, half-open lets one probe, closes or opens again', async (t) => {
  let now = 1000
  const b = new Breaker({ failures: 3, openMs: 500 }, () => now)
  t.equal(b.failedOnce(), false)
  t.equal(b.failedOnce(), false)
  t.equal(b.succeeded(), false, 'a success in closed state just resets the count')
  t.equal(b.failedOnce(), false)
  t.equal(b.failedOnce(), false)
  t.equal(b.allow(), true)
  t.equal(b.failedOnce(), true, 'the third in a row opens it')
  t.equal(b.state, 'open')
  t.equal(b.allow(), false)
  now += 499
  t.equal(b.allow(), false, 'still open before openMs')
  now += 1
  t.equal(b.allow(), true, 'the probe')
  t.equal(b.state, 'half-open')
  t.equal(b.allow(), false, 'one probe at a time')
  t.equal(b.failedOnce(), true, 'a failed probe opens it again')
  t.equal(b.state, 'open')
  now += 500
  t.equal(b.allow(), true)
  t.equal(b.succeeded(), true, 'a good probe closes it')
  t.equal(b.state, 'closed')
  t.equal(b.allow(), true)
  const off = new Breaker(undefined)
  for (let i = 0; i < 100; i++) off.failedOnce()
  t.equal(off.allow(), true, 'breaker: false never opens')
})

t.test('cache: entries expire after their TTL; the oldest goes when full; peek sees an expired entry', async (t) => {
  let now = 0
  const c = new TtlCache<string>(3, () => now)
  c.set('a', 'A', 100)
  c.set('b', 'B', 10)
  c.set('zero', 'Z', 0)
  t.equal(c.get('zero'), undefined, 'TTL 0 is not stored')
  now = 10
  t.equal(c.get('b'), undefined, 'expired')
  t.equal(c.peek('a'), 'A')
  c.set('b', 'B', 100)
  c.set('c', 'C', 100)
  c.set('d', 'D', 100)
  t.equal(c.size, 3, 'bounded')
  t.equal(c.get('a'), undefined, 'the oldest went first')
  t.equal(c.get('d'), 'D')
  c.set('b', 'B2', 100) // set again: moves to the end
  c.set('e', 'E', 100)
  t.equal(c.get('c'), undefined)
  t.equal(c.get('b'), 'B2')
  now = 200
  t.equal(c.peek('b'), 'B2', 'peek ignores expiry')
  t.equal(c.get('b'), undefined)
  c.clear()
  t.equal(c.size, 0)
})

t.test('answers: EMQX 5 format, status codes, and clear causes', async (t) => {
  const json = 'application/json; charset=utf-8'
  const rows: Array<[number, string | null, string, unknown]> = [
    [200, json, '{"result":"allow","is_superuser":true}', { result: 'allow', superuser: true }],
    [200, json, '{"result":"allow"}', { result: 'allow', superuser: false }],
    [200, json, '{"result":"allow","is_superuser":"true"}', { result: 'allow', superuser: true }],
    [200, json, '{"result":"deny"}', { result: 'deny', superuser: false }],
    [200, json, '{"result":"ignore"}', { result: 'ignore' }],
    [200, json, '{}', { result: 'ignore' }],
    [200, null, '{"result":"deny"}', { result: 'deny' }],
    [204, null, '', { result: 'allow', superuser: false }],
    [403, json, '{"result":"allow"}', { result: 'ignore' }],
    [404, 'text/html', '<html>', { result: 'ignore' }],
    [500, json, '{"result":"allow"}', { cause: 'bad_status', detail: 'status 500' }],
    [302, null, '', { cause: 'bad_status', detail: 'status 302' }],
    [200, 'text/html; charset=utf-8', '<html>', { cause: 'bad_answer', detail: 'not JSON (content-type text/html)' }],
    [200, json, '{"result": allow', { cause: 'bad_answer', detail: /do not parse/ }],
    [200, json, '["allow"]', { cause: 'bad_answer', detail: 'not a JSON object' }],
    [200, json, '{"result":"yes"}', { cause: 'bad_answer', detail: /result "yes"/ }],
    [200, json, '{"result":"allow","is_superuser":1}', { cause: 'bad_answer', detail: /is_superuser/ }]
  ]
  for (const [status, type, body, want] of rows) t.match(readAnswer(status, type, body), want, `${status} ${type ?? '-'} ${body}`)
})

t.test('body templates: placeholders filled as strings, missing ones empty, JSON-escaped', async (t) => {
  t.equal(renderBody({ u: '${username}', p: 'x-${password}-y', n: '${qos}' }, { username: 'a"b', qos: '1' }), '{"u":"a\\"b","p":"x--y","n":"1"}')
})

t.test('options: defaults, denyCacheMs below cacheMs, an unknown placeholder named', async (t) => {
  const schema = httpHookSchema(['username'], { user: '${username}' })
  const o = parseWith(schema, { url: 'http://127.0.0.1:1/x' })
  t.match(o, { timeoutMs: 1000, cacheMs: 60_000, denyCacheMs: 10_000, maxConcurrent: 64, onError: 'deny', breaker: { failures: 5, openMs: 10_000 }, headers: {}, body: { user: '${username}' } })
  t.equal(parseWith(schema, { url: 'http://h/', cacheMs: 0 }).denyCacheMs, 0)
  t.equal(parseWith(schema, { url: 'http://h/', breaker: false }).breaker, undefined)
  t.throws(() => parseWith(schema, { url: 'http://h/', body: { a: '${password}' } }), /body\.a: unknown placeholder \$\{password\} \(known: \$\{username\}\)/)
  t.throws(() => parseWith(schema, { url: 'http://h/', onError: 'maybe' }), /onError: expected one of deny, allow, next/)
})

t.test('the same question in flight is asked once; the answer is cached', async (t) => {
  const server = await startHookServer()
  t.teardown(() => server.stop())
  const options = parseWith(httpHookSchema([], {}), { url: server.url })
  const hook = new HttpHook(options, { log: new LogSink().logger(), metrics: new Registry(), metricPrefix: 'mqtt_guard_test_http', name: 'test' })
  const [a, b] = await Promise.all([hook.ask('k', '{}'), hook.ask('k', '{}')])
  t.same([a, b], [{ result: 'allow', superuser: false }, { result: 'allow', superuser: false }])
  t.equal(server.requests.length, 1)
  t.same(hook.cached('k'), { result: 'allow', superuser: false })
  t.same(hook.diagnose(), [], 'nothing to report')
})

t.test('doctor: a service whose answers take over half of timeoutMs is reported slow', async (t) => {
  // A service of the test's own that answers allow after `delayMs`.
  let delayMs = 0
  const server = createServer((req, res) => {
    req.resume()
    req.on('end', () => { setTimeout(() => { res.writeHead(200, { 'content-type': 'application/json' }).end('{"result":"allow"}') }, delayMs) })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const options = parseWith(httpHookSchema([], {}), { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/authz`, timeoutMs: 1000 })
  const hook = new HttpHook(options, { log: new LogSink().logger(), metrics: new Registry(), metricPrefix: 'mqtt_guard_test_http', name: 'test' })
  t.same(await hook.ask('fast', '{}'), { result: 'allow', superuser: false })
  t.same(hook.diagnose(), [], 'a quick answer: nothing to report')
  delayMs = 600
  t.same(await hook.ask('slow', '{}'), { result: 'allow', superuser: false }, 'answered, within timeoutMs')
  const findings = hook.diagnose()
  t.match(findings, [{ id: 'test-http-slow', severity: 'warning', summary: /1 of 2 answers took more than half of timeoutMs \(1000 ms\)/ }])
  t.notOk(findings.some((f) => f.id === 'test-http-failing'), 'slow is not failing')
})
