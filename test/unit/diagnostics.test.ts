// The judgements behind `mqtt-guard doctor`, with a clock the test moves: what makes a client
// flap and which fix each cause gets, the window, refusals by code, starved subscribers,
// latency placement, certificate expiry, connections and descriptors against their limits, and
// Redis (down, read-only, a Cluster's failing slots).

import t from 'tap'
import { Diagnostics, FLAP_CONNECTS, WINDOW_MS, limitFindings, type Finding, type LiveState } from '../../src/observe/diagnostics.js'
import { topicMatches } from '../../src/wire/topic-filter.js'
import type { CloseReason } from '../../src/errors.js'
import type { RedisStatus } from '../../src/redis/watch.js'

function live (over: Partial<LiveState> = {}): LiveState {
  return {
    connections: [],
    maxConnections: 100,
    checks: { listening: true, upstream: true },
    roundTrips: { client: { sum: 0, count: 0 }, broker: { sum: 0, count: 0 } },
    certificates: [],
    plugins: [],
    ...over
  }
}

const byId = (findings: Finding[], id: string): Finding[] => findings.filter((f) => f.id === id)
const conn = (clientId: string, address = '10.0.0.1', keepalive = 30, admitted = true) => ({ clientId, address, keepalive, admitted, identified: true })
const end = (reason: CloseReason, clientIdleMs = 100) => ({ reason, detail: undefined, clientIdleMs })

t.test('flapping: the cause decides the fix', async (t) => {
  let now = 1_000_000
  const d = new Diagnostics(() => now)
  for (let i = 0; i < FLAP_CONNECTS; i++) d.closed(conn('shared', i % 2 === 0 ? '10.0.0.1' : '10.0.0.2'), end('broker-closed'))
  for (let i = 0; i < FLAP_CONNECTS; i++) d.closed(conn('sleepy', '10.0.0.3', 10), end('broker-closed', 16_000))
  for (let i = 0; i < FLAP_CONNECTS; i++) d.closed(conn('wrong-pw', '10.0.0.4', 30, false), end('GUARD_ERR_BAD_CREDENTIALS'))
  for (let i = 0; i < FLAP_CONNECTS; i++) d.closed(conn('polite'), end('client-disconnect'))
  for (let i = 0; i < FLAP_CONNECTS - 1; i++) d.closed(conn('few'), end('broker-closed'))
  const flaps = byId(d.report(live()), 'flapping-client')
  const of = (id: string): Finding | undefined => flaps.find((f) => f.summary.startsWith(`client ${id} `))
  t.match(of('shared'), { severity: 'warning', evidence: ['from 2 addresses: 10.0.0.1, 10.0.0.2', `${FLAP_CONNECTS} × closed by the broker`], fix: /share the client ID shared: give each device its own ID/ })
  t.match(of('sleepy'), { evidence: ['from 1 address: 10.0.0.3', `${FLAP_CONNECTS} × keepalive timeout: nothing from the client for 16 s with keepalive 10 s`], fix: /silent longer than its keepalive/ })
  t.match(of('wrong-pw'), { fix: /credentials the proxy refuses/ })
  t.equal(of('polite'), undefined, 'clients that say DISCONNECT each time are not flapping')
  t.equal(of('few'), undefined, `fewer than ${FLAP_CONNECTS} connects are not flapping`)
  now += WINDOW_MS + 1
  t.same(byId(d.report(live()), 'flapping-client'), [], 'forgotten after the window')
})

t.test('refusals: client-ID ones apart, the rest by code; a few are info, many a warning', async (t) => {
  const d = new Diagnostics()
  d.closed(conn('dup', '10.0.0.9', 30, false), end('GUARD_ERR_CLIENT_ID_REJECTED'))
  d.closed(conn('x', '10.0.0.8', 30, false), end('GUARD_ERR_BAD_CREDENTIALS'))
  d.closed(conn('x2', '10.0.0.8', 30, false), end('client-closed'))
  const findings = d.report(live())
  t.match(byId(findings, 'client-id-refusals'), [{ severity: 'warning', evidence: [/^1 × client ID refused .*: dup from 10\.0\.0\.9$/] }])
  t.match(byId(findings, 'connect-refusals'), [{ severity: 'info', summary: /^1 connect refused/, evidence: ['1 × GUARD_ERR_BAD_CREDENTIALS: x from 10.0.0.8'] }], 'a client that left before CONNACK is no refusal')
  for (let i = 0; i < FLAP_CONNECTS; i++) d.closed(conn(`y${i}`, '10.0.0.7', 30, false), end('broker-refused'))
  t.match(byId(d.report(live()), 'connect-refusals'), [{ severity: 'warning' }])
})

