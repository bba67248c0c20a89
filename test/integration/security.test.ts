// Issue 9, security: ACL and auth through the proxy in front of a private Mosquitto (which has
// no ACL of its own, so whatever the proxy lets through reaches every subscriber), with the auth
// and acl plugins on, MQTT.js 3.1.1 and 5 and raw sockets for what MQTT.js will not send:
//   1. injection through user names and client IDs: `+`, `#`, `/`, `..`, `%u`/`%c` and empty
//      must not widen a `%u`/`%c` rule (U+0000 makes the CONNECT malformed: closed), nor does another user who brings alice's client
//      ID (and so her persistent session) get her `%u` messages; newline, CR, colon, `$7$…`,
//      blanks and `#` in a user name must not log anyone in, forge a password-file entry
//      or a log line (3.1.1 CONNACK 4/5, MQTT 5 0x86/0x87);
//   2. `$SYS`: never delivered through `#`, subscriptions refused unless a rule names `$SYS`,
//      deliveries refused by the receive check, publishes to `$SYS/…` refused;
//   3. wills: a will on a topic the user may not publish to is refused at CONNECT and never
//      reaches the broker, also when the client vanishes right after; an allowed will is
//      published when the socket is killed; and a will that became denied by a reload;
//   4. topic aliases (MQTT 5) both ways: re-mapping an alias to a denied topic, alias-only
//      publishes for an alias mapped to a denied topic, and the alias table kept consistent.
//
// Covered elsewhere, not repeated here:
// - test/unit/acl-rules.test.ts: the rule engine alone: %u/%c never resolve for '+', '#', '/',
//   '', NUL or a missing user; `#`/`+` never match `$`-topics (covers/overlaps); first-match order.
// - test/integration/acl.test.ts: partial SUBACKs, denied publishes never reaching the broker,
//   3.1.1 drop vs disconnect, receive denials, and the plain will refusal at CONNECT (code 5 /
//   0x87 for another client's `%c` will topic).
// - test/integration/auth.test.ts: wrong password / unknown user / no credentials codes, brute
//   force, reload; no password in logs. test/unit/password-file.test.ts: broken files refused
//   with FILE:LINE, and `passwd` refusing a user name with ':'.
// - test/integration/listeners.test.ts: a certificate's CN as `%u`.
// - test/integration/transparency-v5.test.ts: aliases relayed both ways (a plugin sees the real
//   topic), alias above the maximum → 0x94; test/integration/verdicts.test.ts: a dropped
//   PUBLISH that set an alias does not leave the broker without it.
// - test/integration/embedded.test.ts: wills published on a vanish, not after DISCONNECT.

import t, { type Test } from 'tap'
import type { IClientOptions, MqttClient } from 'mqtt'
import type { IConnackPacket, IConnectPacket, IPublishPacket, ISubscribePacket, Packet } from 'mqtt-packet'
import { appendFile, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { clientV } from '../helpers/e2e-mqtt.js'
import { RawMqttClient, remainingLength } from '../helpers/raw-client.js'
import { startFakeBroker } from '../helpers/fake-broker.js'
import { pollUntil } from '../helpers/processes.js'
import { assertNoPasswordsLogged, login, loginCode, tempDir } from '../helpers/auth-clients.js'
import type { LogLine } from '../helpers/log-sink.js'
import { passwdCommand } from '../../plugins/auth/passwd.js'
import { formatHash, hashPbkdf2 } from '../../plugins/auth/password-file.js'

const started = Date.now()
const PW = {
  alice: 'pw-Alice-4s1x',
  bob: 'pw-Bob-8s2y',
  carol: 'pw-Carol-6s7w',
  dave: 'pw-Dave-2s9v',
  watcher: 'pw-Watcher-3s4z',
  sysadmin: 'pw-Sysadmin-8s4m',
  sysub: 'pw-Sysub-6s3k',
  aliaser: 'pw-Aliaser-2s7j',
  plus: 'pw-Plus-4s3u',
  hash: 'pw-Hash-7s5t',
  slash: 'pw-Slash-1s6r',
  dots: 'pw-Dots-9s8q',
  pctc: 'pw-Pctc-5s2p',
  forged: 'pw-Forged-4s9h',
  comment: 'pw-Comment-7s2g'
}
/** The password file's users; the odd names are real users here, so only the rules stand in the way. */
const USERS: Record<string, string> = {
  alice: PW.alice,
  bob: PW.bob,
  carol: PW.carol,
  dave: PW.dave,
  watcher: PW.watcher,
  sysadmin: PW.sysadmin,
  sysub: PW.sysub,
  aliaser: PW.aliaser,
  '+': PW.plus,
  'a/#': PW.hash,
  'alice/x': PW.slash,
  '..': PW.dots,
  '%c': PW.pctc
}
const allLogs: LogLine[][] = []

const mosquitto = await startMosquitto({ extraConfig: 'sys_interval 1' })
t.teardown(() => mosquitto.stop())
const dir = await tempDir(t, 'mqtt-guard-security-')
const passwordFile = join(dir, 'passwd')
for (const [user, password] of Object.entries(USERS)) {
  if (await passwdCommand([passwordFile, user, '--password', password]) !== 0) throw new Error(`passwd ${user}`)
}
// A `#` line is a comment for Mosquitto and for the proxy: user `#` cannot exist, even with a hash.
await appendFile(passwordFile, `#:${formatHash(await hashPbkdf2(PW.comment))}\n`)

type Version = 4 | 5
const VERSIONS = [4, 5] as const
const modeOf = (v: Version): string => v === 5 ? 'MQTT 5' : 'MQTT 3.1.1'

async function guard (t: Test, rules: unknown[], acl: Record<string, unknown> = {}, upstream = mosquitto.url): Promise<TestProxy> {
  const proxy = await startProxy({
    config: {
      upstream,
      plugins: [
        // No brute-force blocks: this file fails many logins from 127.0.0.1 on purpose.
        { name: 'auth', passwordFile, bruteForce: false },
        { name: 'acl', rules, ...acl }
      ]
    }
  })
  t.teardown(() => proxy.stop())
  allLogs.push(proxy.logs.lines)
  return proxy
}

/** Logs in as `user` (its password from USERS) through MQTT.js; fails the test when refused. */
async function as (t: Test, url: string, version: Version, user: string, options: IClientOptions = {}): Promise<MqttClient> {
  const result = await login(t, url, version, { username: user, password: USERS[user], ...options })
  if (!result.ok) throw new Error(`${user} refused with ${String(result.code)}`)
  return result.client
}

interface Message { topic: string, payload: string, retain: boolean }

/** Every message a client gets, with waiting for a condition on them (an event, not a sleep). */
class Inbox {
  readonly got: Message[] = []
  private readonly waiters = new Set<() => void>()

  constructor (client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      this.got.push({ topic, payload: payload.toString(), retain: packet.retain })
      for (const w of this.waiters) w()
    })
  }

  async until (check: (got: Message[]) => boolean, what: string, timeoutMs = 8000): Promise<void> {
    if (check(this.got)) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { this.waiters.delete(w); reject(new Error(`${what}: not within ${timeoutMs} ms; got ${JSON.stringify(this.got.map((m) => m.topic))}`)) }, timeoutMs)
      const w = (): void => {
        if (!check(this.got)) return
        clearTimeout(timer)
        this.waiters.delete(w)
        resolve()
      }
      this.waiters.add(w)
    })
  }

  /** Publishes a marker through `via` and waits for it: what was on its way before has arrived. */
  async sync (via: MqttClient, topic: string): Promise<void> {
    const payload = `marker-${Math.random().toString(36).slice(2)}`
    await via.publishAsync(topic, payload, { qos: 1 })
    await this.until((got) => got.some((m) => m.topic === topic && m.payload === payload), `marker on ${topic}`)
  }

  lines (): string[] {
    return this.got.filter((m) => !m.payload.startsWith('marker-')).map((m) => `${m.topic} ${m.payload}`)
  }
}

