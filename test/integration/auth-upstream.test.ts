// The auth plugin and the broker's own authentication: our passwd command writes $7$ hashes
// Debian's Mosquitto accepts, and upstreamCredentials strip / fixed change what the broker sees.

import t, { type Test } from 'tap'
import { join } from 'node:path'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import type { LogLine } from '../helpers/log-sink.js'
import { assertNoPasswordsLogged, loginCode, tempDir } from '../helpers/auth-clients.js'
import { passwdCommand } from '../../plugins/auth/passwd.js'

const PASSWORDS = { alice: 'pw-Alice-u8e2', proxy: 'pw-Proxy-r6t1', wrong: 'pw-Wrong-c4n7' }
const dir = await tempDir(t, 'mqtt-guard-auth-upstream-')
const allLogs: LogLine[][] = []

async function proxyFor (t: Test, upstream: string, options: Record<string, unknown>): Promise<TestProxy> {
  const proxy = await startProxy({ config: { upstream, plugins: [{ name: 'auth', ...options }] } })
  t.teardown(() => proxy.stop())
  allLogs.push(proxy.logs.lines)
  return proxy
}

t.test('passwd writes a $7$ file that Debian Mosquitto accepts', async (t) => {
  const file = join(dir, 'for-mosquitto')
  t.equal(await passwdCommand([file, 'alice', '--password', PASSWORDS.alice]), 0)
  const mosquitto = await startMosquitto({ passwordFile: file, allowAnonymous: false })
  t.teardown(() => mosquitto.stop())
  for (const version of [4, 5] as const) {
    t.equal(await loginCode(t, mosquitto.url, version, 'alice', PASSWORDS.alice), 0, `MQTT ${version}: right password`)
    t.equal(await loginCode(t, mosquitto.url, version, 'alice', PASSWORDS.wrong), version === 5 ? 0x87 : 5, `MQTT ${version}: wrong password (Mosquitto 2.0: not authorized)`)
  }
})

t.test('strip: the broker sees no credentials', async (t) => {
  // Mosquitto admits anonymous clients but refuses alice, whom it does not know.
  const mosquitto = await startMosquitto({ allowAnonymous: true, passwords: { someone: PASSWORDS.proxy } })
  t.teardown(() => mosquitto.stop())
  const file = join(dir, 'strip')
  t.equal(await passwdCommand([file, 'alice', '--password', PASSWORDS.alice]), 0)
  t.equal(await loginCode(t, mosquitto.url, 4, 'alice', PASSWORDS.alice), 5, 'control: Mosquitto refuses alice directly')
  const passthrough = await proxyFor(t, mosquitto.url, { passwordFile: file })
  t.equal(await loginCode(t, passthrough.url, 4, 'alice', PASSWORDS.alice), 5, 'passthrough: Mosquitto refuses alice')
  const strip = await proxyFor(t, mosquitto.url, { passwordFile: file, upstreamCredentials: 'strip' })
  for (const version of [4, 5] as const) {
    t.equal(await loginCode(t, strip.url, version, 'alice', PASSWORDS.alice), 0, `MQTT ${version}: stripped login admitted`)
    t.equal(await loginCode(t, strip.url, version, 'alice', PASSWORDS.wrong), version === 5 ? 0x86 : 4, 'the proxy still checks')
  }
})

t.test('fixed: only the proxy\'s own user exists at the broker', async (t) => {
  const mosquitto = await startMosquitto({ allowAnonymous: false, passwords: { 'the-proxy': PASSWORDS.proxy } })
  t.teardown(() => mosquitto.stop())
  const file = join(dir, 'fixed')
  t.equal(await passwdCommand([file, 'alice', '--password', PASSWORDS.alice]), 0)
  const proxy = await proxyFor(t, mosquitto.url, {
    passwordFile: file, allowAnonymous: true, upstreamCredentials: { username: 'the-proxy', password: PASSWORDS.proxy }
  })
  for (const version of [4, 5] as const) {
    const v = (v4: number, v5: number): number => version === 5 ? v5 : v4
    t.equal(await loginCode(t, proxy.url, version, 'alice', PASSWORDS.alice), 0, `MQTT ${version}: alice through the proxy`)
    t.equal(await loginCode(t, proxy.url, version), 0, `MQTT ${version}: anonymous through the proxy (allowAnonymous)`)
    t.equal(await loginCode(t, proxy.url, version, 'alice', PASSWORDS.wrong), v(4, 0x86), 'wrong password refused by the proxy')
    t.equal(await loginCode(t, mosquitto.url, version, 'alice', PASSWORDS.alice), v(5, 0x87), `MQTT ${version}: alice directly refused (Mosquitto: not authorized)`)
    t.equal(await loginCode(t, mosquitto.url, version), v(5, 0x87), `MQTT ${version}: anonymous directly refused`)
  }
  t.match(mosquitto.log(), /u'the-proxy'/, 'the broker saw the proxy\'s user')
  t.notMatch(mosquitto.log(), /New client connected[^\n]*u'alice'/, 'never alice')
})

t.test('no test password appears in any log line', async (t) => {
  t.equal(allLogs.length, 3)
  assertNoPasswordsLogged(t, allLogs.flat(), Object.values(PASSWORDS))
})
