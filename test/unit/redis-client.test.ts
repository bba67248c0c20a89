// The Redis client factory and what the operator reads of its errors, without a server: the
// Sentinels' own credentials reach ioredis (a password file read as the data password is),
// `tls` means TLS with a redis:// URL too, each known error gets its cause in words, and the
// Sentinels' password is redacted like the data password.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import t from 'tap'
import type { Redis } from 'ioredis'
import { buildConfig, type RedisSpec } from '../../src/config/config.js'
import { describeRedis } from '../../src/config/redis.js'
import { createLogger } from '../../src/log/log.js'
import { createRedisClient, type RedisClient } from '../../src/redis/client.js'
import { explainRedisError } from '../../src/redis/explain.js'
import { LogSink } from '../helpers/log-sink.js'

const PW = 'pw-Sentinel-un1t'

/** The options a client was made with; it is disconnected at once (nothing listens on port 1). */
function optionsOf (spec: RedisSpec): Record<string, unknown> {
  const client: RedisClient = createRedisClient(spec, 'shared')
  client.on('error', () => {})
  client.disconnect()
  return (client as Redis).options as unknown as Record<string, unknown>
}

const redis = (raw: unknown): RedisSpec => {
  const spec = buildConfig({ redis: raw }, {}).redis
  if (spec === undefined) throw new Error('no redis')
  return spec
}

t.test('Sentinel credentials reach ioredis; the data nodes keep theirs; a password file loses its final newline', async (t) => {
  // Not tempDir: its folder is kept as an artifact, and the scan would find the password file.
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-redis-client-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  await writeFile(path.join(dir, 'sentinel.pass'), `${PW}\n`)
  const sentinels = ['127.0.0.1:1']
  const given = optionsOf(redis({ sentinels, name: 'm', password: 'data', sentinelUsername: 'watcher', sentinelPassword: PW }))
  t.match(given, { password: 'data', sentinelUsername: 'watcher', sentinelPassword: PW })
  const fromFile = optionsOf(buildConfig({ redis: { sentinels, name: 'm', sentinelPasswordFile: './sentinel.pass' } }, {}, path.join(dir, 'guard.yaml')).redis as RedisSpec)
  t.equal(fromFile.sentinelPassword, PW, 'read from the file, newline stripped')
  t.notOk(fromFile.password, 'no data password unless given')
  t.notOk(optionsOf(redis({ sentinels, name: 'm' })).sentinelPassword, 'none given, none sent')
})

t.test('tls given means TLS, whatever the URL scheme says; describeRedis says so', async (t) => {
  const plain = redis('redis://127.0.0.1:1')
  t.notOk(optionsOf(plain).tls, 'redis:// alone: plain')
  t.equal(describeRedis(plain), 'redis://127.0.0.1:1')
  const withTls = redis({ url: 'redis://127.0.0.1:1', tls: { rejectUnauthorized: false } })
  t.match(optionsOf(withTls).tls, { rejectUnauthorized: false }, 'redis:// with tls: TLS')
  t.equal(describeRedis(withTls), 'redis://127.0.0.1:1 over TLS')
  t.equal(describeRedis(redis({ url: 'rediss://127.0.0.1:1', tls: { rejectUnauthorized: false } })), 'rediss://127.0.0.1:1', 'rediss:// says it already')
  t.equal(describeRedis(redis({ sentinels: ['h:1'], name: 'm', tls: {} })), 'Sentinel master m via h:1 over TLS')
  t.equal(describeRedis(redis({ sentinels: ['h:1'], name: 'm', sentinelPassword: PW })), 'Sentinel master m via h:1', 'no credential in the description')
})

t.test('errors: the cause in words where it is known, the code as before otherwise', async (t) => {
  const err = (message: string, code?: string): Error & { code?: string } => Object.assign(new Error(message), code === undefined ? {} : { code })
  const rows: Array<[string, Error & { code?: string }, 'standalone' | 'sentinel' | 'cluster', { err: string, detail?: RegExp }]> = [
    ['Sentinels want a password', err('All sentinels are unreachable. Retrying from scratch after 1000ms. Last error: NOAUTH Authentication required.'), 'sentinel',
      { err: 'NOAUTH', detail: /^the Sentinels refused authentication: they require a password; set redis\.sentinelPassword or redis\.sentinelPasswordFile/ }],
    ['Sentinels refuse the password', err('All sentinels are unreachable. Retrying from scratch after 10ms. Last error: WRONGPASS invalid username-password pair or user is disabled.'), 'sentinel',
      { err: 'WRONGPASS', detail: /^the Sentinels refused authentication: wrong user name or password; check redis\.sentinelPassword/ }],
    ['Sentinels down', err('All sentinels are unreachable. Retrying from scratch after 10ms. Last error: connect ECONNREFUSED 127.0.0.1:1'), 'sentinel',
      { err: 'All sentinels are unreachable. Retrying from scratch after 10ms. Last error: connect ECONNREFUSED 127.0.0.1:1' }],
    ['Redis wants a password', err('NOAUTH Authentication required.'), 'standalone', { err: 'NOAUTH', detail: /^Redis refused authentication: it requires a password; set redis\.password/ }],
    ['the data node behind Sentinels refuses', err('WRONGPASS invalid username-password pair or user is disabled.'), 'sentinel', { err: 'WRONGPASS', detail: /^Redis refused authentication: wrong user name or password; check redis\.password/ }],
    ['a CA that did not sign it', err('self-signed certificate in certificate chain', 'SELF_SIGNED_CERT_IN_CHAIN'), 'standalone', { err: 'SELF_SIGNED_CERT_IN_CHAIN', detail: /not signed by a CA in redis\.tls\.ca/ }],
    ['no client certificate', err('tlsv13 alert certificate required', 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'), 'cluster', { err: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', detail: /give redis\.tls\.cert and redis\.tls\.key/ }],
    ['refused as before', err('connect ECONNREFUSED 127.0.0.1:1', 'ECONNREFUSED'), 'standalone', { err: 'ECONNREFUSED' }]
  ]
  for (const [name, error, topology, want] of rows) {
    const got = explainRedisError(error, topology)
    t.equal(got.err, want.err, `${name}: err`)
    if (want.detail === undefined) t.equal(got.detail, undefined, `${name}: no detail`)
    else t.match(got.detail, want.detail, `${name}: detail`)
    t.ok((got.detail ?? '').length <= 256, `${name}: the detail fits a log line uncut`)
  }
})

t.test('the Sentinels\' password is redacted like the data password', async (t) => {
  const sink = new LogSink()
  const log = createLogger('info', sink)
  log.info({ sentinelPassword: PW, redis: { password: PW, sentinelPassword: PW } }, 'a line that should never carry them')
  const line = await sink.waitFor((l) => l.msg === 'a line that should never carry them')
  t.notMatch(JSON.stringify(line), PW)
  t.same(line.redis, { password: '[redacted]', sentinelPassword: '[redacted]' })
})