/** The SUBACK return codes, whether MQTT.js resolves or rejects (it rejects on any failure). */
async function suback (client: MqttClient, filters: string[], qos: 0 | 1 | 2 = 1): Promise<number[]> {
  return await client.subscribeAsync(filters, { qos }).then(
    (granted) => granted.map((g) => g.qos as number),
    (err: Error & { packet?: { granted: number[] } }) => { if (err.packet === undefined) throw err; return err.packet.granted })
}

/** The PUBACK code of a QoS 1 publish as MQTT.js reports it (0 for a 3.1.1 PUBACK). */
async function publishCode (client: MqttClient, topic: string, payload: string, qos: 0 | 1 = 1, retain = false): Promise<number> {
  return await client.publishAsync(topic, payload, { qos, retain }).then(() => 0, (err: Error & { code?: number }) => err.code ?? -1)
}

/**
 * A hand-made CONNECT on a raw socket; resolves with the socket and the CONNACK code, or
 * `undefined` when the connection closed without a CONNACK.
 */
async function rawConnect (port: number, version: Version, fields: Partial<IConnectPacket> & { clientId: string }, password?: string): Promise<{ raw: RawMqttClient, code: number | undefined }> {
  const raw = await RawMqttClient.open(port, version)
  const connack = new Promise<IConnackPacket | undefined>((resolve) => {
    raw.on('packet', (p) => { if (p.cmd === 'connack') resolve(p) })
    void raw.closed.then(() => { resolve(undefined) })
  })
  raw.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, keepalive: 60, ...fields, ...(password !== undefined && { password: Buffer.from(password) }) })
  const packet = await connack
  return { raw, code: version === 5 ? packet?.reasonCode : packet?.returnCode }
}

/** Waits for Mosquitto's own log to say something (it has no event to subscribe to). */
async function mosquittoSaid (pattern: RegExp): Promise<void> {
  await pollUntil(`Mosquitto log ${String(pattern)}`, 8000, () => pattern.test(mosquitto.log()) ? true : undefined)
}

/** Kills the socket the hard way (RST, no DISCONNECT): the client "vanishes". */
async function kill (raw: RawMqttClient): Promise<void> {
  raw.socket.resetAndDestroy()
  await raw.closed
}

const aclDenials = (proxy: TestProxy, action: string): LogLine[] =>
  proxy.logs.lines.filter((l) => l.msg === 'acl denied' && l.action === action)

/** The deciding rules of `acl denied` lines; a SUBSCRIBE's one line names them per denied filter (the first few). */
const deniedRules = (lines: LogLine[]): unknown[] =>
  lines.flatMap((l) => Array.isArray(l.denied) ? (l.denied as Array<{ rule: string }>).map((d) => d.rule) : [l.rule])

// ---- 1. injection through user names and client IDs ---------------------------------------

