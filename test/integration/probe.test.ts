// `mqtt-guard probe` as a user runs it (the CLI, a child process) against a real Mosquitto with
// and without TLS, and against mqtt-guard itself: every step passes on a healthy path, and each
// fault stops the probe at its own step with the words and the fix that belong to it: a wrong
// password, a refused ACL, a closed port, a name that does not resolve, an expired, untrusted
// or misnamed certificate, TLS on a plain port and the other way round.

import t, { type Test } from 'tap'
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js'
import { startProxy } from '../helpers/proxy.js'
import { runToExit } from '../helpers/cli-process.js'
import { freePort } from '../helpers/ports.js'
import { makePki } from '../helpers/certs.js'
import type { ProbeReport, ProbeStep } from '../../src/cli/probe.js'
import path from 'node:path'
import { writeFile } from 'node:fs/promises'
import { tempDir } from '../helpers/auth-clients.js'
import { formatHash, hashPbkdf2 } from '../../plugins/auth/password-file.js'

const pki = await makePki(t)
const good = await pki.server(['localhost'], { name: 'good', days: 400 })
const soon = await pki.server(['localhost'], { name: 'soon', days: 10 })
const expired = await pki.server(['localhost'], { name: 'expired', days: 0 })

/** Mosquitto with a plain listener and a TLS one (certificate `cert`). */
async function mosquittoWithTls (t: Test, cert: { cert: string, key: string }, options: Parameters<typeof startMosquitto>[0] = {}): Promise<{ broker: Mosquitto, tlsPort: number }> {
  const tlsPort = await freePort()
  const broker = await startMosquitto({ ...options, extraConfig: `listener ${tlsPort} 127.0.0.1\ncafile ${pki.ca}\ncertfile ${cert.cert}\nkeyfile ${cert.key}\n${options.extraConfig ?? ''}` })
  t.teardown(() => broker.stop())
  return { broker, tlsPort }
}

async function probe (args: string[]): Promise<{ code: number | null, report: ProbeReport, stderr: string }> {
  const r = await runToExit(['probe', ...args, '--json', '--timeout', '2'], { timeoutMs: 30_000 })
  let report: ProbeReport
  try {
    report = JSON.parse(r.stdout) as ProbeReport
  } catch {
    throw new Error(`probe printed no JSON report (exit ${String(r.code)}): ${r.stdout}${r.stderr}`)
  }
  return { code: r.code, report, stderr: r.stderr }
}

const names = (r: ProbeReport): string[] => r.steps.map((s) => s.step)
const last = (r: ProbeReport): ProbeStep => r.steps.at(-1) as ProbeStep
const FULL = ['resolve', 'tcp', 'connect', 'subscribe', 'qos 0', 'qos 1', 'qos 2', 'disconnect']

const plain = await startMosquitto()
t.teardown(() => plain.stop())

