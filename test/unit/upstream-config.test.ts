// The `upstream` setting with several brokers (issue 21): the forms it takes (a list of URLs
// or objects with weights, TLS files, serverReference; a comma-separated string from the file,
// --upstream or MQTT_GUARD_UPSTREAM), the defaults a pool gets, and every refusal naming its key
// and the accepted forms. One URL and the old single object still mean one broker (kind mqtt).

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import t from 'tap'
import { buildConfig, type UpstreamSpec } from '../../src/config/config.js'
import { configErrorOf } from '../helpers/config-error.js'


const upstream = (raw: unknown, configFile?: string): UpstreamSpec => buildConfig({ upstream: raw }, {}, configFile).upstream
const refusal = (raw: unknown): string => configErrorOf(() => upstream(raw))

t.test('a list of brokers is a pool with the defaults', async (t) => {
  const spec = upstream({ brokers: ['mqtt://b1.example:1883', { url: 'mqtt://b2.example', weight: 3, serverReference: 'proxy-2.example:1883' }] })
  t.match(spec, {
    kind: 'pool',
    balance: 'client-id',
    failover: 'reconnect',
    healthCheck: { intervalMs: 2000, timeoutMs: 1000, failures: 2, recoveries: 2 }
  })
  if (spec.kind !== 'pool') return
  t.match(spec.brokers[0], { url: 'mqtt://b1.example:1883', host: 'b1.example', port: 1883, weight: 1, serverReference: undefined, tls: undefined })
  t.match(spec.brokers[1], { url: 'mqtt://b2.example', host: 'b2.example', port: 1883, weight: 3, serverReference: 'proxy-2.example:1883' }, 'the default port is 1883')
  const tuned = upstream({ brokers: [{ url: 'mqtt://a:1883', serverReference: 'a.example:1883' }, 'mqtt://b:1883'], balance: 'least-connections', failover: 'redirect', healthCheck: { intervalMs: 500, timeoutMs: 200 } })
  t.match(tuned, { kind: 'pool', balance: 'least-connections', failover: 'redirect', healthCheck: { intervalMs: 500, timeoutMs: 200, failures: 2, recoveries: 2 } }, 'given values over the defaults, the rest defaulted')
  for (const balance of ['client-id', 'round-robin', 'least-connections', 'first']) t.match(upstream({ brokers: ['mqtt://a:1883'], balance }), { kind: 'pool', balance }, `balance ${balance} is accepted`)
  t.match(upstream({ brokers: ['mqtt://[::1]:1883'] }), { kind: 'pool', brokers: [{ host: '::1', port: 1883 }] }, 'an IPv6 broker')
})

t.test('a comma-separated string is a pool with the defaults; one URL is one broker', async (t) => {
  const list = 'mqtt://b1.example:1883, mqtt://b2.example:1884,mqtt://b3.example:1885'
  for (const [where, spec] of [['the file', upstream(list)], ['--upstream', buildConfig({}, { upstream: list }).upstream]] as const) {
    t.match(spec, { kind: 'pool', balance: 'client-id', failover: 'reconnect', healthCheck: { intervalMs: 2000, timeoutMs: 1000, failures: 2, recoveries: 2 } }, `${where}: a pool`)
    if (spec.kind === 'pool') t.same(spec.brokers.map((b) => `${b.host}:${b.port}/${b.weight}`), ['b1.example:1883/1', 'b2.example:1884/1', 'b3.example:1885/1'], `${where}: the brokers, trimmed, weight 1`)
  }
  t.match(buildConfig({}, { upstream: 'mqtt://b1.example:1883,mqtt://b2.example:1884' }).upstream, { kind: 'pool' }, 'without spaces too')
  t.match(upstream('mqtt://one.example:1883'), { kind: 'mqtt', host: 'one.example', port: 1883 }, 'a single URL: kind mqtt')
  t.match(buildConfig({}, { upstream: 'mqtt://one.example:1883' }).upstream, { kind: 'mqtt', host: 'one.example', port: 1883 }, 'a single --upstream URL: kind mqtt')
  t.match(upstream({ url: 'mqtt://one.example:1884', proxyProtocol: 2 }), { kind: 'mqtt', host: 'one.example', port: 1884, proxyProtocol: 2 }, 'the old single object: kind mqtt')
  t.same(upstream('embedded'), { kind: 'embedded' })
  t.same(buildConfig({}, {}).upstream, { kind: 'embedded' }, 'nothing given: embedded')
  t.match(refusal('mqtt://b1.example:1883,'), /^upstream: an empty entry in the list .*mqtt:\/\/HOST:PORT/, 'a trailing comma is refused')
  t.match(refusal('mqtt://b1.example:1883,http://b2.example'), /^upstream\.brokers\[1\]: unsupported scheme "http:": expected mqtt: or mqtts:/, 'each URL of the string is checked, its place named')
})

