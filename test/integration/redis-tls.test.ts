// TLS to Redis against real servers on loopback that serve TLS only (port 0, tls-port), with a
// throwaway CA made by openssl: `rediss://` with `tls.ca` works, and so does a `redis://` URL
// with `tls` (TLS when tls is given); a client certificate (`tls.cert`, `tls.key`) is accepted
// by a Redis with tls-auth-clients yes, and its absence is named; a CA that did not sign the
// server's certificate fails with the cause in /healthz and in the log line. A Sentinel set on
// TLS only (replication and the Sentinels' links too) works with the same `tls`.

import t from 'tap'
import type { Test } from 'tap'
import { makePki, type Pki } from '../helpers/certs.js'
import { cleanupAll, pollUntil } from '../helpers/processes.js'
import { startRedis, type Redis, type RedisTlsFiles } from '../helpers/redis.js'
import { startRedisSentinel } from '../helpers/redis-topologies.js'
import { fleetProxy, metricsUntil, rand, retainedRoundTrip, type FleetProxy } from '../helpers/redis-fleet.js'
import { valueOf } from '../helpers/metrics-scrape.js'

t.teardown(cleanupAll)
const LIMIT = { timeout: 60_000 }

let pki: Pki
let other: Pki
let files: RedisTlsFiles
let guardCert: { cert: string, key: string }
let redis: Redis
let mutual: Redis
t.before(async () => {
  pki = await makePki()
  other = await makePki()
  const server = await pki.server(['127.0.0.1', 'localhost'], { name: 'redis' })
  guardCert = await pki.client('mqtt-guard')
  files = { ...server, ca: pki.ca }
  redis = await startRedis({ tls: files })
  mutual = await startRedis({ tls: { ...files, authClients: true, client: guardCert } })
})
t.teardown(async () => {
  await Promise.all([redis?.stop(), mutual?.stop()])
  await Promise.all([pki?.cleanup(), other?.cleanup()])
})

async function works (t: Test, p: FleetProxy, tag: string, topology = 'standalone'): Promise<void> {
  await metricsUntil(`Redis up over TLS (${tag})`, p, (m) => valueOf(m, 'mqtt_guard_redis_up') === 1)
  t.match(await p.healthz(), { redis: { topology, up: true, role: 'master' } }, `${tag}: /healthz: up (ROLE answered over TLS)`)
  await retainedRoundTrip(t, p.url, tag)
  t.ok(p.proxy.logs.find((l) => l.msg === 'redis configured' && typeof l.redis === 'string' && (l.redis.startsWith('rediss://') || l.redis.endsWith(' over TLS'))), `${tag}: the start line says TLS`)
}

/** Down in /healthz with this last error, and a log line with this code and cause. */
async function refused (t: Test, p: FleetProxy, code: string, detail: string): Promise<void> {
  const line = await p.proxy.logs.waitFor((l) => l.msg === 'redis error' && l.err === code)
  t.match(line, { level: 40, err: code, detail }, `the log line: ${code}, and what to change`)
  const health = await pollUntil('/healthz to carry the last error', 10_000, async () => {
    const h = await p.healthz()
    return typeof h.redis?.lastError === 'string' && h.redis.lastError.startsWith(code) ? h : undefined
  })
  t.match(health.redis, { up: false, lastError: `${code}: ${detail}` }, '/healthz: down, and why')
}

const prefix = (tag: string): string => `${tag}-${rand()}:`
// The embedded broker's start waits for Redis, so a proxy that Redis refuses fronts a broker
// address instead (nothing listens there; no client connects).
const NO_BROKER = { upstream: 'mqtt://127.0.0.1:1' }

t.test('rediss:// with tls.ca: the shared client and the embedded broker over TLS', LIMIT, async (t) => {
  t.match(redis.url, /^rediss:\/\//)
  await works(t, await fleetProxy(t, { url: redis.url, tls: { ca: pki.ca }, keyPrefix: prefix('tls') }), 'rediss')
})

t.test('redis:// with tls given: TLS all the same', LIMIT, async (t) => {
  await works(t, await fleetProxy(t, { url: `redis://127.0.0.1:${redis.port}`, tls: { ca: pki.ca }, keyPrefix: prefix('tls-plain-url') }), 'redis-url-with-tls')
})

t.test('a CA that did not sign Redis\' certificate: refused, and the log says so', LIMIT, async (t) => {
  const p = await fleetProxy(t, { url: redis.url, tls: { ca: other.ca }, keyPrefix: prefix('tls-wrong-ca') }, NO_BROKER)
  // Both test CAs have the same name, so Node reports the chain as ending in an untrusted CA.
  await refused(t, p, 'SELF_SIGNED_CERT_IN_CHAIN', 'TLS: Redis\' certificate is not signed by a CA in redis.tls.ca')
})

t.test('tls-auth-clients yes: tls.cert and tls.key are shown and accepted', LIMIT, async (t) => {
  await works(t, await fleetProxy(t, { url: mutual.url, tls: { ca: pki.ca, ...guardCert }, keyPrefix: prefix('mtls') }), 'client-certificate')
})

t.test('tls-auth-clients yes without a client certificate: refused, and the log says which keys to give', LIMIT, async (t) => {
  const p = await fleetProxy(t, { url: mutual.url, tls: { ca: pki.ca }, keyPrefix: prefix('mtls-none') }, NO_BROKER)
  await refused(t, p, 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'TLS: Redis wants a client certificate (tls-auth-clients): give redis.tls.cert and redis.tls.key')
})

t.test('a Sentinel set on TLS only: the Sentinels and the primary over TLS', LIMIT, async (t) => {
  const set = await startRedisSentinel({ tls: files, sentinels: 2, replicas: 1 })
  t.teardown(async () => { await set.stop() })
  const p = await fleetProxy(t, { sentinels: set.sentinels.map((s) => `${s.host}:${s.port}`), name: set.name, tls: { ca: pki.ca }, keyPrefix: prefix('tls-sentinel') })
  await works(t, p, 'sentinel-tls', 'sentinel')
  t.match(await p.healthz(), { redis: { primary: `127.0.0.1:${set.primary.port}` } }, 'the primary the Sentinels name, reached over TLS')
})