const INJECTION_RULES = [
  { allow: ['publish', 'subscribe', 'receive'], topic: 'users/%u/#' },
  { allow: ['publish', 'subscribe', 'receive'], topic: 'clients/%c/#' },
  { allow: ['publish', 'subscribe', 'receive'], topic: 'dev-%c/%u' }
]

/** Filters nobody but alice (client alice-c) may have: a wider rule would grant some of them. */
const OTHERS = ['users/alice/#', 'users/+/#', 'users/#', '#', 'clients/alice-c/#', 'clients/+/#', 'dev-alice-c/alice', '+/+']

interface Widener {
  user: string
  clientId: string
  /** What a naive substitution (or path normalisation, or a second pass) would have granted. */
  naive: string[]
  /** The client's own, literal namespace: still granted, so the refusals above are not blanket ones. */
  own?: string
}

const WIDENERS: Widener[] = [
  { user: '+', clientId: 'inj-plus', naive: ['users/bob/#', 'dev-inj-plus/+'] },
  { user: 'a/#', clientId: 'inj-hash', naive: ['users/a/#', 'users/a/b'] },
  { user: 'alice/x', clientId: 'inj-slash', naive: ['users/alice/x/#'] },
  { user: '..', clientId: 'inj-dots', naive: ['users/alice/#'], own: 'users/../#' },
  { user: '%c', clientId: 'alice', naive: ['users/alice/#', 'dev-alice/alice'], own: 'users/%c/#' },
  { user: 'bob', clientId: '%u', naive: ['clients/bob/#', 'dev-bob/bob'], own: 'clients/%u/#' },
  { user: 'bob', clientId: '+', naive: ['clients/+/#', 'clients/bob/#'] },
  { user: 'bob', clientId: 'x/#', naive: ['clients/x/#', 'clients/x/y'] },
  { user: 'bob', clientId: 'alice-c/..', naive: ['clients/alice-c/#'] },
  { user: 'bob', clientId: '#', naive: ['clients/#'] }
]

for (const version of VERSIONS) {
  const mode = modeOf(version)
  const fail = version === 5 ? 0x87 : 0x80
  const refusedPublish = version === 5 ? 0x87 : 0 // 3.1.1 `drop`: PUBACK from the proxy, message dropped

  t.test(`${mode}: user names and client IDs with + # / .. %u %c never widen a %u/%c rule`, async (t) => {
    const proxy = await guard(t, INJECTION_RULES)
    const spy = await clientV(t, mosquitto.url, 4, { clientId: `inj-spy-${version}` })
    await spy.subscribeAsync(['users/#', 'clients/#', '+/+'], { qos: 1 })
    const seen = new Inbox(spy)
    const alice = await as(t, proxy.url, version, 'alice', { clientId: 'alice-c' })
    t.same(await suback(alice, ['users/alice/#', 'clients/alice-c/#', 'dev-alice-c/alice']), [1, 1, 1], 'alice (client alice-c): her own topics')
    const aliceGot = new Inbox(alice)
    t.equal(await publishCode(alice, 'users/alice/hello', 'from alice'), 0, 'alice publishes in her own namespace')

    for (const w of WIDENERS) {
      const label = `user ${JSON.stringify(w.user)}, client ${JSON.stringify(w.clientId)}`
      const client = await as(t, proxy.url, version, w.user, { clientId: w.clientId })
      const filters = [...OTHERS, ...w.naive]
      t.same(await suback(client, filters), filters.map(() => fail), `${label}: every filter of another refused`)
      if (w.own !== undefined) t.same(await suback(client, [w.own]), [1], `${label}: its own literal namespace ${w.own}`)
      for (const topic of ['users/alice/inbox', 'clients/alice-c/inbox', 'dev-alice-c/alice', ...w.naive.filter((f) => !/[+#]/.test(f))]) {
        t.equal(await publishCode(client, topic, `from ${label}`), refusedPublish, `${label}: publish to ${topic} refused`)
      }
      client.end(true)
    }

    await seen.sync(alice, 'users/alice/end')
    t.same(seen.lines(), ['users/alice/hello from alice'], 'the broker got no publish from the injected names')
    await aliceGot.sync(alice, 'users/alice/end2')
    t.same(aliceGot.lines(), ['users/alice/hello from alice'], 'alice got only her own message')
    const rules = new Set(deniedRules([...aclDenials(proxy, 'subscribe'), ...aclDenials(proxy, 'publish')]))
    t.same([...rules], ['default deny'], 'no %u/%c rule ever matched an injected name')
    t.notMatch(mosquitto.log(), /'(users\/alice\/inbox|clients\/alice-c\/inbox|dev-alice-c\/alice)'/, 'Mosquitto never received them')
  })
}

t.test('MQTT 3.1.1: an empty client ID never stands in for %c', async (t) => {
  const proxy = await guard(t, INJECTION_RULES)
  // MQTT.js would make up a client ID; a raw CONNECT keeps it empty (Mosquitto assigns one).
  const { raw, code } = await rawConnect(proxy.port, 4, { clientId: '', username: 'bob' }, PW.bob)
  t.teardown(() => raw.destroy())
  t.equal(code, 0, 'bob admitted with an empty client ID')
  raw.sendPacket({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'clients//#', qos: 1 }, { topic: 'clients/+/#', qos: 1 }, { topic: 'dev-/bob', qos: 1 }] })
  t.same((await raw.next('suback')).granted, [0x80, 0x80, 0x80], 'clients//#, clients/+/#, dev-/bob refused')
})

t.test('a client ID with U+0000 is never admitted, so it cannot pass for alice-c', async (t) => {
  const proxy = await guard(t, INJECTION_RULES)
  for (const version of VERSIONS) {
    const { raw, code } = await rawConnect(proxy.port, version, { clientId: 'alice-c\u0000x', username: 'bob' }, PW.bob)
    t.teardown(() => raw.destroy())
    // U+0000 is not allowed in an MQTT string [MQTT-1.5.4-2]: the proxy closes the connection
    // without CONNACK, before any plugin or the broker sees it.
    t.equal(code, undefined, `${modeOf(version)}: closed without CONNACK`)
    await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.reason === 'GUARD_ERR_MALFORMED' && String(l.detail).includes('client identifier contains U+0000'))
    if (code !== 0) continue
    raw.sendPacket({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'clients/alice-c/#', qos: 1 }] } as Packet)
    t.same((await raw.next('suback')).granted, [version === 5 ? 0x87 : 0x80], 'and if admitted, %c must not match')
  }
})

