// The auth plugin through the proxy in front of a private Mosquitto, with MQTT.js 3.1.1 and 5:
// logins against files made by Debian's mosquitto_passwd, refusal codes, anonymous access,
// brute-force blocks, reload by file change and by reload(), and no password in any log.

import t, { type Test } from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import type { LogLine } from '../helpers/log-sink.js'
import { assertNoPasswordsLogged, login, loginCode, mosquittoPasswdFile, tempDir } from '../helpers/auth-clients.js'
import { passwdCommand } from '../../plugins/auth/passwd.js'

const PASSWORDS = { alice: 'pw-Alice-7q2x', bob: 'pw-Bob-sha-9k1z', late: 'pw-Late-4m8w', wrong: 'pw-Wrong-3j5v' }
const ALL = Object.values(PASSWORDS)
const allLogs: LogLine[][] = []

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const dir = await tempDir(t, 'mqtt-guard-auth-')
// alice: $7$ (PBKDF2-SHA512, the default); bob: $6$ (salted SHA-512, -H sha512).
const mosquittoFile = await mosquittoPasswdFile(join(dir, 'passwd'), [
  { user: 'alice', password: PASSWORDS.alice },
  { user: 'bob', password: PASSWORDS.bob, sha512: true }
])

async function proxyWith (t: Test, options: Record<string, unknown>): Promise<TestProxy> {
  const proxy = await startProxy({ config: { upstream: mosquitto.url, plugins: [{ name: 'auth', ...options }] } })
  t.teardown(() => proxy.stop())
  allLogs.push(proxy.logs.lines)
  return proxy
}

const refused = (reason: string) => (l: LogLine): boolean => l.msg === 'auth refused' && l.reason === reason

for (const version of [4, 5] as const) {
  const mode = version === 5 ? 'MQTT 5' : 'MQTT 3.1.1'
  const code = (v4: number, v5: number): number => version === 5 ? v5 : v4

  t.test(`${mode}: good logins, wrong password, unknown user, no credentials`, async (t) => {
    const proxy = await proxyWith(t, { passwordFile: mosquittoFile })
    t.equal(await loginCode(t, proxy.url, version, 'alice', PASSWORDS.alice), 0, '$7$ user admitted')
    t.equal(await loginCode(t, proxy.url, version, 'bob', PASSWORDS.bob), 0, '$6$ user admitted')
    t.equal(await loginCode(t, proxy.url, version, 'alice', PASSWORDS.wrong), code(4, 0x86), 'wrong password')
    t.equal(await loginCode(t, proxy.url, version, 'mallory', PASSWORDS.wrong), code(4, 0x86), 'unknown user')
    t.equal(await loginCode(t, proxy.url, version), code(5, 0x87), 'no credentials')
    const wrong = await proxy.logs.waitFor(refused('wrong-password'))
    t.match(wrong, { level: 40, username: 'alice', address: '127.0.0.1', clientId: String })
    const unknown = await proxy.logs.waitFor(refused('unknown-user'))
    t.equal(unknown.username, 'mallory')
    await proxy.logs.waitFor(refused('no-credentials'))
    t.equal(proxy.logs.lines.filter((l) => l.msg === 'auth refused').length, 3, 'each refusal logged once')
    t.equal(proxy.logs.lines.filter((l) => l.msg === 'connection opened' && l.level === 30).length, 2)
  })

  t.test(`${mode}: allowAnonymous admits clients without credentials, still checks given ones`, async (t) => {
    const proxy = await proxyWith(t, { passwordFile: mosquittoFile, allowAnonymous: true })
    t.equal(await loginCode(t, proxy.url, version), 0)
    t.equal(await loginCode(t, proxy.url, version, 'alice', PASSWORDS.alice), 0)
    t.equal(await loginCode(t, proxy.url, version, 'alice', PASSWORDS.wrong), code(4, 0x86))
  })

  t.test(`${mode}: brute force blocks an address, quickly, then the block expires`, async (t) => {
    const proxy = await proxyWith(t, { passwordFile: mosquittoFile, bruteForce: { maxFailures: 3, windowMs: 10_000, blockMs: 400 } })
    for (let i = 0; i < 3; i++) t.equal(await loginCode(t, proxy.url, version, `guess${i}`, PASSWORDS.wrong), code(4, 0x86))
    const block = await proxy.logs.waitFor((l) => l.msg === 'brute force: blocked' && l.key === 'address:127.0.0.1')
    t.match(block, { failures: 3, maxFailures: 3, windowMs: 10_000, blockMs: 400, username: 'guess2', address: '127.0.0.1' })
    // Even the right password is refused while blocked, with "banned", without verifying.
    t.equal(await loginCode(t, proxy.url, version, 'alice', PASSWORDS.alice), code(5, 0x8a))
    const blocked = await proxy.logs.waitFor(refused('blocked'))
    t.match(blocked.detail, /^address:127\.0\.0\.1 blocked until /)
    // The block ends at the time the log announced.
    const until = Date.parse(block.until as string)
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, until - Date.now()) + 20))
    t.equal(await loginCode(t, proxy.url, version, 'alice', PASSWORDS.alice), 0, 'admitted after the block')
  })

  t.test(`${mode}: brute force counts per user name too; a success clears the user's count`, async (t) => {
    const opts = { passwordFile: mosquittoFile, bruteForce: { maxFailures: 2, windowMs: 10_000, blockMs: 60_000 } }
    const blockedKeys = async (proxy: TestProxy, refusals: number): Promise<unknown[]> => {
      await proxy.logs.waitFor((l) => l.msg === 'auth refused' && proxy.logs.lines.filter((x) => x.msg === 'auth refused').length >= refusals)
      return proxy.logs.lines.filter((l) => l.msg === 'brute force: blocked').map((l) => l.key)
    }
    const first = await proxyWith(t, opts)
    t.equal(await loginCode(t, first.url, version, 'bob', PASSWORDS.wrong), code(4, 0x86))
    t.equal(await loginCode(t, first.url, version, 'bob', PASSWORDS.bob), 0)
    t.equal(await loginCode(t, first.url, version, 'bob', PASSWORDS.wrong), code(4, 0x86))
    t.same(await blockedKeys(first, 2), ['address:127.0.0.1'], 'user count was cleared by the success')
    const second = await proxyWith(t, opts)
    t.equal(await loginCode(t, second.url, version, 'bob', PASSWORDS.wrong), code(4, 0x86))
    t.equal(await loginCode(t, second.url, version, 'bob', PASSWORDS.wrong), code(4, 0x86))
    t.same(await blockedKeys(second, 2), ['address:127.0.0.1', 'user:bob'])
  })
}