t.test('a subscriber starved by refused publishes, matched by its filter', async (t) => {
  const d = new Diagnostics()
  d.refusedPublish('sensor-1', 'plant/a/temp', 'acl')
  d.refusedPublish('sensor-2', 'plant/b/temp', 'acl')
  d.refusedPublish('sensor-3', 'office/temp', 'acl')
  const connections = [{ clientId: 'dashboard', address: '10.0.0.5', persistentSession: true, subscriptions: [{ filter: 'plant/+/temp', qos: 1 }], stalls: 0, stalledMs: 0, queueFullHolds: 0 }]
  t.match(byId(d.report(live({ connections })), 'subscriber-starved'), [{
    severity: 'warning', summary: 'dashboard subscribes to plant/+/temp, but 2 publishes it would match were refused',
    evidence: ['1 × plant/a/temp from sensor-1 refused by acl', '1 × plant/b/temp from sensor-2 refused by acl']
  }])
})

t.test('QoS 0 with a clean session, slow consumers', async (t) => {
  const connections = [
    { clientId: 'clean-0', address: 'a', persistentSession: false, subscriptions: [{ filter: 'a/#', qos: 0 }], stalls: 0, stalledMs: 0, queueFullHolds: 0 },
    { clientId: 'kept-0', address: 'b', persistentSession: true, subscriptions: [{ filter: 'a/#', qos: 0 }], stalls: 0, stalledMs: 0, queueFullHolds: 0 },
    { clientId: 'clean-1', address: 'c', persistentSession: false, subscriptions: [{ filter: 'a/#', qos: 1 }], stalls: 3, stalledMs: 1200, queueFullHolds: 2 }
  ]
  const findings = new Diagnostics().report(live({ connections }))
  t.match(byId(findings, 'qos0-clean-subscribers'), [{ severity: 'info', evidence: ['clean-0: a/#'] }])
  t.match(byId(findings, 'slow-consumers'), [{ severity: 'warning', evidence: ['clean-1 (c): 3 stalls, 1200 ms in all'] }])
  t.match(byId(findings, 'queue-full'), [{ severity: 'warning', evidence: ['clean-1 (c): held 2 times'] }])
})

t.test('latency placed on the leg that has it', async (t) => {
  const d = new Diagnostics()
  const legs = (client: number, broker: number): LiveState['roundTrips'] => ({ client: { sum: client * 10, count: 10 }, broker: { sum: broker * 10, count: 10 } })
  t.match(byId(d.report(live({ roundTrips: legs(0.3, 0.001) })), 'latency-placement'), [{ severity: 'warning', summary: /on the client side: 300 ms against 1 ms/ }])
  t.match(byId(d.report(live({ roundTrips: legs(0.002, 0.2) })), 'latency-placement'), [{ severity: 'warning', summary: /on the broker side/ }])
  t.match(byId(d.report(live({ roundTrips: legs(0.002, 0.001) })), 'latency-placement'), [{ severity: 'info' }])
  t.same(byId(d.report(live()), 'latency-placement'), [], 'nothing before the first sample')
})

t.test('certificates, health', async (t) => {
  const findings = new Diagnostics().report(live({
    certificates: [{ listener: 'mqtts://0.0.0.0:8883', subject: 'a', seconds: 5 * 86_400 }, { listener: 'wss', subject: 'b', seconds: -86_400 }, { listener: 'ok', subject: 'c', seconds: 90 * 86_400 }],
    checks: { listening: true, upstream: 'connect ECONNREFUSED 127.0.0.1:1', redis: false }
  }))
  t.match(byId(findings, 'certificate-expiry'), [{ severity: 'warning', summary: /expires in 5 days/ }, { severity: 'error', summary: /has expired/ }])
  t.match(byId(findings, 'upstream-unhealthy'), [{ severity: 'error', evidence: ['upstream check: connect ECONNREFUSED 127.0.0.1:1'] }])
  t.match(byId(findings, 'redis-unhealthy'), [{ severity: 'error' }])
})

t.test('connections and descriptors against their limits', async (t) => {
  t.match(limitFindings(80, 100, { limit: 100_000, open: 200 }), [{ id: 'connection-limit', severity: 'warning' }])
  t.same(limitFindings(79, 100, { limit: 100_000, open: 200 }), [])
  t.match(limitFindings(10, 100_000, { limit: 20_000, open: 40 }), [{ id: 'fd-limit', severity: 'info', summary: /holds about 9968 clients, fewer than limits.maxConnections 100000/ }])
  t.match(limitFindings(10, 100, { limit: 1000, open: 650 }), [{ id: 'fd-limit', severity: 'warning' }])
  t.match(limitFindings(10, 100, { limit: 1000, open: 950 }), [{ id: 'fd-limit', severity: 'error' }])
  t.same(limitFindings(10, 100, undefined), [], 'no /proc: nothing said')
})