for (const version of VERSIONS) {
  t.test(`${modeOf(version)}: another user reusing a client ID gets none of the first user's %u messages`, async (t) => {
    const proxy = await guard(t, INJECTION_RULES)
    const clientId = `sess-alice-${version}`
    const session = version === 5 ? { clean: false, properties: { sessionExpiryInterval: 300 } } : { clean: false }
    const alice = await as(t, proxy.url, version, 'alice', { clientId, ...session })
    t.same(await suback(alice, ['users/alice/#']), [1], 'alice subscribes in a persistent session, then leaves')
    await alice.endAsync()
    const direct = await clientV(t, mosquitto.url, 4, { clientId: `sess-direct-${version}` })
    await direct.publishAsync('users/alice/queued', 'for alice', { qos: 1 })
    const result = await login(t, proxy.url, version, { username: 'bob', password: PW.bob, clientId, ...session })
    if (!result.ok) throw new Error(`bob refused with ${String(result.code)}`)
    const bob = result.client
    const got = new Inbox(bob)
    t.same(await suback(bob, ['users/bob/#']), [1], 'bob, with alice\'s client ID, subscribes to his own topics')
    await direct.publishAsync('users/alice/live', 'for alice', { qos: 1 })
    await got.sync(direct, 'users/bob/end')
    t.same(got.lines(), [], 'nothing of users/alice/# reaches bob, queued or live')
    // Mosquitto hands alice's session (and subscription) to whoever brings her client ID: the
    // broker delivers, the proxy's receive check refuses.
    const refused = aclDenials(proxy, 'receive').filter((l) => l.username === 'bob').map((l) => l.topic)
    t.same(refused, ['users/alice/queued', 'users/alice/live'], 'the broker delivered both to bob; the receive check refused them')
  })
}

for (const version of VERSIONS) {
  const mode = modeOf(version)
  const bad = version === 5 ? 0x86 : 4

  t.test(`${mode}: user names that try to inject into the password file or the log are refused with ${bad}`, async (t) => {
    const proxy = await guard(t, INJECTION_RULES)
    const forged = formatHash(await hashPbkdf2(PW.forged))
    const fakeLine = '{"level":30,"msg":"auth ok","forged":true,"username":"alice"}'
    // [user name, password]: each would log someone in if the name were split, trimmed,
    // cut at U+0000 or parsed as a password-file line.
    const attempts: Array<[string, string]> = [
      ['alice\n', PW.alice],
      ['alice\r', PW.alice],
      [' alice', PW.alice],
      ['alice ', PW.alice],
      ['mallory-inj\nalice', PW.alice],
      [`alice:${forged}`, PW.forged],
      [`mallory-inj\nalice:${forged}`, PW.forged],
      [`alice:${forged}\n`, PW.forged],
      [forged, PW.forged],
      ['#', PW.comment],
      [`#:${forged}`, PW.forged],
      ['%u', PW.alice],
      [`eve-inj"}\n${fakeLine}`, PW.alice],
      [`eve-inj\n${fakeLine}\n`, PW.forged]
    ]
    for (const [user, password] of attempts) {
      t.equal(await loginCode(t, proxy.url, version, user, password), bad, `user ${JSON.stringify(user)} refused`)
    }
    // U+0000 makes the CONNECT malformed [MQTT-1.5.4-2]: closed without CONNACK, never judged.
    for (const user of ['alice\u0000', 'alice\u0000bob']) {
      t.equal(await loginCode(t, proxy.url, version, user, PW.alice), undefined, `user ${JSON.stringify(user)}: closed without CONNACK`)
      await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.reason === 'GUARD_ERR_MALFORMED' && String(l.detail).includes('user name contains U+0000'))
    }
    await proxy.logs.waitFor((l) => l.msg === 'auth refused' && proxy.logs.lines.filter((x) => x.msg === 'auth refused').length >= attempts.length)
    const refusals = proxy.logs.lines.filter((l) => l.msg === 'auth refused')
    t.same(refusals.map((l) => [l.username, l.reason]), attempts.map(([user]) => [user, 'unknown-user']), 'each logged once, as one line, with the exact name, as an unknown user')
    t.equal(proxy.logs.lines.filter((l) => l.forged !== undefined || l.msg === 'auth ok').length, 0, 'no forged log line')
    t.equal(proxy.logs.lines.filter((l) => l.msg === 'connection opened' && l.level === 30).length, 0, 'nobody admitted')
    t.notMatch(mosquitto.log(), /mallory-inj|eve-inj|forged|\$7\$/, 'none of it reached Mosquitto')
    // Credentials half missing: a user name without password, (MQTT 5) a password without user name.
    t.equal(await loginCode(t, proxy.url, version, 'alice'), bad, 'alice without a password')
    await proxy.logs.waitFor((l) => l.msg === 'auth refused' && l.username === 'alice' && l.reason === 'wrong-password')
    if (version === 5) {
      // mqtt-packet will not encode it: MQTT 5 CONNECT, flags 0x42 (password, clean start), by hand.
      const str = (bytes: Buffer): number[] => [bytes.length >> 8, bytes.length & 0xff, ...bytes]
      const body = [...str(Buffer.from('MQTT')), 5, 0x42, 0, 60, 0, ...str(Buffer.from('inj-no-user')), ...str(Buffer.from(PW.alice))]
      const raw = await RawMqttClient.open(proxy.port, 5)
      t.teardown(() => raw.destroy())
      raw.send([0x10, ...remainingLength(body.length), ...body])
      t.equal((await raw.next('connack')).reasonCode, 0x86, 'a password without a user name')
      await proxy.logs.waitFor((l) => l.msg === 'auth refused' && l.clientId === 'inj-no-user' && l.reason === 'no-user-name')
    }
    t.equal(await loginCode(t, proxy.url, version), version === 5 ? 0x87 : 5, 'no credentials at all')
    // A correct login still works afterwards (no lock-out, no file damage).
    t.equal(await loginCode(t, proxy.url, version, 'alice', PW.alice), 0, 'alice with her password')
  })
}