t.test('reload on file change (passwd command) and by reload(); a broken file keeps the old users', async (t) => {
  const file = join(dir, 'reloading')
  t.equal(await passwdCommand([file, 'alice', '--password', PASSWORDS.alice]), 0)
  const proxy = await proxyWith(t, { passwordFile: file, bruteForce: false })
  const reloads = (n: number) => (l: LogLine): boolean => l.msg === 'file reloaded' && proxy.logs.lines.filter((x) => x.msg === 'file reloaded').length >= n
  t.equal(await loginCode(t, proxy.url, 5, 'late', PASSWORDS.late), 0x86)
  t.equal(await passwdCommand([file, 'late', '--password', PASSWORDS.late]), 0)
  await proxy.logs.waitFor(reloads(1))
  t.equal(await loginCode(t, proxy.url, 5, 'late', PASSWORDS.late), 0, 'new user admitted after the watcher reloaded')
  t.equal(await loginCode(t, proxy.url, 4, 'alice', PASSWORDS.alice), 0)

  const good = await readFile(file, 'utf8')
  await writeFile(file, 'alice:$7$101$broken\nnot a line\n')
  const broken = await proxy.logs.waitFor((l) => l.msg === 'file not reloaded: previous content stays in force')
  t.match(broken.err, /reloading:1: user "alice"/)
  t.equal(await loginCode(t, proxy.url, 4, 'late', PASSWORDS.late), 0, 'old users still in force')

  await writeFile(file, good.split('\n').filter((l) => !l.startsWith('alice:')).join('\n'))
  const before = proxy.logs.lines.filter((x) => x.msg === 'file reloaded').length
  await proxy.server.reload()
  await proxy.logs.waitFor(reloads(before + 1))
  t.equal(await loginCode(t, proxy.url, 4, 'alice', PASSWORDS.alice), 4, 'deleted user refused after reload()')
})

t.test('reload() without watching', async (t) => {
  const file = join(dir, 'unwatched')
  t.equal(await passwdCommand([file, 'alice', '--password', PASSWORDS.alice]), 0)
  const proxy = await proxyWith(t, { passwordFile: file, watch: false })
  t.equal(await passwdCommand([file, 'late', '--password', PASSWORDS.late]), 0)
  t.equal(await loginCode(t, proxy.url, 4, 'late', PASSWORDS.late), 4, 'not watched: not yet known')
  await proxy.server.reload()
  await proxy.logs.waitFor((l) => l.msg === 'file reloaded')
  t.equal(await loginCode(t, proxy.url, 4, 'late', PASSWORDS.late), 0)
})

t.test('a connected client stays connected when its user is deleted', async (t) => {
  const file = join(dir, 'stay')
  t.equal(await passwdCommand([file, 'alice', '--password', PASSWORDS.alice]), 0)
  const proxy = await proxyWith(t, { passwordFile: file, watch: false })
  const result = await login(t, proxy.url, 5, { username: 'alice', password: PASSWORDS.alice })
  if (!result.ok) throw new Error('login failed')
  await result.client.subscribeAsync('stay/#', { qos: 1 })
  t.equal(await passwdCommand([file, 'alice', '--delete']), 0)
  await proxy.server.reload()
  await proxy.logs.waitFor((l) => l.msg === 'file reloaded')
  const got = new Promise<string>((resolve) => { result.client.once('message', (_topic, payload) => { resolve(payload.toString()) }) })
  await result.client.publishAsync('stay/1', 'still here', { qos: 1 })
  t.equal(await got, 'still here')
})

t.test('no test password appears in any log line', async (t) => {
  t.ok(allLogs.length >= 10)
  assertNoPasswordsLogged(t, allLogs.flat(), ALL)
})