for (const version of ['311', '5']) {
  t.test(`MQTT ${version === '5' ? '5' : '3.1.1'}: every step passes against Mosquitto, with a CONNACK in words and timed round trips`, async (t) => {
    const { code, report } = await probe([`mqtt://localhost:${plain.port}`, '-V', version, '-i', `probe-ok-${version}`])
    t.equal(code, 0, 'exit 0')
    t.ok(report.ok)
    t.same(names(report), FULL, 'each step once, in order')
    t.match(report.steps[0]?.detail, /^localhost → /, 'the name and its addresses')
    t.match(report.steps.find((s) => s.step === 'connect')?.detail, version === '5' ? /^CONNACK 0x00 success \(session present: no/ : /^CONNACK 0 accepted \(session present: no\)/)
    for (const qos of [0, 1, 2]) {
      const step = report.steps.find((s) => s.step === `qos ${qos}`)
      t.match(step?.data, { deliveredQos: qos, roundTripMs: Number }, `QoS ${qos} delivered at QoS ${qos}`)
      t.ok((step?.ms ?? 0) > 0 && (step?.ms ?? 0) < 2000, `QoS ${qos} timed (${String(step?.ms)} ms)`)
    }
    t.equal(report.clientId, `probe-ok-${version}`, '-i sets the client ID')
  })
}

t.test('readable by default: a mark, the step, its time and what was found; the fix under a failure', async (t) => {
  const ok = await runToExit(['probe', plain.url, '-t', 'probe/readable'], { timeoutMs: 20_000 })
  t.equal(ok.code, 0)
  t.match(ok.stdout, /^probe mqtt:\/\/127\.0\.0\.1:\d+ \(MQTT 3\.1\.1\)\n/)
  t.match(ok.stdout, /✓ resolve .* ms {2}127\.0\.0\.1 is an address\n/)
  t.match(ok.stdout, /✓ subscribe .* ms {2}probe\/readable granted QoS 2\n/)
  t.match(ok.stdout, /ok: every step passed/)
  const closed = await runToExit(['probe', `mqtt://127.0.0.1:${await freePort()}`], { timeoutMs: 20_000 })
  t.equal(closed.code, 1)
  t.match(closed.stdout, /✗ tcp .*ECONNREFUSED\n {25}→ nothing listens there: is the broker running/)
  t.match(closed.stdout, /FAILED at tcp/)
})

t.test('a closed port, a name that does not resolve, bad arguments', async (t) => {
  const closed = await probe([`mqtt://127.0.0.1:${await freePort()}`])
  t.equal(closed.code, 1)
  t.same(names(closed.report), ['resolve', 'tcp'], 'stops at tcp')
  t.match(last(closed.report), { ok: false, detail: /ECONNREFUSED/, fix: /nothing listens there/ })
  const unknown = await probe(['mqtt://no-such-host.invalid:1883'])
  t.equal(unknown.code, 1)
  t.match(last(unknown.report), { step: 'resolve', ok: false, detail: /no-such-host\.invalid does not resolve/ })
  for (const args of [[], ['http://example.com'], ['mqtt://x', '-V', '4'], ['mqtt://x', '--cert', 'a.pem']]) {
    const r = await runToExit(['probe', ...args], { timeoutMs: 10_000 })
    t.equal(r.code, 2, `usage error for ${JSON.stringify(args)}: ${r.stderr.split('\n')[0] ?? ''}`)
  }
})

t.test('a wrong password and missing credentials: the CONNACK in words, and the fix', async (t) => {
  const broker = await startMosquitto({ allowAnonymous: false, passwords: { alice: 'pw-probe-alice' } })
  t.teardown(() => broker.stop())
  // Mosquitto answers a wrong password with 5 / 0x87, like a refusal by its ACL: the fix says so.
  const v4 = await probe([broker.url, '-u', 'alice', '-P', 'pw-probe-wrong'])
  t.equal(v4.code, 1)
  t.match(last(v4.report), { step: 'connect', ok: false, detail: /^CONNACK 5 not authorized/, fix: /Mosquitto also answers this for a wrong password/ })
  const anonymous = await probe([broker.url, '-V', '5'])
  t.match(last(anonymous.report), { step: 'connect', ok: false, detail: /^CONNACK 0x87 not authorized/, fix: /the credentials are accepted but the ACL refuses this client.*with no -u given: the server requires a user name/ })
  t.equal((await probe([broker.url, '-u', 'alice', '-P', 'pw-probe-alice'])).code, 0, 'the right password passes')
  // mqtt-guard's auth plugin tells a wrong password apart: 4 / 0x86.
  const dir = await tempDir(t, 'mqtt-guard-probe-')
  const passwordFile = path.join(dir, 'passwd')
  await writeFile(passwordFile, `alice:${formatHash(await hashPbkdf2('pw-probe-alice'))}\n`)
  const proxy = await startProxy({ config: { upstream: plain.url, plugins: [{ name: 'auth', passwordFile }] } })
  t.teardown(() => proxy.stop())
  t.match(last((await probe([proxy.url, '-u', 'alice', '-P', 'pw-probe-wrong'])).report), { step: 'connect', ok: false, detail: /^CONNACK 4 bad user name or password/, fix: /check -u \/ -P/ })
  t.match(last((await probe([proxy.url, '-u', 'alice', '-P', 'pw-probe-wrong', '-V', '5'])).report), { step: 'connect', ok: false, detail: /^CONNACK 0x86 bad user name or password/ })
  t.equal((await probe([proxy.url, '-u', 'alice', '-P', 'pw-probe-alice', '-V', '5'])).code, 0, 'and lets the right one through')
})

t.test('a refused ACL: Mosquitto delivers nothing; mqtt-guard refuses the subscription (0x87) or drops the publish', async (t) => {
  const broker = await startMosquitto({ allowAnonymous: false, passwords: { bob: 'pw-probe-bob' }, acl: 'user bob\ntopic readwrite bob/#\n' })
  t.teardown(() => broker.stop())
  // Mosquitto grants the subscription and then delivers nothing: the round trip says where.
  const refused = await probe([broker.url, '-u', 'bob', '-P', 'pw-probe-bob', '-t', 'alice/inbox'])
  t.equal(refused.code, 1)
  t.match(last(refused.report), { step: 'qos 0', ok: false, detail: /^published but not received back/, fix: /an ACL that refuses receiving \(or silently refuses publishing/ })
  t.equal((await probe([broker.url, '-u', 'bob', '-P', 'pw-probe-bob', '-t', 'bob/probe'])).code, 0, 'his own topic passes')

  const proxy = await startProxy({ config: { upstream: plain.url, plugins: [{ name: 'acl', rules: [{ allow: ['subscribe', 'receive'], topic: 'ro/#' }, { allow: 'publish', topic: 'rw/#' }, { allow: ['subscribe', 'receive'], topic: 'rw/#' }] }] } })
  t.teardown(() => proxy.stop())
  const sub = await probe([proxy.url, '-V', '5', '-t', 'secret/x'])
  t.match(last(sub.report), { step: 'subscribe', ok: false, detail: /^SUBACK 0x87 not authorized for secret\/x/ })
  const pub = await probe([proxy.url, '-V', '5', '-t', 'ro/x'])
  t.same(names(pub.report), ['resolve', 'tcp', 'connect', 'subscribe', 'qos 0'], 'QoS 0 is dropped silently: no echo')
  t.match(last(pub.report), { ok: false, detail: /published but not received back within 2000 ms/, fix: /an ACL that refuses/ })
  t.equal((await probe([proxy.url, '-V', '5', '-t', 'rw/x'])).code, 0, 'a topic it may use passes through mqtt-guard')
})

t.test('TLS against Mosquitto: verified chain, host name and days to expiry; no CA given; the wrong host name', async (t) => {
  const { tlsPort } = await mosquittoWithTls(t, good)
  const ok = await probe([`mqtts://localhost:${tlsPort}`, '--cafile', pki.ca])
  t.equal(ok.code, 0, 'exit 0')
  t.same(names(ok.report), ['resolve', 'tcp', 'tls', ...FULL.slice(2)])
  const tlsStep = ok.report.steps.find((s) => s.step === 'tls')
  t.match(tlsStep, { ok: true, detail: /^TLSv1\.[23], certificate localhost from .*, expires in 39\d days .*; chain and host name verified$/, data: { verified: true, names: ['localhost'] } })
  t.notOk(tlsStep?.warning, 'no warning for a certificate with a year left')

  const untrusted = await probe([`mqtts://localhost:${tlsPort}`])
  t.equal(untrusted.code, 1)
  t.match(last(untrusted.report), { step: 'tls', ok: false, detail: /NOT verified: (UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)/, fix: /--cafile/ })

  const misnamed = await probe([`mqtts://127.0.0.1:${tlsPort}`, '--cafile', pki.ca])
  t.match(last(misnamed.report), { step: 'tls', ok: false, detail: /NOT verified: not valid for 127\.0\.0\.1 \(it names localhost\)/, fix: /not for this host name/ })

  const insecure = await probe([`mqtts://127.0.0.1:${tlsPort}`, '--cafile', pki.ca, '--insecure'])
  t.equal(insecure.code, 0, '--insecure goes on, and still says what is wrong')
  t.match(insecure.report.steps.find((s) => s.step === 'tls'), { ok: true, warning: true, detail: /NOT verified/ })
})

t.test('TLS: an expired certificate (made in the test) and one that ends soon', async (t) => {
  const { tlsPort } = await mosquittoWithTls(t, expired)
  const r = await probe([`mqtts://localhost:${tlsPort}`, '--cafile', pki.ca])
  t.equal(r.code, 1)
  t.match(last(r.report), { step: 'tls', ok: false, detail: /EXPIRED .* ago .*NOT verified: CERT_HAS_EXPIRED/, fix: /has expired: renew it/ })
  t.match(last(r.report).data, { daysLeft: Number, verified: false })

  const proxy = await startProxy({ config: { upstream: plain.url, listen: [{ url: 'mqtts://127.0.0.1:0', cert: soon.cert, key: soon.key }] } })
  t.teardown(() => proxy.stop())
  const warned = await probe([`mqtts://localhost:${proxy.port}`, '--cafile', pki.ca])
  t.equal(warned.code, 0, 'a warning is not a failure')
  t.match(warned.report.steps.find((s) => s.step === 'tls'), { ok: true, warning: true, detail: /expires in (9|10) days/, fix: /the certificate ends in (9|10) days: renew it before/ })
})

t.test('TLS on a plain port, and plain MQTT on a TLS port', async (t) => {
  const { tlsPort } = await mosquittoWithTls(t, good)
  const tlsOnPlain = await probe([`mqtts://localhost:${plain.port}`, '--cafile', pki.ca])
  t.match(last(tlsOnPlain.report), { step: 'tls', ok: false, fix: /does not speak TLS on this port .*: use mqtt:\/\// })
  const plainOnTls = await probe([`mqtt://localhost:${tlsPort}`])
  t.match(last(plainOnTls.report), { step: 'connect', ok: false, fix: /mqtts:\/\// })
})

t.test('mqtt-guard itself: plain and WebSocket listeners in front of Mosquitto', async (t) => {
  const proxy = await startProxy({ config: { upstream: plain.url, listen: [{ url: 'mqtt://127.0.0.1:0' }, { url: 'ws://127.0.0.1:0' }] } })
  t.teardown(() => proxy.stop())
  const ports = proxy.server.listeners.map((l) => l.port)
  const [mqttPort, wsPort] = ports
  t.equal((await probe([`mqtt://127.0.0.1:${String(mqttPort)}`, '-V', '5', '-i', 'probe-via-guard'])).code, 0, 'mqtt://')
  // The probe ends with DISCONNECT; the broker then closes first, but the client ended it.
  await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.clientId === 'probe-via-guard')
  t.match(proxy.logs.lines.find((l) => l.msg === 'connection closed' && l.clientId === 'probe-via-guard'), { reason: 'client-disconnect' }, 'logged as the client\'s DISCONNECT')
  const ws = await probe([`ws://127.0.0.1:${String(wsPort)}/mqtt`])
  t.equal(ws.code, 0, 'ws://')
  t.match(ws.report.steps.find((s) => s.step === 'websocket'), { ok: true, detail: /upgraded \/mqtt, subprotocol mqtt/ })
  const wrongPath = await probe([`ws://127.0.0.1:${String(wsPort)}/other`])
  t.match(last(wrongPath.report), { step: 'websocket', ok: false, fix: /check the path/ })
})
