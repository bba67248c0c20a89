// aedes-hooks: a module written for an aedes broker (test/fixtures/aedes-hooks-example.cjs,
// callback style, CommonJS) guards a private Mosquitto through the proxy, with MQTT.js 3.1.1
// and 5 clients; and the same module, unchanged, guards a real aedes broker.

import t, { type Test } from 'tap'
import type { MqttClient, IClientOptions } from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import { createServer, type AddressInfo } from 'node:net'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { Aedes } from 'aedes'
import type { IConnectPacket, Packet } from 'mqtt-packet'
import { startMosquitto } from '../helpers/mosquitto.js'
import { clientV, refusedCode } from '../helpers/e2e-mqtt.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import type { ConnectionInfo, Plugin } from '../../src/plugin/api.js'

// The fixture is plain JS and is not compiled: from dist/test/integration/ back to test/fixtures/.
const FIXTURE = fileURLToPath(new URL('../../../test/fixtures/aedes-hooks-example.cjs', import.meta.url))
const fixtureModule = createRequire(import.meta.url)(FIXTURE) as Record<string, unknown>
const ALICE = { username: 'alice', password: 'secret' }

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

async function proxyWith (t: Test, extraPlugins: Plugin[] = [], hooks = './aedes-hooks-example.cjs'): Promise<TestProxy> {
  // configFile only sets the folder that `hooks: ./…` resolves against.
  const proxy = await startProxy({
    config: { upstream: mosquitto.url, plugins: [{ name: 'aedes-hooks', hooks, timeoutMs: 300 }] },
    configFile: FIXTURE.replace(/[^/]+$/, 'mqtt-guard.yaml'),
    extraPlugins
  })
  t.teardown(() => proxy.stop())
  return proxy
}



/** Subscribes and resolves with the SUBACK's return codes as the client received them. */
async function suback (client: MqttClient, subs: Record<string, { qos: 0 | 1 | 2 }>): Promise<number[]> {
  const got = new Promise<number[]>((resolve) => {
    const onPacket = (p: Packet): void => {
      if (p.cmd !== 'suback') return
      client.removeListener('packetreceive', onPacket)
      resolve(p.granted as number[])
    }
    client.on('packetreceive', onPacket)
  })
  client.subscribe(subs, () => {})
  return await got
}

function collect (client: MqttClient): Array<{ topic: string, payload: string }> {
  const got: Array<{ topic: string, payload: string }> = []
  client.on('message', (topic, payload) => { got.push({ topic, payload: payload.toString() }) })
  return got
}

async function waitFor<T> (list: T[], count: number): Promise<void> {
  while (list.length < count) await new Promise((resolve) => setImmediate(resolve))
}

