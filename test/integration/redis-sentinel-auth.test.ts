// Sentinels with a password of their own (requirepass, and sentinel-pass between them; the data
// node has none), real servers on loopback: the proxy with the embedded broker works through
// them with redis.sentinelPassword and with redis.sentinelPasswordFile. Without the password,
// or with a wrong one, /healthz says Redis is down and why, doctor says so, and the log line
// says the Sentinels refused authentication. The password reaches no log line.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { cleanupAll, pollUntil } from '../helpers/processes.js'
import { startRedisSentinel, type RedisSentinelSet } from '../helpers/redis-topologies.js'
import { fleetProxy, metricsUntil, rand, retainedRoundTrip, type FleetProxy } from '../helpers/redis-fleet.js'
import { valueOf } from '../helpers/metrics-scrape.js'

t.teardown(cleanupAll)
const LIMIT = { timeout: 60_000 }
const PW = 'pw-Sentinel-4uth7'

let set: RedisSentinelSet
// Two Sentinels: ready() waits until each sees the other, which needs sentinel-pass.
t.before(async () => { set = await startRedisSentinel({ sentinelPassword: PW, sentinels: 2, replicas: 0 }) })
t.teardown(async () => { await set?.stop() })

const form = (prefix: string, auth: Record<string, unknown>): Record<string, unknown> =>
  ({ sentinels: set.sentinels.map((s) => `${s.host}:${s.port}`), name: set.name, keyPrefix: `${prefix}-${rand()}:`, ...auth })

function noPasswordLogged (t: Test, p: FleetProxy): void {
  t.notOk(JSON.stringify(p.proxy.logs.lines).includes(PW), 'the Sentinels\' password is in no log line')
}

async function works (t: Test, p: FleetProxy, tag: string): Promise<void> {
  await metricsUntil('Redis up through the Sentinels', p, (m) => valueOf(m, 'mqtt_guard_redis_up') === 1)
  t.match(await p.healthz(), { redis: { topology: 'sentinel', up: true, role: 'master', primary: `127.0.0.1:${set.primary.port}` } }, `${tag}: /healthz: up, on the primary the Sentinels name`)
  await retainedRoundTrip(t, p.url, tag)
  noPasswordLogged(t, p)
}

t.test('sentinelPassword: the Sentinels answer the proxy, the embedded broker keeps its state in Redis', LIMIT, async (t) => {
  await works(t, await fleetProxy(t, form('sa', { sentinelPassword: PW })), 'sentinelPassword')
})

t.test('sentinelPasswordFile: read like passwordFile, its final newline dropped', LIMIT, async (t) => {
  // Not tempDir: its folder is kept as an artifact, where the scan would find the password.
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-sentinel-auth-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  await writeFile(path.join(dir, 'sentinel.pass'), `${PW}\n`, { mode: 0o600 })
  const p = await fleetProxy(t, form('saf', { sentinelPasswordFile: './sentinel.pass' }), { configFile: path.join(dir, 'guard.yaml') })
  await works(t, p, 'sentinelPasswordFile')
})

// The embedded broker's start waits for Redis, so these proxies front a broker address instead
// (nothing listens there; no client connects): what is asserted is what the operator sees.
const NO_BROKER = 'mqtt://127.0.0.1:1'

for (const [name, auth, code, detail] of [
  ['no Sentinel password', {}, 'NOAUTH', 'the Sentinels refused authentication: they require a password; set redis.sentinelPassword or redis.sentinelPasswordFile'],
  ['a wrong Sentinel password', { sentinelPassword: 'pw-Wrong-0ne' }, 'WRONGPASS', 'the Sentinels refused authentication: wrong user name or password; check redis.sentinelPassword or redis.sentinelPasswordFile']
] as const) {
  t.test(`${name}: Redis down in /healthz and doctor, and the log says the Sentinels refused authentication`, LIMIT, async (t) => {
    const p = await fleetProxy(t, form('san', auth), { upstream: NO_BROKER })
    const line = await p.proxy.logs.waitFor((l) => l.msg === 'redis error')
    t.match(line, { level: 40, err: code, detail }, 'the log line names the cause and the keys to set')
    const health = await pollUntil('/healthz to carry the last error', 10_000, async () => {
      const h = await p.healthz()
      return typeof h.redis?.lastError === 'string' ? h : undefined
    })
    t.match(health.redis, { topology: 'sentinel', up: false, lastError: `${code}: ${detail}` }, '/healthz: down, and why')
    t.match(await p.readyz(), { status: 503, body: { checks: { redis: false } } }, '/readyz: not ready')
    const finding = (await p.proxy.server.diagnose()).findings.find((f) => f.id === 'redis-unhealthy')
    t.match(finding, { severity: 'error', evidence: [/^sentinel: Sentinel master /, /^client: /, /^failovers seen: /, `last error: ${code}: ${detail}`] }, 'doctor: the same cause in its evidence')
    noPasswordLogged(t, p)
    t.notOk(JSON.stringify(p.proxy.logs.lines).includes('pw-Wrong-0ne'), 'nor the wrong one')
  })
}