t.test('topicMatches', async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['a/+/c', 'a/b/c', true], ['a/#', 'a', true], ['a/#', 'a/b/c', true], ['#', '$SYS/x', false], ['+/x', '$SYS/x', false],
    ['$SYS/#', '$SYS/x', true], ['a/b', 'a/b/c', false], ['a/+', 'a', false], ['$share/g/a/#', 'a/b', true], ['$share/g', 'g', false]
  ]
  for (const [filter, topic, want] of cases) t.equal(topicMatches(filter, topic), want, `${filter} ${want ? 'matches' : 'does not match'} ${topic}`)
})

t.test('redis: down, read-only, Cluster slots failing or suspected, each with evidence and a fix', async (t) => {
  const status = (over: Partial<RedisStatus>): RedisStatus => ({ topology: 'standalone', up: true, client: 'ready', role: 'master', readOnly: false, failovers: 0, ...over })
  const cluster = (state: 'ok' | 'fail', pfail: number, fail: number): RedisStatus['cluster'] => ({ state, slotsOk: 16384 - pfail - fail, slotsPfail: pfail, slotsFail: fail, knownNodes: 6 })
  const redisOf = (s: RedisStatus, where = 'redis://127.0.0.1:6379'): Finding[] => byId(new Diagnostics().report(live({ checks: { listening: true, upstream: true, redis: s.up && !s.readOnly }, redis: { status: s, where } })), 'redis-unhealthy')
  const rows: Array<[string, RedisStatus, Record<string, unknown> | undefined, RegExp[]]> = [
    ['healthy', status({}), undefined, []],
    ['standalone down', status({ up: false, client: 'reconnecting', role: 'unknown' }), { severity: 'error', summary: 'Redis is not connected', fix: /fix redis\.url/ }, [/standalone: redis:\/\/127\.0\.0\.1:6379/, /client: reconnecting/]],
    ['sentinel down', status({ topology: 'sentinel', up: false, client: 'reconnecting', role: 'unknown', failovers: 2, lastFailoverAt: '2026-01-01T00:00:00.000Z' }), { severity: 'error', fix: /SENTINEL get-master-addr-by-name/ }, [/failovers seen: 2, last at 2026/]],
    ['sentinels refuse the proxy', status({ topology: 'sentinel', up: false, client: 'connecting', role: 'unknown', lastError: 'NOAUTH: the Sentinels refused authentication: they require a password; set redis.sentinelPassword or redis.sentinelPasswordFile' }),
      { severity: 'error', fix: /Sentinels with requirepass get redis\.sentinelPassword/ }, [/^last error: NOAUTH: the Sentinels refused authentication/]],
    ['standalone URL on a replica', status({ role: 'replica', readOnly: true }), { severity: 'error', summary: /refuses the proxy's writes/, fix: /point redis\.url at the primary, or give the Sentinel form/ }, [/ROLE says replica/]],
    ['sentinel: a READONLY reply', status({ topology: 'sentinel', readOnly: true, readOnlySeenAt: '2026-01-01T00:00:01.000Z' }), { severity: 'error', fix: /reconnects on READONLY/ }, [/a READONLY reply at 2026-01-01T00:00:01/]],
    ['cluster slots failing', status({ topology: 'cluster', up: false, cluster: cluster('fail', 0, 5461) }), { severity: 'error', summary: /failing slots: 5461 of 16384/, fix: /CLUSTERDOWN/ }, [/cluster_state: fail/, /fail 5461/]],
    ['cluster ok, slots suspected', status({ topology: 'cluster', cluster: cluster('ok', 5461, 0) }), { severity: 'warning', summary: /5461 slots have a primary some node cannot reach/ }, [/pfail 5461/]],
    ['cluster unanswered', status({ topology: 'cluster', up: false, cluster: { state: 'unknown', slotsOk: 0, slotsPfail: 0, slotsFail: 0, knownNodes: 0 } }), { severity: 'error', summary: 'Redis is not connected', fix: /seed nodes in redis\.cluster/ }, []]
  ]
  for (const [name, s, want, evidence] of rows) {
    const found = redisOf(s)
    if (want === undefined) {
      t.same(found, [], `${name}: nothing to say`)
      continue
    }
    t.equal(found.length, 1, `${name}: one finding`)
    t.match(found[0], want, `${name}: summary, severity and fix`)
    for (const e of evidence) t.ok(found[0]?.evidence.some((line) => e.test(line)), `${name}: evidence ${String(e)}`)
    if (found[0]?.severity === 'error') t.match(found[0].fix, /fail policy/, `${name}: says what the plugins do meanwhile`)
  }
  t.notOk(redisOf(status({ up: false }), 'redis://:***@h:1').some((f) => f.evidence.join(' ').includes('secret')), 'no password in the evidence')
})
