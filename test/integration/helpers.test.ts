import { existsSync } from 'node:fs'
import { connectAsync } from 'mqtt'
import type { IClientOptions, MqttClient } from 'mqtt'
import t from 'tap'
import { startMosquitto } from '../helpers/mosquitto.js'
import { cleanupAll, pidAlive } from '../helpers/processes.js'
import { redisPing, startRedis } from '../helpers/redis.js'

// Smoke test of the broker helpers every integration test builds on: each
// server must really answer, and stop() must leave no process or temp dir.

t.teardown(cleanupAll)

const base: IClientOptions = { reconnectPeriod: 0, connectTimeout: 5000 }

/** Subscribe, publish one message, resolve with what arrives. */
async function roundTrip(client: MqttClient, topic: string, payload: string, retain = false): Promise<string> {
  const received = new Promise<string>(resolve => {
    client.on('message', (tp, msg) => {
      if (tp === topic) resolve(msg.toString())
    })
  })
  if (!retain) await client.subscribeAsync(topic, { qos: 1 })
  await client.publishAsync(topic, payload, { qos: 1, retain })
  if (retain) await client.subscribeAsync(topic, { qos: 1 })
  return received
}

t.test('mosquitto answers MQTT 3.1.1 and 5, stop() kills it', async t => {
  const broker = await startMosquitto()
  t.match(broker.url, /^mqtt:\/\/127\.0\.0\.1:\d+$/)
  t.not(broker.port, 1883, 'never the shared broker port')
  for (const protocolVersion of [4, 5] as const) {
    const client = await connectAsync(broker.url, { ...base, protocolVersion, clientId: `smoke-v${protocolVersion}` })
    const got = await roundTrip(client, `smoke/v${protocolVersion}`, `hello ${protocolVersion}`)
    t.equal(got, `hello ${protocolVersion}`, `v${protocolVersion} round trip`)
    await client.endAsync()
  }
  const pid = broker.pid
  t.ok(pidAlive(pid), 'running before stop')
  await broker.stop()
  t.notOk(pidAlive(pid), 'pid gone after stop')
  t.notOk(existsSync(broker.dir), 'temp dir removed')
  await broker.stop() // idempotent
})

t.test('mosquitto with passwords, acl and persistence survives restart', async t => {
  const broker = await startMosquitto({
    allowAnonymous: false,
    passwords: { alice: 'secret' },
    acl: 'user alice\ntopic readwrite smoke/#\n',
    persistence: true
  })
  await t.rejects(
    connectAsync(broker.url, { ...base, protocolVersion: 5, username: 'alice', password: 'wrong' }),
    'wrong password refused'
  )
  const auth = { ...base, protocolVersion: 5 as const, username: 'alice', password: 'secret' }
  const c1 = await connectAsync(broker.url, auth)
  t.equal(await roundTrip(c1, 'smoke/kept', 'retained!', true), 'retained!')
  await c1.endAsync()

  const before = broker.pid
  await broker.restart()
  t.not(broker.pid, before, 'new process')
  t.notOk(pidAlive(before), 'old process gone')
  const c2 = await connectAsync(broker.url, auth)
  const retained = new Promise<string>(resolve => c2.once('message', (_tp, msg) => resolve(msg.toString())))
  await c2.subscribeAsync('smoke/kept', { qos: 1 })
  t.equal(await retained, 'retained!', 'retained message persisted across restart')
  await c2.endAsync()
  await broker.stop()
  t.notOk(pidAlive(broker.pid))
})

t.test('redis answers PING, restarts on the same port, stop() kills it', async t => {
  const redis = await startRedis()
  t.equal(redis.url, `redis://127.0.0.1:${redis.port}`)
  t.not(redis.port, 6379, 'never the shared redis port')
  t.ok(await redisPing(redis.port), 'PONG')

  // fault injection: hard kill, then bring it back on the same port
  const first = redis.pid
  redis.kill('SIGKILL')
  const exit = await redis.exited()
  t.equal(exit.signal, 'SIGKILL')
  t.notOk(await redisPing(redis.port), 'down after SIGKILL')
  await redis.restart()
  t.not(redis.pid, first, 'new pid')
  t.ok(await redisPing(redis.port), 'PONG after restart on the same port')

  const second = redis.pid
  await redis.stop()
  t.notOk(pidAlive(first), 'first pid gone')
  t.notOk(pidAlive(second), 'second pid gone')
  t.notOk(existsSync(redis.dir), 'temp dir removed')
})
