// What a JWT gives after CONNECT, end to end through the proxy in front of a private Mosquitto:
// its user name claim feeds the acl plugin's %u and users: rules, its ACL claim (EMQX's formats)
// is asked before acl's own rules, and with disconnectOnExpiry the connection is closed when
// the token expires (MQTT 5: DISCONNECT 0xA0; 3.1.1: closed).

import t, { type Test } from 'tap'
import type { MqttClient } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { login } from '../helpers/auth-clients.js'
import { closed } from '../helpers/e2e-mqtt.js'
import { JwksServer, makeKey, sign } from '../helpers/jwks-server.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const key = await makeKey('k1')
const idp = await JwksServer.start([key])
t.teardown(() => idp.stop())

const RULES = [
  { allow: ['publish', 'subscribe', 'receive'], topic: 'users/%u/#' },
  { allow: ['subscribe', 'receive'], topic: 'ops/#', users: ['bob'] }
]

async function proxyWith (t: Test, jwt: Record<string, unknown> = {}): Promise<TestProxy> {
  const proxy = await startProxy({
    config: {
      upstream: mosquitto.url,
      plugins: [{ name: 'auth', upstreamCredentials: 'strip', jwt: { jwksUrl: idp.url, aclClaim: 'acl', ...jwt } }, { name: 'acl', rules: RULES }]
    }
  })
  t.teardown(() => proxy.stop())
  return proxy
}

async function connect (t: Test, proxy: TestProxy, claims: Record<string, unknown>, version: 4 | 5 = 5, clientId?: string): Promise<MqttClient> {
  const result = await login(t, proxy.url, version, { username: 'device', password: await sign(key, claims), ...(clientId !== undefined ? { clientId } : {}) })
  if (!result.ok) throw new Error(`refused with ${String(result.code)}`)
  return result.client
}

/** The PUBACK reason code of a QoS 1 publish (MQTT 5): 0 accepted. */
async function pubCode (c: MqttClient, topic: string): Promise<number> {
  return await c.publishAsync(topic, 'x', { qos: 1 }).then(() => 0, (err: Error & { code?: number }) => err.code ?? -1)
}

/** The SUBACK code for one filter. */
async function subCode (c: MqttClient, filter: string): Promise<number> {
  return await c.subscribeAsync(filter, { qos: 1 }).then(
    (granted) => granted[0]?.qos as number,
    (err: Error & { packet?: { granted: number[] } }) => err.packet?.granted[0] ?? -1)
}

t.test('usernameClaim is the identity acl sees: %u and users: rules', async (t) => {
  const proxy = await proxyWith(t)
  const bob = await connect(t, proxy, { sub: 'bob' })
  const alice = await connect(t, proxy, { sub: 'alice' })
  t.equal(await pubCode(bob, 'users/bob/x'), 0, 'bob under users/bob')
  t.equal(await pubCode(bob, 'users/alice/x'), 0x87, 'not under users/alice')
  t.equal(await subCode(bob, 'ops/#'), 1, 'users: [bob] rule')
  t.equal(await subCode(alice, 'ops/#'), 0x87, 'not for alice')
})

t.test('aclClaim (EMQX 5 list): asked first; no match leaves it to acl\'s rules', async (t) => {
  const proxy = await proxyWith(t)
  const acl = [
    { permission: 'allow', action: 'publish', topic: 'dev/${clientid}/up' },
    { permission: 'deny', action: 'all', topics: ['users/carol/secret/#'] },
    { permission: 'allow', action: 'subscribe', topic: 'eq feed/#', qos: [0, 1] }
  ]
  const carol = await connect(t, proxy, { sub: 'carol', acl }, 5, 'c-1')
  t.equal(await pubCode(carol, 'dev/c-1/up'), 0, 'allowed by the token (acl\'s rules alone would deny)')
  t.equal(await pubCode(carol, 'dev/c-2/up'), 0x87, '${clientid} is this client\'s')
  t.equal(await pubCode(carol, 'users/carol/secret/a'), 0x87, 'denied by the token (acl\'s rules alone would allow)')
  t.equal(await pubCode(carol, 'users/carol/a'), 0, 'no token rule: acl\'s users/%u/# decides')
  t.equal(await subCode(carol, 'feed/#'), 1, 'eq feed/#: that filter')
  t.equal(await subCode(carol, 'feed/a'), 0x87, 'not a narrower one')
  t.equal(await subCode(carol, 'users/carol/secret/x'), 0x87, 'deny all covers subscribe')
  const delivered = new Promise<string>((resolve) => { carol.once('message', (topic) => { resolve(topic) }) })
  await (await connect(t, proxy, { sub: 'feeder', acl: [{ permission: 'allow', action: 'publish', topic: 'feed/#' }] })).publishAsync('feed/news', 'n', { qos: 1 })
  t.equal(await delivered, 'feed/news', 'what the allowed subscription delivers is received')
})

t.test('aclClaim (old { pub, sub, all } form): what it names only', async (t) => {
  const proxy = await proxyWith(t)
  const dave = await connect(t, proxy, { sub: 'dave', acl: { pub: ['news/dave'], sub: ['news/#'] } }, 4)
  t.equal(await subCode(dave, 'news/#'), 1)
  t.equal(await subCode(dave, 'users/dave/#'), 0x80, 'acl\'s own rule would allow it; the old form denies what it does not name')
})

t.test('an ACL claim that cannot be honoured whole refuses the CONNECT', async (t) => {
  const proxy = await proxyWith(t)
  for (const acl of [[{ permission: 'allow', action: 'publish', topic: 'a/${peerhost}' }], [{ permission: 'allow', action: 'publish', topic: 'a', ipaddr: '10.0.0.0/8' }], 'all']) {
    const result = await login(t, proxy.url, 5, { username: 'device', password: await sign(key, { sub: 'eve', acl }) })
    t.same(result, { ok: false, code: 0x86 }, JSON.stringify(acl))
  }
  t.equal(proxy.logs.lines.filter((l) => l.reason === 'jwt-bad-acl-claim').length, 3)
})

for (const version of [4, 5] as const) {
  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: disconnectOnExpiry closes the connection when exp passes`, async (t) => {
    const proxy = await proxyWith(t, { disconnectOnExpiry: true, clockToleranceSeconds: 0 })
    const exp = Math.floor(Date.now() / 1000) + 2
    const c = await connect(t, proxy, { sub: 'frank', exp }, version)
    const disconnect = new Promise<number | undefined>((resolve) => { c.once('disconnect', (p) => { resolve(p.reasonCode) }) })
    await closed(c, 6000)
    t.ok(Date.now() >= exp * 1000, 'not before exp')
    if (version === 5) t.equal(await disconnect, 0xa0, 'DISCONNECT 0xA0 (maximum connect time)')
    const line = await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.reason === 'GUARD_ERR_TOKEN_EXPIRED')
    t.equal(line.username, 'frank')
  })
}
