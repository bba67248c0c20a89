// The auth plugin's users in Redis (a hash per user at <keyPrefix>auth:user:<name>), through the
// proxy in front of a private Mosquitto, with a private Redis and a key prefix per test. A Redis
// user's groups reach later plugins as conn.identity, and the acl plugin's group rules with it.
// The Redis is one server or a Cluster (MQTT_GUARD_TEST_REDIS; auth-redis.cluster.test.ts).

import t, { type Test } from 'tap'
import { join } from 'node:path'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startRedisUnderTest } from '../helpers/redis-under-test.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import type { LogLine } from '../helpers/log-sink.js'
import { assertNoPasswordsLogged, login, loginCode, tempDir } from '../helpers/auth-clients.js'
import { formatHash, hashPbkdf2, hashScrypt } from '../../plugins/auth/password-file.js'
import { passwdCommand } from '../../plugins/auth/passwd.js'
import type { Plugin } from '../../src/plugin/api.js'

const PASSWORDS = { rita: 'pw-Rita-h3s9', sam: 'pw-Sam-scr-5p0d', file: 'pw-FileRita-x2b4', wrong: 'pw-Wrong-q1w8' }
const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const redis = await startRedisUnderTest()
t.teardown(() => redis.stop())
const db = redis.db
const dir = await tempDir(t, 'mqtt-guard-auth-redis-')
const allLogs: LogLine[][] = []
let testNo = 0

interface Setup { proxy: TestProxy, prefix: string, groups: Map<string, string[]> }

/** A proxy whose auth plugin keeps users under a fresh prefix; records each login's groups (conn.identity). */
async function setup (t: Test, options: Record<string, unknown> = {}, keyPrefix = `authtest${++testNo}:`, more: Array<Record<string, unknown>> = []): Promise<Setup> {
  const groups = new Map<string, string[]>()
  const recorder: Plugin = {
    name: 'groups-recorder',
    out: { connack: (conn) => { const who = conn.identity; if (who?.username !== undefined) groups.set(who.username, [...who.groups]) } }
  }
  const proxy = await startProxy({
    config: { upstream: mosquitto.url, redis: redis.config(keyPrefix), plugins: [{ name: 'auth', redisUsers: { cacheMs: 0 }, redisTimeoutMs: 300, ...options }, ...more] },
    extraPlugins: [recorder]
  })
  t.teardown(() => proxy.stop())
  allLogs.push(proxy.logs.lines)
  return { proxy, prefix: `${keyPrefix}auth:`, groups }
}