t.test('TLS files of an mqtts:// broker resolve against the config file', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-upstream-config-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  await writeFile(path.join(dir, 'ca.pem'), 'not checked here\n')
  const spec = upstream({ brokers: ['mqtt://b1.example:1883', { url: 'mqtts://b2.example', tls: { ca: './ca.pem', servername: 'b2' } }] }, path.join(dir, 'guard.yaml'))
  if (spec.kind !== 'pool') return t.fail(`expected a pool, got ${spec.kind}`)
  t.match(spec.brokers[1], { port: 8883, tls: { ca: path.join(dir, 'ca.pem'), servername: 'b2', rejectUnauthorized: true } }, 'mqtts: port 8883, the file resolved, certificates checked')
  t.equal(spec.brokers[0]?.tls, undefined, 'mqtt:// has no TLS')
  t.match(configErrorOf(() => upstream({ brokers: [{ url: 'mqtts://b2.example', tls: { ca: './missing.pem' } }] }, path.join(dir, 'guard.yaml'))), /^upstream\.brokers\[0\]\.tls\.ca: file .*missing\.pem does not exist/)
})

t.test('refusals name the key and the accepted forms', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['an empty list', { brokers: [] }, /^upstream\.brokers: names no broker: give at least one mqtt:\/\/HOST:PORT or mqtts:\/\/HOST:PORT/],
    ['a URL that does not parse', { brokers: ['mqtt://b1.example:1883', 'nowhere'] }, /^upstream\.brokers\[1\]: expected .*mqtt:\/\/HOST:PORT or mqtts:\/\/HOST:PORT, got "nowhere"/],
    ['an http:// URL', { brokers: ['mqtt://b1.example:1883', 'http://b2.example:80'] }, /^upstream\.brokers\[1\]: unsupported scheme "http:": expected mqtt: or mqtts:/],
    ['an http:// URL in an object', { brokers: [{ url: 'http://b2.example:80' }] }, /^upstream\.brokers\[0\]: unsupported scheme "http:"/],
    ['no host', { brokers: ['mqtt://b1.example:1883', 'mqtt://'] }, /^upstream\.brokers\[1\]: /],
    ['the same broker twice', { brokers: ['mqtt://b1.example:1883', 'mqtt://b2.example:1883', 'mqtt://b1.example:1883'] }, /^upstream\.brokers\[2\]: mqtt:\/\/b1\.example:1883 is the same broker as upstream\.brokers\[0\] .*list each broker once, with a weight/],
    ['the same broker, the host in capitals', { brokers: ['mqtt://localhost:1883', 'mqtt://LOCALHOST:1883'] }, /^upstream\.brokers\[1\]: mqtt:\/\/LOCALHOST:1883 is the same broker as upstream\.brokers\[0\] \(localhost:1883\)/],
    ['the same broker, the default port spelled out', { brokers: ['mqtt://localhost', 'mqtt://localhost:1883'] }, /^upstream\.brokers\[1\]: .*same broker as upstream\.brokers\[0\]/],
    ['an unknown balance', { brokers: ['mqtt://b1.example:1883'], balance: 'random' }, /^upstream\.balance: expected one of client-id, round-robin, least-connections, first, got "random"/],
    ['an unknown failover', { brokers: ['mqtt://b1.example:1883'], failover: 'migrate' }, /^upstream\.failover: expected one of .*reconnect.*redirect.*, got "migrate"/],
    ['embedded inside a list', { brokers: ['mqtt://b1.example:1883', 'embedded'] }, /^upstream\.brokers\[1\]: the embedded broker cannot be one of several; give mqtt:\/\/HOST:PORT or mqtts:\/\/HOST:PORT/],
    ['embedded inside a list, as an object', { brokers: [{ url: 'embedded' }, 'mqtt://b1.example:1883'] }, /^upstream\.brokers\[0\]: the embedded broker cannot be one of several/],
    ['redirect without any serverReference', { brokers: ['mqtt://b1.example:1883', 'mqtt://b2.example:1883'], failover: 'redirect' }, /^upstream\.failover: redirect .*no broker has one: give upstream\.brokers\[i\]\.serverReference.*or use reconnect/],
    ['timeoutMs longer than intervalMs', { brokers: ['mqtt://b1.example:1883'], healthCheck: { intervalMs: 500, timeoutMs: 600 } }, /^upstream\.healthCheck\.timeoutMs: 600 is longer than intervalMs 500/],
    ['timeoutMs longer than the default intervalMs', { brokers: ['mqtt://b1.example:1883'], healthCheck: { timeoutMs: 2500 } }, /^upstream\.healthCheck\.timeoutMs: 2500 is longer than intervalMs 2000/],
    ['intervalMs too short', { brokers: ['mqtt://b1.example:1883'], healthCheck: { intervalMs: 10 } }, /^upstream\.healthCheck\.intervalMs: expected an integer >= 100, got 10/],
    ['failures 0', { brokers: ['mqtt://b1.example:1883'], healthCheck: { failures: 0 } }, /^upstream\.healthCheck\.failures: expected an integer >= 1/],
    ['an unknown healthCheck key', { brokers: ['mqtt://b1.example:1883'], healthCheck: { interval: 500 } }, /^upstream\.healthCheck\.interval: unknown key \(expected one of intervalMs, timeoutMs, failures, recoveries\)/],
    ['TLS files for a non-mqtts broker', { brokers: ['mqtt://b1.example:1883', { url: 'mqtt://b2.example:1883', tls: { ca: 'ca.pem' } }] }, /^upstream\.brokers\[1\]\.tls: TLS files given for mqtt:\/\/b2\.example:1883, which is not mqtts:\/\//],
    ['weight 0', { brokers: [{ url: 'mqtt://b1.example:1883', weight: 0 }] }, /^upstream\.brokers\[0\]\.weight: expected an integer >= 1 and <= 1000, got 0/],
    ['an unknown key in a broker', { brokers: [{ url: 'mqtt://b1.example:1883', wieght: 2 }] }, /^upstream\.brokers\[0\]\.wieght: unknown key \(expected one of url, tls, weight, proxyProtocol, serverReference\)/],
    ['brokers not a list', { brokers: 'mqtt://b1.example:1883' }, /^upstream\.brokers: expected a list of brokers/]
  ]
  for (const [name, raw, expected] of cases) {
    let message: string
    try {
      message = refusal(raw)
    } catch (err) {
      t.fail(`${name}: ${(err as Error).message}`)
      continue
    }
    t.match(message, expected, `${name}: "${message}"`)
  }
})

t.test('a refusal offers only forms that are accepted there', async (t) => {
  // Inside a list the embedded broker is refused, so a bad URL there must not be told it could be "embedded".
  const badUrl = refusal({ brokers: ['mqtt://b1.example:1883', 'nowhere'] })
  t.notMatch(badUrl, /embedded/, `a bad URL in a list is not offered "embedded": "${badUrl}"`)
  // The advice on redirect names the modes that work without a serverReference.
  const redirect = refusal({ brokers: ['mqtt://b1.example:1883', 'mqtt://b2.example:1883'], failover: 'redirect' })
  t.match(redirect, /or use reconnect or rehome$/, `redirect without serverReference suggests the other modes: "${redirect}"`)
})