t.test('passwd refuses user names that would add a line or a comment to the file', async (t) => {
  const before = await readFile(passwordFile, 'utf8')
  for (const user of ['eve\nmallory', 'eve\rmallory', 'mallory\n', '#mallory', ' mallory']) {
    t.equal(await passwdCommand([passwordFile, user, '--password', PW.forged]), 2, `${JSON.stringify(user)} refused`)
  }
  t.equal(await passwdCommand([passwordFile, 'mallory', '--password', `${PW.forged}\nalice:${formatHash(await hashPbkdf2(PW.forged))}`]), 1, 'a password with a line break refused')
  t.equal(await readFile(passwordFile, 'utf8'), before, 'the file is unchanged')
})

// ---- 2. $SYS ------------------------------------------------------------------------------

const SYS_RULES = [
  { allow: ['subscribe', 'receive'], topic: '$SYS/#', users: ['sysadmin'] },
  { allow: 'subscribe', topic: '$SYS/#', users: ['sysub'] },
  { allow: ['subscribe', 'receive'], topic: 'sys-test/#', users: ['sysadmin', 'sysub'] },
  { allow: ['publish', 'subscribe', 'receive'], topic: '#', users: ['watcher', 'sysub'] }
]

for (const version of VERSIONS) {
  const mode = modeOf(version)
  const fail = version === 5 ? 0x87 : 0x80

  t.test(`${mode}: $SYS only for a rule that names it [MQTT-4.7.2-1]`, async (t) => {
    const proxy = await guard(t, SYS_RULES)
    const direct = await clientV(t, mosquitto.url, 4, { clientId: `sys-direct-${version}` })
    const watcher = await as(t, proxy.url, version, 'watcher', { clientId: `sys-watcher-${version}` })
    const watched = new Inbox(watcher)
    t.same(await suback(watcher, ['#', '+/broker/uptime']), [1, 1], '# and +/… granted: they do not match $SYS')
    t.same(await suback(watcher, ['$SYS/#', '$SYS/broker/uptime', '$SYS', '$share/g/$SYS/#', '$SYS/+']), [fail, fail, fail, fail, fail], '# allowed, yet $SYS filters refused')
    // sysub may subscribe to $SYS/# but only receive through `#`: the broker delivers, the proxy must refuse.
    const sysub = await as(t, proxy.url, version, 'sysub', { clientId: `sys-sub-${version}` })
    const subbed = new Inbox(sysub)
    t.same(await suback(sysub, ['$SYS/#', 'sys-test/#']), [1, 1], 'sysub may subscribe to $SYS/# (but not receive it)')
    const sysadmin = await as(t, proxy.url, version, 'sysadmin', { clientId: `sys-admin-${version}` })
    const admin = new Inbox(sysadmin)
    t.same(await suback(sysadmin, ['$SYS/#', 'sys-test/#']), [1, 1], 'a rule naming $SYS grants it')
    // Retained $SYS topics come at once; a second uptime is a live one, sent after every subscription above.
    await admin.until((got) => got.filter((m) => m.topic === '$SYS/broker/uptime').length >= 2, 'two $SYS uptimes for sysadmin')
    const refused = await proxy.logs.waitFor((l) => l.msg === 'acl denied' && l.action === 'receive' && l.username === 'sysub' && String(l.topic).startsWith('$SYS/'))
    t.equal(refused.rule, 'default deny', 'the broker delivered $SYS to sysub and the proxy refused it: # does not cover $SYS')

    // Publishing to $SYS with `publish #` allowed.
    const refusedPublish = version === 5 ? 0x87 : 0 // 3.1.1 `drop`: PUBACK from the proxy, message dropped
    t.equal(await publishCode(watcher, '$SYS/broker/injected', 'fake', 1, true), refusedPublish, 'publish # allowed, yet $SYS/broker/injected (QoS 1, retained) refused')
    t.equal(await publishCode(watcher, '$SYS/injected', 'fake', 0), 0, '$SYS/injected QoS 0 (dropped)')
    t.equal(await publishCode(watcher, '$SYS', 'fake', 1), refusedPublish, '$SYS itself refused')

    await Promise.all([watched.sync(direct, `sys-test/${version}/end`), subbed.sync(direct, `sys-test/${version}/end`), admin.sync(direct, `sys-test/${version}/end`)])
    t.same(watched.got.filter((m) => m.topic.startsWith('$')), [], 'subscribed to #: no $SYS message')
    t.same(subbed.got.filter((m) => m.topic.startsWith('$')), [], 'subscribed to $SYS/# without receive: no $SYS message')
    t.ok(admin.got.length > 2, 'sysadmin got $SYS messages')
    t.same(admin.got.filter((m) => m.topic.includes('injected') || m.payload === 'fake'), [], 'no injected $SYS message')
    t.same(aclDenials(proxy, 'publish').map((l) => l.topic), ['$SYS/broker/injected', '$SYS/injected', '$SYS'], 'each $SYS publish denied and logged')
    t.notMatch(mosquitto.log(), /'\$SYS(\/broker\/injected|\/injected)?'/, 'Mosquitto never received a $SYS publish')
  })
}