for (const version of [4, 5] as const) {
  const code = (v4: number, v5: number): number => version === 5 ? v5 : v4

  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: users from Redis`, async (t) => {
    const { proxy, prefix, groups } = await setup(t)
    await db.hset(`${prefix}user:rita`, { password: formatHash(await hashPbkdf2(PASSWORDS.rita)), groups: 'ops, admins' })
    await db.hset(`${prefix}user:sam`, { password: formatHash(await hashScrypt(PASSWORDS.sam, { N: 1024, r: 8, p: 1 })) })
    t.equal(await loginCode(t, proxy.url, version, 'rita', PASSWORDS.rita), 0, '$7$ user in Redis')
    t.equal(await loginCode(t, proxy.url, version, 'sam', PASSWORDS.sam), 0, '$scrypt$ user in Redis')
    t.same(groups.get('rita'), ['ops', 'admins'])
    t.same(groups.get('sam'), [])
    t.equal(await loginCode(t, proxy.url, version, 'rita', PASSWORDS.wrong), code(4, 0x86))
    t.equal(await loginCode(t, proxy.url, version, 'nobody', PASSWORDS.wrong), code(4, 0x86))
    await proxy.logs.waitFor((l) => l.msg === 'auth refused' && l.reason === 'unknown-user' && l.username === 'nobody')
  })
}

t.test("a Redis user's group grants an acl rule, end to end", async (t) => {
  // ops has no members in the acl's own map: declared, so a typo in a rule is still caught.
  const acl = { name: 'acl', groups: { ops: [] }, rules: [{ allow: ['publish', 'subscribe', 'receive'], topic: 'ops/#', groups: ['ops'] }] }
  const { proxy, prefix } = await setup(t, {}, undefined, [acl])
  await db.hset(`${prefix}user:rita`, { password: formatHash(await hashPbkdf2(PASSWORDS.rita)), groups: 'ops' })
  await db.hset(`${prefix}user:sam`, { password: formatHash(await hashPbkdf2(PASSWORDS.sam)) })
  const rita = await login(t, proxy.url, 5, { username: 'rita', password: PASSWORDS.rita })
  const sam = await login(t, proxy.url, 5, { username: 'sam', password: PASSWORDS.sam })
  if (!rita.ok || !sam.ok) throw new Error('both log in')
  const granted = await rita.client.subscribeAsync('ops/#', { qos: 1 })
  t.same(granted.map((g) => g.qos), [1], 'rita (group ops, from Redis) may subscribe to ops/#')
  // MQTT.js rejects a SUBACK with a failure code; the codes are on the packet.
  const refused = await sam.client.subscribeAsync('ops/#', { qos: 1 }).then(
    (granted) => granted.map((g) => g.qos as number),
    (err: Error & { packet?: { granted: number[] } }) => err.packet?.granted)
  t.same(refused, [0x87], 'sam (no group) may not')
  const delivered = new Promise<string>((resolve) => { rita.client.once('message', (topic) => { resolve(topic) }) })
  await rita.client.publishAsync('ops/alarm', 'x', { qos: 1 })
  t.equal(await delivered, 'ops/alarm', 'and publishes and receives under it')
})

t.test('the password file is asked first; Redis only for names it does not hold', async (t) => {
  const file = join(dir, 'passwd')
  t.equal(await passwdCommand([file, 'rita', '--password', PASSWORDS.file]), 0)
  const { proxy, prefix } = await setup(t, { passwordFile: file })
  await db.hset(`${prefix}user:rita`, { password: formatHash(await hashPbkdf2(PASSWORDS.rita)) })
  t.equal(await loginCode(t, proxy.url, 5, 'rita', PASSWORDS.file), 0)
  t.equal(await loginCode(t, proxy.url, 5, 'rita', PASSWORDS.rita), 0x86)
})

t.test('answers are cached for cacheMs; reload() empties the cache', async (t) => {
  const { proxy, prefix } = await setup(t, { redisUsers: { cacheMs: 60_000 } })
  await db.hset(`${prefix}user:rita`, { password: formatHash(await hashPbkdf2(PASSWORDS.rita)) })
  t.equal(await loginCode(t, proxy.url, 4, 'rita', PASSWORDS.rita), 0)
  await db.del(`${prefix}user:rita`)
  t.equal(await loginCode(t, proxy.url, 4, 'rita', PASSWORDS.rita), 0, 'cached')
  await proxy.server.reload()
  t.equal(await loginCode(t, proxy.url, 4, 'rita', PASSWORDS.rita), 4, 'gone after reload()')
})

t.test('a broken record or an unreachable Redis: nobody gets in on it (3 / 0x88)', async (t) => {
  const { proxy, prefix } = await setup(t)
  await db.hset(`${prefix}user:rita`, { password: formatHash(await hashPbkdf2(PASSWORDS.rita)) })
  await db.hset(`${prefix}user:plain`, { password: PASSWORDS.rita })
  t.equal(await loginCode(t, proxy.url, 4, 'plain', PASSWORDS.rita), 3, 'plaintext record refused')
  const broken = await proxy.logs.waitFor((l) => l.msg === 'auth refused' && l.reason === 'user-store-unavailable')
  t.match(broken.detail, /user:plain: hash does not start with "\$"/)
  t.equal(await loginCode(t, proxy.url, 5, 'rita', PASSWORDS.rita), 0)
  // One server: SIGKILL (back empty afterwards). A Cluster: every node paused (SIGSTOP).
  t.teardown(redis.restore)
  await redis.cut()
  t.equal(await loginCode(t, proxy.url, 4, 'rita', PASSWORDS.rita), 3)
  t.equal(await loginCode(t, proxy.url, 5, 'rita', PASSWORDS.rita), 0x88)
  const down = proxy.logs.lines.filter((l) => l.msg === 'auth refused' && l.reason === 'user-store-unavailable')
  t.equal(down.length, 3)
  t.match(down[2]?.detail, /^redis: /)
})

t.test('brute-force counters are shared by proxies on the same Redis', async (t) => {
  const options = { bruteForce: { maxFailures: 2, windowMs: 10_000, blockMs: 60_000 } }
  const a = await setup(t, options, 'shared-bf:')
  const b = await setup(t, options, 'shared-bf:')
  await db.hset(`${a.prefix}user:rita`, { password: formatHash(await hashPbkdf2(PASSWORDS.rita)) })
  t.equal(await loginCode(t, a.proxy.url, 5, 'rita', PASSWORDS.wrong), 0x86)
  t.equal(await loginCode(t, b.proxy.url, 5, 'rita', PASSWORDS.wrong), 0x86)
  const block = await b.proxy.logs.waitFor((l) => l.msg === 'brute force: blocked' && l.key === 'user:rita')
  t.match(block, { scope: 'redis', failures: 2, maxFailures: 2 })
  t.equal(a.proxy.logs.find((l) => l.msg === 'brute force: blocked'), undefined, 'proxy a counted only one failure itself')
  t.equal(await loginCode(t, a.proxy.url, 5, 'rita', PASSWORDS.rita), 0x8a, 'a refuses the right password: blocked fleet-wide')
  t.equal(await loginCode(t, a.proxy.url, 4, 'rita', PASSWORDS.rita), 5)
  t.ok(await db.pttl(`${a.prefix}bf:{user%3Arita}:block`) > 50_000, 'the block lives in Redis with its expiry')
})

t.test('redisUsers without a redis setting fails at start with the option named', async (t) => {
  await t.rejects(startProxy({ config: { upstream: mosquitto.url, plugins: [{ name: 'auth', redisUsers: true }] } }), /redisUsers: needs the top-level redis setting/)
})

t.test('no test password appears in any log line', async (t) => {
  t.ok(allLogs.length >= 5)
  assertNoPasswordsLogged(t, allLogs.flat(), Object.values(PASSWORDS))
})
