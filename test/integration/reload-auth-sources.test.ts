// The auth plugin's JWT and HTTP sources across hot reloads (issue 23 with issue 22), MQTT.js
// 3.1.1 and 5 through a proxy in this process in front of a private Mosquitto, a JWKS server
// and a hook service of the test's own. Clients connected with tokens that expire in a few
// seconds (`disconnectOnExpiry`) stay open across a reload that changes `jwt.audience` (the
// next CONNECT follows it: an old-audience token refused, a new one admitted) and one that adds
// an `http` source (a user only the hook knows is admitted after it), and are still closed at
// their tokens' expiry (MQTT 5: DISCONNECT 0xA0; 3.1.1: closed).

import t from 'tap'
import type { IDisconnectPacket, MqttClient } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.js'
import { JwksServer, makeKey, sign } from '../helpers/jwks-server.js'
import { startHookServer } from '../helpers/hook-server.js'
import { closed } from '../helpers/e2e-mqtt.js'
import { login } from '../helpers/auth-clients.js'
import { reloadableProxy, roundTrip, type Raw } from '../helpers/reload.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const key = await makeKey('rsa-1', 'RS256')
const idp = await JwksServer.start([key])
t.teardown(() => idp.stop())
const hook = await startHookServer()
t.teardown(() => hook.stop())
hook.script = (req) => req.body.username === 'hank' ? 'allow' : 'ignore'

const HOOK_PASSWORD = 'pw-Hank-r7t2'
const now = (): number => Math.floor(Date.now() / 1000)

function config (audience: string, http?: Raw): Raw {
  const jwt = { jwksUrl: idp.url, audience, disconnectOnExpiry: true, clockToleranceSeconds: 0 }
  return { listen: '127.0.0.1:0', upstream: mosquitto.url, plugins: [{ name: 'auth', upstreamCredentials: 'strip', jwt, ...(http === undefined ? {} : { http }) }] }
}

/** The CONNACK code of one login (0: admitted, and the client ended). */
async function code (t: Parameters<typeof login>[0], url: string, version: 4 | 5, password: string, username = 'device'): Promise<number | undefined> {
  const result = await login(t, url, version, { username, password })
  if (result.ok) { result.client.end(true); return 0 }
  return result.code
}

t.test('JWT audience changed, then an HTTP source added, by reloads: open token clients stay until their exp', async (t) => {
  const p = await reloadableProxy(t, config('mqtt-old'))
  // A few seconds: long enough for both reloads and the logins between them.
  const exp = now() + 6
  const open: Array<{ client: MqttClient, version: 4 | 5 }> = []
  for (const version of [5, 4] as const) {
    const result = await login(t, p.url, version, { clientId: `open-${version}`, username: 'device', password: await sign(key, { sub: `open-${version}`, aud: 'mqtt-old', exp }) })
    if (!result.ok) throw new Error(`open-${version} refused: ${String(result.code)}`)
    open.push({ client: result.client, version })
  }
  const v5 = open[0]?.client as MqttClient
  const told = new Promise<number | undefined>((resolve) => { v5.once('disconnect', (d: IDisconnectPacket) => { resolve(d.reasonCode) }) })
  const ends = open.map(({ client }) => closed(client, 15_000))
  let closedEarly = 0
  for (const { client } of open) client.once('close', () => { if (Date.now() < exp * 1000) closedEarly++ })

  const audience = await p.reload(config('mqtt-new'))
  t.match(audience, { applied: true, refused: [] })
  t.same(audience.changed.map((ch) => [ch.setting, ch.reach]), [['plugins[0] (auth)', 'now']], 'taken in place')
  for (const version of [4, 5] as const) {
    const bad = version === 5 ? 0x86 : 4
    t.equal(await code(t, p.url, version, await sign(key, { sub: 'late', aud: 'mqtt-old' })), bad, `MQTT ${version}: an old-audience token is refused at the next CONNECT`)
    t.equal(await code(t, p.url, version, await sign(key, { sub: 'late', aud: 'mqtt-new' })), 0, `MQTT ${version}: a new-audience token is admitted`)
  }
  await p.logs.waitFor((l) => l.msg === 'auth refused' && l.reason === 'jwt-wrong-audience')
  t.equal(await code(t, p.url, 5, HOOK_PASSWORD, 'hank'), 0x86, 'before the http source: hank is an unknown user')
  t.equal(hook.requests.length, 0, 'no hook yet')

  const added = await p.reload(config('mqtt-new', { url: hook.url, timeoutMs: 1000 }))
  t.match(added, { applied: true, refused: [] })
  t.same(added.changed.map((ch) => [ch.setting, ch.reach]), [['plugins[0] (auth)', 'now']], 'taken in place')
  for (const version of [4, 5] as const) t.equal(await code(t, p.url, version, HOOK_PASSWORD, 'hank'), 0, `MQTT ${version}: hank, whom only the hook knows, is admitted`)
  t.ok(hook.requests.some((r) => r.body.username === 'hank'), 'the hook was asked')
  const asked = hook.requests.length
  t.equal(await code(t, p.url, 5, await sign(key, { sub: 'late', aud: 'mqtt-old' })), 0x86, 'a refused token does not fall through to the hook')
  t.equal(await code(t, p.url, 5, await sign(key, { sub: 'late', aud: 'mqtt-new' })), 0, 'the JWT source still admits new-audience tokens')
  t.equal(hook.requests.length, asked, 'tokens are decided by the JWT source alone')

  t.ok(Date.now() < exp * 1000, 'the reloads were done before the tokens expired (else the test proves nothing)')
  for (const { client, version } of open) await roundTrip(client, `reload-auth/${version}`)
  t.equal(closedEarly, 0, 'no open client was closed by a reload')
  await Promise.all(ends)
  t.equal(closedEarly, 0, 'not before exp either')
  t.equal(await told, 0xa0, 'MQTT 5: DISCONNECT 0xA0 (maximum connect time) at the token\'s expiry')
  for (const version of [5, 4]) {
    const line = await p.logs.waitFor((l) => l.msg === 'connection closed' && l.clientId === `open-${version}`)
    t.equal(line.reason, 'GUARD_ERR_TOKEN_EXPIRED', `open-${version}: closed for its token's expiry`)
  }
})