// ---- 3. wills -----------------------------------------------------------------------------

const WILL_RULES = [
  { allow: 'publish', topic: 'wills/%u', qos: [0, 1], retain: false },
  { allow: 'publish', topic: 'lwt/%c' },
  { allow: ['publish', 'subscribe', 'receive'], topic: '#', users: ['watcher'] }
]

for (const version of VERSIONS) {
  const mode = modeOf(version)
  const notAuthorized = version === 5 ? 0x87 : 5

  t.test(`${mode}: a will the user may not publish is refused at CONNECT and never published`, async (t) => {
    const proxy = await guard(t, WILL_RULES)
    const watcher = await as(t, proxy.url, version, 'watcher', { clientId: `will-watcher-${version}` })
    t.same(await suback(watcher, ['wills/#', 'lwt/#']), [1, 1], 'watcher subscribed to every will topic')
    const watched = new Inbox(watcher)
    const will = (topic: string, qos: 0 | 1 | 2 = 1, retain = false): IConnectPacket['will'] => ({ topic, payload: Buffer.from(`will of ${topic}`), qos, retain })
    const denied: Array<[string, string, IConnectPacket['will']]> = [
      ['carol', `wd-${version}-other`, will('wills/alice')],
      ['carol', `wd-${version}-retain`, will('wills/carol', 1, true)],
      ['carol', `wd-${version}-qos2`, will('wills/carol', 2)],
      ['+', `wd-${version}-plus`, will('wills/alice')],
      ['a/#', `wd-${version}-hash`, will('wills/a/b')],
      ['alice/x', `wd-${version}-slash`, will('wills/alice/x')],
      ['watcher', `wd-${version}-sys`, will('$SYS/broker/clients/connected', 0)],
      ['carol', '+', will('lwt/x')],
      ['carol', '', will('lwt/')]
    ]
    for (const [user, clientId, w] of denied) {
      const { raw, code } = await rawConnect(proxy.port, version, { clientId, username: user, will: w }, USERS[user])
      t.equal(code, notAuthorized, `user ${user}, client ${JSON.stringify(clientId)}, will on ${w?.topic ?? ''} (q${w?.qos ?? 0} r${w?.retain === true ? 1 : 0}): refused`)
      await kill(raw)
    }
    // The same, but the client vanishes right after its CONNECT, before any answer.
    const vanishing = await RawMqttClient.open(proxy.port, version)
    vanishing.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, keepalive: 60, clientId: `wd-${version}-vanish`, username: 'carol', password: Buffer.from(PW.carol), will: will('wills/alice') })
    t.teardown(() => vanishing.destroy())
    vanishing.socket.end()
    await proxy.logs.waitFor((l) => l.msg === 'acl denied' && l.clientId === `wd-${version}-vanish`)
    t.equal(aclDenials(proxy, 'publish').length, denied.length + 1, 'every will denied, with its rule')

    // Allowed wills are published when the client vanishes: the check above could see one.
    const { raw: carol, code } = await rawConnect(proxy.port, version, { clientId: `wa-${version}-carol`, username: 'carol', will: { topic: 'wills/carol', payload: Buffer.from('carol killed'), qos: 1, retain: false } }, PW.carol)
    t.equal(code, 0, 'carol admitted with a will on wills/carol')
    await kill(carol)
    const early = await RawMqttClient.open(proxy.port, version)
    early.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, keepalive: 60, clientId: `wa-${version}-early`, username: 'carol', password: Buffer.from(PW.carol), will: { topic: 'wills/carol', payload: Buffer.from('carol left early'), qos: 1, retain: false } })
    t.teardown(() => early.destroy())
    early.socket.end()
    await watched.until((got) => got.length >= 2, 'the two allowed wills')
    await watched.sync(watcher, 'wills/zz-end')
    t.same(watched.lines().sort(), ['wills/carol carol killed', 'wills/carol carol left early'], 'only the allowed wills were published')
    const log = mosquitto.log()
    for (const [, clientId] of denied.filter(([, id]) => id.startsWith('wd-'))) t.notMatch(log, clientId, `Mosquitto never saw ${clientId}`)
    t.notMatch(log, `wd-${version}-vanish`)
  })
}

