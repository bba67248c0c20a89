// Redis killed and restarted during QoS 1 traffic through the proxy with auth, acl, client-id,
// dedupe and trace on: each plugin applies its fail policy, everything reconnects by itself,
// the proxy keeps running, and no message is lost.

import t from 'tap'
import path from 'node:path'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startRedis } from '../helpers/redis.js'
import { startProxy } from '../helpers/proxy.js'
import { clientV, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { mosquittoPasswdFile, tempDir } from '../helpers/auth-clients.js'
import { pollUntil } from '../helpers/processes.js'

const PASSWORD = 'pw-Outage-5k2m'

t.test('Redis away and back during traffic: fail policies hold, nothing lost', { timeout: 90_000 }, async (t) => {
  const broker = await startMosquitto()
  t.teardown(() => broker.stop())
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const dir = await tempDir(t, 'mqtt-guard-outage-')
  await mosquittoPasswdFile(path.join(dir, 'passwd'), [{ user: 'dev', password: PASSWORD }])
  const proxy = await startProxy({
    configFile: path.join(dir, 'guard.yaml'),
    config: {
      upstream: broker.url,
      redis: { url: redis.url, keyPrefix: 'outage:' },
      plugins: [
        { name: 'auth', passwordFile: './passwd', redisTimeoutMs: 300 },
        { name: 'acl', rules: [{ allow: ['publish', 'subscribe', 'receive'], topic: 'e2e/#' }] },
        { name: 'client-id', redisTimeoutMs: 300 },
        { name: 'dedupe', redisTimeoutMs: 300 },
        { name: 'trace', enabled: false }
      ]
    }
  })
  t.teardown(() => proxy.stop())
  const login = { username: 'dev', password: PASSWORD }
  const topic = uniqueTopic('outage')
  const sub = await clientV(t, proxy.url, 5, { clientId: 'outage-sub', ...login })
  await sub.subscribeAsync(topic, { qos: 1 })
  const got = new Set<string>()
  sub.on('message', (_t, payload) => { got.add(payload.toString()) })
  const pub = await clientV(t, proxy.url, 4, { clientId: 'outage-pub', ...login })
  let sent = 0
  const publish = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) await pub.publishAsync(topic, String(sent++), { qos: 1 })
  }
  await publish(100)
  redis.kill('SIGKILL')
  await redis.exited()
  await publish(100)
  // A new client during the outage: client-id fails open (this instance's check only).
  const during = await clientV(t, proxy.url, 5, { clientId: 'outage-new', ...login })
  await during.publishAsync(topic, 'from the new client', { qos: 1 })
  await redis.restart()
  await publish(100)
  await pollUntil('every message delivered', 10_000, () => got.size >= sent + 1 ? true : undefined)
  t.equal(got.size, sent + 1, `all ${sent + 1} messages delivered`)
  const warned = proxy.logs.lines.filter((l) => typeof l.msg === 'string' && /redis/.test(l.msg) && l.level === 40).map((l) => l.msg)
  t.ok(warned.some((m) => m?.startsWith('client-id: redis unavailable')), 'client-id said it fails open')
  t.ok(warned.some((m) => m?.startsWith('dedupe: redis')), 'dedupe said its records stay local')
  t.notOk(proxy.logs.lines.some((l) => l.level >= 50), 'no error-level line')
})