for (const version of [4, 5] as const) {
  const v5 = version === 5
  const mode = `MQTT ${v5 ? '5' : '3.1.1'}`

  t.test(`${mode}: authenticate's answers become CONNACK codes`, async (t) => {
    const proxy = await proxyWith(t)
    const cases: Array<[string, IClientOptions, number]> = [
      ['wrong password (returnCode 4)', { username: 'alice', password: 'wrong' }, v5 ? 0x86 : 4],
      ['unknown user (returnCode 4)', { username: 'nobody', password: 'x' }, v5 ? 0x86 : 4],
      ['anonymous: callback(null, false)', {}, v5 ? 0x87 : 5],
      ['client ID refused (returnCode 2)', { ...ALICE, clientId: 'rejected-id' }, v5 ? 0x85 : 2],
      ['callback never called: timeout', { username: 'slow', password: 'x' }, v5 ? 0x83 : 3],
      ['authenticate throws', { username: 'crash', password: 'x' }, v5 ? 0x83 : 3]
    ]
    for (const [what, options, code] of cases) t.equal(await refusedCode(t, proxy.url, version, options), code, what)
    const timedOut = await proxy.logs.waitFor((l) => l.msg === 'aedes hook failed' && typeof l.err === 'string' && l.err.includes('300 ms'))
    t.equal(timedOut.hook, 'authenticate')
    t.notOk(proxy.logs.lines.some((l) => JSON.stringify(l).includes('wrong')), 'the password is never logged')
    const client = await clientV(t, proxy.url, version, ALICE)
    t.ok(client.connected, 'alice/secret is admitted')
    t.same([...proxy.server.connections].map((c) => (c as ConnectionInfo).identity).filter((i) => i !== undefined), [{ username: 'alice', groups: [], source: 'aedes-hooks' }], 'and conn.identity says who')
  })

  t.test(`${mode}: authorizePublish denies and rewrites; client.user set by authenticate is kept`, async (t) => {
    const proxy = await proxyWith(t)
    const direct = await clientV(t, mosquitto.url, 4)
    await direct.subscribeAsync(['rewrite/in', 'users/#', 'private/#'], { qos: 1 })
    const got = collect(direct)
    const client = await clientV(t, proxy.url, version, ALICE)
    await client.publishAsync('rewrite/in', 'original', { qos: 1 })
    await client.publishAsync('users/alice/a', 'mine', { qos: 1 })
    if (v5) {
      for (const topic of ['users/bob/a', 'private/a']) {
        const err = await client.publishAsync(topic, 'refused', { qos: 1 }).then(() => undefined, (e: Error & { code?: number }) => e)
        t.equal(err?.code, 0x87, `${topic}: PUBACK 0x87`)
      }
      await client.publishAsync('users/alice/b', 'after', { qos: 1 })
    } else {
      client.publish('private/a', 'refused', { qos: 1 })
      await once(client as unknown as EventEmitter, 'close')
      t.pass('3.1.1 publisher disconnected: no PUBACK can say "refused" [MQTT-3.3.5-2]')
      const second = await clientV(t, proxy.url, version, ALICE)
      await second.publishAsync('users/alice/b', 'after', { qos: 1 })
    }
    await waitFor(got, 3)
    t.same(got, [
      { topic: 'rewrite/in', payload: 'rewritten by authorizePublish' },
      { topic: 'users/alice/a', payload: 'mine' },
      { topic: 'users/alice/b', payload: 'after' }
    ], 'denied publishes never reached the broker')
    t.ok(proxy.logs.find((l) => l.msg === 'denied by aedes hook' && l.hook === 'authorizePublish' && l.topic === 'private/a'))
  })

  t.test(`${mode}: authorizeSubscribe per filter; the SUBACK is merged in order`, async (t) => {
    const proxy = await proxyWith(t)
    const client = await clientV(t, proxy.url, version, ALICE)
    const fail = v5 ? 0x87 : 0x80
    t.same(await suback(client, { 'open/1': { qos: 1 }, 'secret/a': { qos: 1 }, 'alias/#': { qos: 0 }, 'open/2': { qos: 0 } }), [1, fail, 1, 0],
      'denied filter in place; alias/# granted QoS 1 as the hook changed it to real/# QoS 1')
    t.same(await suback(client, { 'secret/a': { qos: 0 }, 'secret/#': { qos: 1 } }), [fail, fail], 'all denied: answered by the proxy')
    const got = collect(client)
    const direct = await clientV(t, mosquitto.url, 4)
    await direct.publishAsync('secret/a', 'never', { qos: 1 })
    await direct.publishAsync('real/x', 'via alias', { qos: 1 })
    await direct.publishAsync('open/1', 'open', { qos: 1 })
    await waitFor(got, 2)
    t.same(got, [{ topic: 'real/x', payload: 'via alias' }, { topic: 'open/1', payload: 'open' }])
  })

  t.test(`${mode}: authorizeSubscribe answering an error closes the client, as aedes does`, async (t) => {
    const proxy = await proxyWith(t)
    const client = await clientV(t, proxy.url, version, ALICE)
    const disconnect = v5 ? once(client as unknown as EventEmitter, 'disconnect') : undefined
    client.subscribe('kick/#', () => {})
    await once(client as unknown as EventEmitter, 'close')
    if (disconnect !== undefined) t.equal(((await disconnect)[0] as { reasonCode?: number }).reasonCode, 0x87)
    const closed = await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.reason === 'GUARD_ERR_NOT_AUTHORIZED')
    t.equal(closed.detail, 'authorizeSubscribe answered with an error')
  })

  t.test(`${mode}: authorizeForward withholds and rewrites deliveries`, async (t) => {
    const proxy = await proxyWith(t)
    const client = await clientV(t, proxy.url, version, ALICE)
    await client.subscribeAsync(['hidden/#', 'censor/#', 'plain/#'], { qos: 1 })
    const got = collect(client)
    const direct = await clientV(t, mosquitto.url, 4)
    await direct.publishAsync('hidden/1', 'secret', { qos: 1 })
    await direct.publishAsync('hidden/0', 'secret', { qos: 0 })
    await direct.publishAsync('censor/1', 'raw', { qos: 1 })
    await direct.publishAsync('plain/1', 'plain', { qos: 1 })
    await waitFor(got, 2)
    t.same(got, [{ topic: 'censor/1', payload: 'censored for alice' }, { topic: 'plain/1', payload: 'plain' }])
    t.equal(proxy.logs.lines.filter((l) => l.msg === 'denied by aedes hook' && l.hook === 'authorizeForward').length, 2)
  })

  t.test(`${mode}: the will is judged by authorizePublish at CONNECT`, async (t) => {
    const seen: IConnectPacket[] = []
    const recorder: Plugin = { name: 'recorder', in: { connect: (_conn, p) => { seen.push(p) } } }
    const proxy = await proxyWith(t, [recorder])
    await clientV(t, proxy.url, version, { ...ALICE, will: { topic: 'private/will', payload: Buffer.from('gone'), qos: 0, retain: false } })
    t.equal(seen[0]?.will, undefined, 'a denied will is removed from the CONNECT the broker gets')
    const direct = await clientV(t, mosquitto.url, 4)
    await direct.subscribeAsync('users/alice/will', { qos: 1 })
    const got = collect(direct)
    const client = await clientV(t, proxy.url, version, { ...ALICE, will: { topic: 'users/alice/will', payload: Buffer.from('gone'), qos: 1, retain: false } })
    t.equal(seen[1]?.will?.topic, 'users/alice/will')
    client.stream.destroy() // vanish without DISCONNECT: the broker publishes the will
    await waitFor(got, 1)
    t.same(got, [{ topic: 'users/alice/will', payload: 'gone' }])
  })
}