// A will is checked at CONNECT and again when the broker would publish it: a reload in between
// that denies it makes the proxy end the broker session normally, and the broker discards it.
const WILL_ENDS = [
  { version: 5, end: 'vanishes' },
  { version: 4, end: 'vanishes' },
  { version: 5, end: 'sends DISCONNECT 0x04 (with will)' }
] as const
for (const [i, { version, end }] of WILL_ENDS.entries()) {
  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: a will that a reload denied is not published when the client ${end}`, async (t) => {
    const aclFile = join(dir, `will-acl-${i}`)
    const clientId = `reload-dave-${i}`
    await writeFile(aclFile, 'user dave\ntopic write wills/dave\n')
    const proxy = await guard(t, [{ allow: ['publish', 'subscribe', 'receive'], topic: '#', users: ['watcher'] }], { aclFile })
    const watcher = await as(t, proxy.url, 5, 'watcher', { clientId: `reload-watcher-${i}` })
    t.same(await suback(watcher, ['wills/#']), [1], 'watcher subscribed to wills/#')
    const watched = new Inbox(watcher)
    const { raw: dave, code } = await rawConnect(proxy.port, version, { clientId, username: 'dave', will: { topic: 'wills/dave', payload: Buffer.from('dave gone'), qos: 1, retain: false } }, PW.dave)
    t.equal(code, 0, 'admitted: the will topic is allowed at CONNECT')
    await writeFile(aclFile, 'user dave\ntopic write elsewhere/dave\n')
    await proxy.server.reload()
    await proxy.logs.waitFor((l) => l.msg === 'file reloaded' && l.file === aclFile)
    dave.sendPacket({ cmd: 'publish', topic: 'wills/dave', payload: Buffer.from('now denied'), qos: 1, messageId: 1, dup: false, retain: false })
    if (version === 5) t.equal((await dave.next('puback')).reasonCode, 0x87, 'after the reload dave may no longer publish to wills/dave')
    else await proxy.logs.waitFor((l) => l.msg === 'acl denied' && l.clientId === clientId && l.topic === 'wills/dave')
    if (end === 'vanishes') await kill(dave)
    else dave.sendPacket({ cmd: 'disconnect', reasonCode: 0x04 })
    await proxy.logs.waitFor((l) => l.msg === 'will withheld: no longer allowed since CONNECT' && l.clientId === clientId)
    await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.clientId === clientId)
    // Mosquitto sends a will as it notices the close, before it handles anything that comes later.
    await mosquittoSaid(new RegExp(`Client ${clientId} (closed its connection|disconnected)|Socket error on client ${clientId}`))
    await watched.sync(watcher, 'wills/zz-end')
    t.same(watched.lines(), [], 'no will on a topic dave may no longer publish to')
  })
}

// ---- 4. topic aliases ---------------------------------------------------------------------

t.test('MQTT 5 client→broker: an alias re-mapped to a denied topic never carries a message there', async (t) => {
  const proxy = await guard(t, [
    { deny: 'publish', topic: 'alias/open/secret/#' },
    { allow: 'publish', topic: 'alias/open/#', users: ['aliaser'] }
  ])
  const spy = await clientV(t, mosquitto.url, 4, { clientId: 'alias-spy' })
  await spy.subscribeAsync('alias/#', { qos: 1 })
  const seen = new Inbox(spy)
  const { raw, code } = await rawConnect(proxy.port, 5, { clientId: 'aliaser-1', username: 'aliaser' }, PW.aliaser)
  t.teardown(() => raw.destroy())
  t.equal(code, 0, 'aliaser admitted')
  t.equal((await raw.next('connack')).properties?.topicAliasMaximum, 10, 'Mosquitto allows aliases 1..10')
  let id = 0
  const pub = async (topic: string, alias: number, payload: string, qos: 0 | 1 = 1): Promise<number | undefined> => {
    const messageId = ++id
    raw.sendPacket({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, dup: false, retain: false, ...(qos > 0 && { messageId }), properties: { topicAlias: alias } } as IPublishPacket)
    if (qos === 0) return undefined
    const ack = await raw.take('puback')
    t.equal(ack.messageId, messageId, `PUBACK for ${payload}`)
    return ack.reasonCode ?? 0
  }
  t.equal(await pub('alias/open/a', 1, 'a1'), 0, 'alias 1 → alias/open/a, allowed')
  t.equal(await pub('alias/secret/b', 1, 'b2'), 0x87, 'alias 1 re-mapped to a denied topic: refused')
  t.equal(await pub('', 1, 'b3'), 0x87, 'alias 1 alone now means alias/secret/b: refused (not sent as alias/open/a)')
  await pub('alias/secret/c', 1, 'c4', 0)
  await pub('', 1, 'c5', 0)
  t.equal(await pub('alias/open/secret/d', 2, 'd6'), 0x87, 'alias 2 set up on a denied topic: refused')
  t.equal(await pub('', 2, 'd7'), 0x87, 'alias 2 alone: refused')
  await pub('', 2, 'd8', 0)
  t.equal(await pub('alias/open/e', 1, 'e9'), 0, 'alias 1 back to an allowed topic')
  t.equal(await pub('', 1, 'e10'), 0, 'and used alone')
  t.equal(await pub('alias/open/f', 2, 'f11'), 0, 'alias 2 re-mapped to an allowed topic')
  t.equal(await pub('', 2, 'f12'), 0, 'and used alone')
  t.notOk(raw.isClosed, 'still connected after the refusals')
  await seen.sync(spy, 'alias/zz-end')
  t.same(seen.lines(), ['alias/open/a a1', 'alias/open/e e9', 'alias/open/e e10', 'alias/open/f f11', 'alias/open/f f12'], 'only allowed messages, each under its own topic')
  t.same(aclDenials(proxy, 'publish').map((l) => `${String(l.topic)} ${String(l.rule)}`), [
    'alias/secret/b default deny', 'alias/secret/b default deny', 'alias/secret/c default deny', 'alias/secret/c default deny',
    'alias/open/secret/d rules[0]', 'alias/open/secret/d rules[0]', 'alias/open/secret/d rules[0]'
  ], 'the acl judged the real topic behind each alias')
  t.notMatch(mosquitto.log(), /'alias\/(secret|open\/secret)/, 'Mosquitto never received a denied topic')

  // An alias never set up: the proxy cannot know the topic, so it refuses, and the broker sees nothing.
  await pub('', 3, 'u13', 0)
  t.equal((await raw.next('disconnect')).reasonCode, 0x82, 'unknown alias: DISCONNECT 0x82')
  await raw.waitClose()
  await seen.sync(spy, 'alias/zz-end2')
  t.notOk(seen.got.some((m) => m.payload === 'u13'), 'the unknown alias\'s message went nowhere')
})

t.test('MQTT 5 broker→client: a delivery re-mapping an alias to a denied topic is refused, the client\'s table stays right', async (t) => {
  type Step = [topic: string, alias: number | undefined, payload: string]
  const SCRIPT: Step[] = [
    ['fake/ok/a', 3, 'd1'],
    ['fake/secret/b', 3, 'd2'], // alias 3 re-mapped to a denied topic
    ['', 3, 'd3'], // alias 3 alone: fake/secret/b for the broker, fake/ok/a in the client's table
    ['fake/secret/c', 4, 'd4'],
    ['', 4, 'd5'],
    ['fake/ok/e', 3, 'd6'],
    ['', 3, 'd7'],
    ['fake/ok/end', undefined, 'end']
  ]
  const fake = await startFakeBroker(async (s) => {
    await s.next('connect')
    s.send({ cmd: 'connack', sessionPresent: false, reasonCode: 0, properties: { topicAliasMaximum: 0 } })
    const sub = await s.next('subscribe') as ISubscribePacket
    s.send({ cmd: 'suback', messageId: sub.messageId as number, granted: [1] })
    let messageId = 100
    for (const [topic, alias, payload] of SCRIPT) {
      s.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, dup: false, retain: false, messageId: ++messageId, properties: alias === undefined ? {} : { topicAlias: alias } })
    }
  })
  t.teardown(() => fake.close())
  const proxy = await guard(t, [{ deny: 'receive', topic: 'fake/secret/#' }, { allow: ['subscribe', 'receive'], topic: 'fake/#' }], {}, fake.url)
  const { raw, code } = await rawConnect(proxy.port, 5, { clientId: 'alias-receiver', username: 'alice', properties: { topicAliasMaximum: 10 } }, PW.alice)
  t.teardown(() => raw.destroy())
  t.equal(code, 0, 'alice admitted, allowing the broker aliases')
  const received: Array<[string, number | undefined, string]> = []
  const table = new Map<number, string>()
  const resolved: string[] = []
  const done = new Promise<void>((resolve) => {
    raw.on('packet', (p) => {
      if (p.cmd !== 'publish') return
      const alias = p.properties?.topicAlias
      received.push([p.topic, alias, p.payload.toString()])
      if (alias !== undefined && p.topic !== '') table.set(alias, p.topic)
      resolved.push(`${p.topic === '' && alias !== undefined ? table.get(alias) ?? '?' : p.topic} ${p.payload.toString()}`)
      raw.sendPacket({ cmd: 'puback', messageId: p.messageId as number, reasonCode: 0 } as Packet)
      if (p.payload.toString() === 'end') resolve()
    })
  })
  raw.sendPacket({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'fake/#', qos: 1 }] } as Packet)
  t.same((await raw.next('suback')).granted, [1], 'fake/# granted')
  await done
  t.same(received, [['fake/ok/a', 3, 'd1'], ['fake/ok/e', 3, 'd6'], ['', 3, 'd7'], ['fake/ok/end', undefined, 'end']], 'what the client got, as bytes')
  t.same(resolved, ['fake/ok/a d1', 'fake/ok/e d6', 'fake/ok/e d7', 'fake/ok/end end'], 'and what its alias table makes of it')
  const session = fake.sessions[0]
  if (session === undefined) throw new Error('no broker session')
  const acks = new Map<number, number>()
  while (acks.size < SCRIPT.length) {
    const p = await session.next()
    if (p.cmd === 'puback') acks.set(p.messageId as number, p.reasonCode ?? 0)
  }
  t.same([...acks.entries()].sort((a, b) => a[0] - b[0]), [[101, 0], [102, 0x87], [103, 0x87], [104, 0x87], [105, 0x87], [106, 0], [107, 0], [108, 0]], 'refused deliveries acknowledged to the broker with 0x87')
  t.same(aclDenials(proxy, 'receive').map((l) => l.topic), ['fake/secret/b', 'fake/secret/b', 'fake/secret/c', 'fake/secret/c'], 'the acl judged the real topic behind each alias')
})

t.test('no test password appears in any log line', async (t) => {
  t.ok(allLogs.length >= 8, 'logs of every proxy collected')
  assertNoPasswordsLogged(t, allLogs.flat(), Object.values(PW))
  t.comment(`security.test: ${((Date.now() - started) / 1000).toFixed(1)} s`)
})