t.test('MQTT 5: promise-style functions (ESM), and a PUBLISH whose callback never comes', async (t) => {
  const proxy = await proxyWith(t, [], './aedes-hooks-async.mjs')
  t.equal(await refusedCode(t, proxy.url, 5, { username: 'alice', password: 'wrong' }), 0x87, 'resolved false: not authorized')
  const client = await clientV(t, proxy.url, 5, ALICE)
  t.same(await suback(client, { 'secret/a': { qos: 1 }, 'async/#': { qos: 1 } }), [0x87, 1])
  const err = await client.publishAsync('slow/x', 'x', { qos: 1 }).then(() => undefined, (e: Error & { code?: number }) => e)
  t.equal(err?.code, 0x83, 'timed out: PUBACK 0x83 (GUARD_ERR_PLUGIN)')
  await client.subscribeAsync('hidden/#', { qos: 1 })
  const got = collect(client)
  await client.publishAsync('hidden/1', 'never', { qos: 1 })
  await client.publishAsync('async/1', 'payload', { qos: 1 })
  await waitFor(got, 1)
  t.same(got, [{ topic: 'async/1', payload: 'async payload' }])
  client.subscribe('reject/#', () => {})
  await once(client as unknown as EventEmitter, 'close')
  t.pass('a rejected authorizeSubscribe promise closes the client, like a callback error')
})

t.test('options: errors name the key; a module without aedes functions is refused at start', async (t) => {
  const start = async (entry: Record<string, unknown>): Promise<void> => {
    const proxy = await startProxy({ config: { upstream: mosquitto.url, plugins: [{ name: 'aedes-hooks', ...entry }] } })
    await proxy.stop()
  }
  await t.rejects(start({}), { message: /^plugins\[0\]\.hooks: expected the path or package name/ })
  await t.rejects(start({ hooks: FIXTURE, timeoutMs: 0 }), { message: /^plugins\[0\]\.timeoutMs: expected a positive integer/ })
  await t.rejects(start({ hooks: FIXTURE, module: 'x' }), { message: /give exactly one of "name"/ }, 'module: is the loader\'s key, hence `hooks`')
  await t.rejects(start({ hooks: 'mqtt-packet' }), { message: /hooks: mqtt-packet exports none of authenticate, authorizePublish/ }, 'a package name resolves')
})

// Broker → client hooks run in reverse config order, so with two plugins that each take
// filters out of a SUBSCRIBE, each merges the SUBACK for the SUBSCRIBE it trimmed.
t.test('two plugins each denying filters of one SUBSCRIBE: merged SUBACK in order', async (t) => {
  const proxy = await startProxy({
    config: { upstream: mosquitto.url, plugins: [{ name: 'aedes-hooks', hooks: './aedes-hooks-example.cjs' }, { name: 'aedes-hooks', hooks: './aedes-hooks-async.mjs' }] },
    configFile: FIXTURE.replace(/[^/]+$/, 'mqtt-guard.yaml')
  })
  t.teardown(() => proxy.stop())
  const client = await clientV(t, proxy.url, 4, ALICE)
  t.same(await suback(client, { 'secret/a': { qos: 1 }, 'open/1': { qos: 1 }, 'other/a': { qos: 1 }, 'open/2': { qos: 0 } }), [0x80, 1, 0x80, 0])
})

t.test('the same module, unchanged, on a real aedes broker', async (t) => {
  const broker = await Aedes.createBroker()
  Object.assign(broker, fixtureModule)
  const server = createServer((socket) => { broker.handle(socket) })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    server.close()
    await new Promise<void>((resolve) => { broker.close(() => { resolve() }) })
  })
  const url = `mqtt://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.equal(await refusedCode(t, url, 4, { username: 'alice', password: 'wrong' }), 4)
  t.equal(await refusedCode(t, url, 4, {}), 5)
  t.equal(await refusedCode(t, url, 4, { ...ALICE, clientId: 'rejected-id' }), 2)
  const client = await clientV(t, url, 4, ALICE)
  t.same(await suback(client, { 'open/1': { qos: 1 }, 'secret/a': { qos: 1 }, 'alias/#': { qos: 0 }, 'open/2': { qos: 0 } }), [1, 0x80, 0, 0],
    'aedes reports the QoS asked for on a changed filter; through the proxy the broker says what it granted')
  await client.subscribeAsync(['rewrite/in', 'censor/#', 'hidden/#'], { qos: 1 })
  const got = collect(client)
  const other = await clientV(t, url, 4, { username: 'bob', password: 'builder' })
  await other.publishAsync('rewrite/in', 'original', { qos: 1 })
  await other.publishAsync('hidden/1', 'secret', { qos: 1 })
  await other.publishAsync('censor/1', 'raw', { qos: 1 })
  await other.publishAsync('real/x', 'via alias', { qos: 1 })
  await waitFor(got, 3)
  t.same(got, [
    { topic: 'rewrite/in', payload: 'rewritten by authorizePublish' },
    { topic: 'censor/1', payload: 'censored for alice' },
    { topic: 'real/x', payload: 'via alias' }
  ])
})
