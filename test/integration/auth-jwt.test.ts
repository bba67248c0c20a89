// The auth plugin's JWT source, end to end: MQTT.js clients (3.1.1 and 5) through the proxy in
// front of a private Mosquitto, tokens signed with keys made here (jose's generateKeyPair) and
// served by a JWKS server of the test's own (test/helpers/jwks-server.ts). Every refusal's code,
// log cause and metric; key rotation and a flood of unknown kids against the fetch count; an
// IdP that answers HTML, 500 or nothing; key files; and no token in any log line.
// ACL from tokens and expiry: auth-jwt-acl.test.ts.

import t, { type Test } from 'tap'
import { join } from 'node:path'
import { readFile, writeFile } from 'node:fs/promises'
import { exportSPKI, SignJWT } from 'jose'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { pollUntil } from '../helpers/processes.js'
import { login, tempDir } from '../helpers/auth-clients.js'
import { JwksServer, makeKey, sign, type TestKey } from '../helpers/jwks-server.js'
import { parseExposition, valueOf } from '../helpers/metrics-scrape.js'
import type { LogLine } from '../helpers/log-sink.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const dir = await tempDir(t, 'mqtt-guard-auth-jwt-')
const rsa = await makeKey('rsa-1', 'RS256')
const ec = await makeKey('ec-1', 'ES256')
const stranger = await makeKey('rsa-1', 'RS256') // same kid, another key: a forged signature
const tokens: string[] = []
const allLogs: LogLine[][] = []
const now = (): number => Math.floor(Date.now() / 1000)

async function jwks (t: Test, keys: TestKey[] = [rsa, ec]): Promise<JwksServer> {
  const server = await JwksServer.start(keys)
  t.teardown(() => server.stop())
  return server
}

async function proxyWith (t: Test, jwt: Record<string, unknown>): Promise<TestProxy> {
  const proxy = await startProxy({ config: { upstream: mosquitto.url, plugins: [{ name: 'auth', upstreamCredentials: 'strip', jwt }] } })
  t.teardown(() => proxy.stop())
  allLogs.push(proxy.logs.lines)
  return proxy
}

/** The CONNACK code of a login with `token` in the password (0: admitted). */
async function codeOf (t: Test, proxy: TestProxy, version: 4 | 5, token: string, more: Record<string, unknown> = {}): Promise<number | undefined> {
  tokens.push(token)
  const result = await login(t, proxy.url, version, { username: 'device', password: token, ...more })
  if (result.ok) { result.client.end(true); return 0 }
  return result.code
}

async function metric (proxy: TestProxy, name: string, labels: Record<string, string>): Promise<number | undefined> {
  return valueOf(parseExposition(await proxy.server.metrics.registry.metrics()), name, labels)
}

const base = { issuer: 'https://idp.test/', audience: 'mqtt', clockToleranceSeconds: 5 }
const good = { iss: 'https://idp.test/', aud: 'mqtt' }

for (const version of [4, 5] as const) {
  const bad = version === 5 ? 0x86 : 4

  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: each refusal has its code, its cause in the log and its metric`, async (t) => {
    const idp = await jwks(t)
    const proxy = await proxyWith(t, { jwksUrl: idp.url, ...base })
    t.equal(await codeOf(t, proxy, version, await sign(rsa, good)), 0, 'valid RS256')
    t.equal(await codeOf(t, proxy, version, await sign(ec, good)), 0, 'valid ES256')
    const hs = new TextEncoder().encode(JSON.stringify(rsa.jwk)) // the RS public key as an HMAC secret
    const cases: Array<[string, Promise<string> | string, string]> = [
      ['expired', sign(rsa, { ...good, exp: now() - 60 }), 'expired'],
      ['not yet valid', sign(rsa, { ...good, nbf: now() + 600 }), 'not-yet-valid'],
      ['wrong audience', sign(rsa, { ...good, aud: 'other' }), 'wrong-audience'],
      ['wrong issuer', sign(rsa, { ...good, iss: 'https://evil.test/' }), 'issuer-unknown'],
      ['wrong signature', sign(stranger, good), 'bad-signature'],
      ['alg none', `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ ...good, sub: 'alice' })).toString('base64url')}.`, 'alg-not-allowed'],
      ['HS256 signed with the RS public key', new SignJWT({ ...good, sub: 'alice' }).setProtectedHeader({ alg: 'HS256', kid: 'rsa-1' }).sign(hs), 'alg-not-allowed'],
      ['malformed', 'eyJhbGciOi.eyJzdWIiOiJ4In0.abc', 'malformed']
    ]
    const counted = new Map<string, number>()
    for (const [name, token, cause] of cases) {
      t.equal(await codeOf(t, proxy, version, await token), bad, name)
      const line = await proxy.logs.waitFor((l) => l.msg === 'auth refused' && l.reason === `jwt-${cause}`)
      t.type(line.detail, 'string', `${name}: logged as jwt-${cause} with a detail`)
      counted.set(cause, (counted.get(cause) ?? 0) + 1)
      t.equal(await metric(proxy, 'mqtt_guard_auth_jwt_refusals_total', { cause }), counted.get(cause), `${name}: counted`)
    }
    t.match(proxy.logs.find((l) => l.reason === 'jwt-expired')?.detail, /^expired at .*, \d+ s ago$/)
    t.match(proxy.logs.find((l) => l.reason === 'jwt-wrong-audience')?.detail, /aud other, expected mqtt/)
  })

  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: from username; clientIdClaim`, async (t) => {
    const idp = await jwks(t)
    const proxy = await proxyWith(t, { jwksUrl: idp.url, from: 'username', clientIdClaim: 'client_id' })
    const token = await sign(rsa, { client_id: 'dev-7' })
    tokens.push(token)
    const ok = await login(t, proxy.url, version, { username: token, clientId: 'dev-7' })
    t.ok(ok.ok, 'the token in the user name, the client ID its claim')
    if (ok.ok) ok.client.end(true)
    const other = await login(t, proxy.url, version, { username: token, clientId: 'dev-8' })
    t.same(other, { ok: false, code: bad }, 'another client ID')
    await proxy.logs.waitFor((l) => l.msg === 'auth refused' && l.reason === 'jwt-client-id-differs')
    const plain = await login(t, proxy.url, version, { username: 'alice', password: 'not-a-token' })
    t.same(plain, { ok: false, code: bad }, 'not a JWT: the source does not answer, the chain goes on (and nothing else admits)')
  })
}

t.test('key rotation: an unknown kid fetches the JWKS once; later tokens with it fetch nothing', async (t) => {
  const idp = await jwks(t, [rsa])
  const proxy = await proxyWith(t, { jwksUrl: idp.url, jwksCooldownMs: 0 })
  t.equal(await codeOf(t, proxy, 5, await sign(rsa)), 0)
  t.equal(idp.requests, 1, 'fetched once (at start)')
  const next = await makeKey('rsa-2')
  idp.keys = [next]
  t.equal(await codeOf(t, proxy, 5, await sign(next)), 0, 'the new kid is admitted')
  t.equal(idp.requests, 2, 'one refetch')
  t.equal(await codeOf(t, proxy, 5, await sign(next)), 0)
  t.equal(idp.requests, 2, 'no more')
})

t.test('a flood of unknown kids: no fetch within the cooldown, all refused', async (t) => {
  const idp = await jwks(t, [rsa])
  const proxy = await proxyWith(t, { jwksUrl: idp.url, jwksCooldownMs: 60_000 })
  t.equal(await codeOf(t, proxy, 5, await sign(rsa)), 0)
  const forged = await Promise.all(Array.from({ length: 20 }, async (_, i) => await sign(stranger, {}, { kid: `made-up-${i}` })))
  const codes = await Promise.all(forged.map(async (token) => await codeOf(t, proxy, 5, token)))
  t.same(new Set(codes), new Set([0x86]))
  t.equal(idp.requests, 1, 'the IdP saw one request in all')
  t.equal(await metric(proxy, 'mqtt_guard_auth_jwt_refusals_total', { cause: 'no-usable-key' }), 20)
})

t.test('an IdP answering HTML, 500, or nothing: 3 / 0x88 in bounded time, then recovers; doctor says so', async (t) => {
  const idp = await jwks(t, [rsa])
  idp.mode = 'html'
  const proxy = await proxyWith(t, { jwksUrl: idp.url, jwksCooldownMs: 0, jwksTimeoutMs: 400 })
  const token = await sign(rsa)
  t.equal(await codeOf(t, proxy, 4, token), 3, 'HTML: 3.1.1 code 3')
  t.match((await proxy.logs.waitFor((l) => l.reason === 'jwt-jwks-unavailable')).detail, /not JSON \(content-type text\/html\)/)
  idp.mode = 'error'
  t.equal(await codeOf(t, proxy, 5, token), 0x88, '500: MQTT 5 0x88')
  idp.mode = 'stall'
  const start = Date.now()
  t.equal(await codeOf(t, proxy, 5, token), 0x88, 'stalled')
  t.ok(Date.now() - start < 3000, `answered in ${Date.now() - start} ms`)
  const findings = (await proxy.server.diagnose()).findings.filter((f) => f.id === 'jwks-fetch-failing')
  t.match(findings, [{ severity: 'error', evidence: [/no answer within 400 ms/] }], 'doctor: the JWKS was never fetched')
  t.ok((await metric(proxy, 'mqtt_guard_auth_jwks_fetches_total', { result: 'failed' }) ?? 0) >= 3, 'failed fetches counted')
  idp.mode = 'ok'
  t.equal(await codeOf(t, proxy, 5, token), 0, 'the IdP is back')
  t.same((await proxy.server.diagnose()).findings.filter((f) => f.id.startsWith('jwks-')), [])
})

t.test('a JWKS with no usable key: 4 / 0x86, cause no-usable-key', async (t) => {
  const idp = await jwks(t, [])
  const proxy = await proxyWith(t, { jwksUrl: idp.url })
  t.equal(await codeOf(t, proxy, 5, await sign(rsa)), 0x86)
  await proxy.logs.waitFor((l) => l.reason === 'jwt-no-usable-key')
})

t.test('publicKeyFile (PEM) and secretFile (HS256)', async (t) => {
  const pem = join(dir, 'jwt.pem')
  await writeFile(pem, await exportSPKI(rsa.publicKey))
  const byFile = await proxyWith(t, { publicKeyFile: pem, algorithms: ['RS256'] })
  t.equal(await codeOf(t, byFile, 5, await sign(rsa)), 0, 'signed with the file\'s key')
  t.equal(await codeOf(t, byFile, 5, await sign(stranger)), 0x86, 'another key')
  const secret = 'a-shared-secret-of-more-than-32-bytes!!'
  const file = join(dir, 'hs256.key')
  await writeFile(file, `${secret}\n`)
  const bySecret = await proxyWith(t, { secretFile: file })
  const hs = async (key: string): Promise<string> => await new SignJWT({ sub: 'bob' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(new TextEncoder().encode(key))
  t.equal(await codeOf(t, bySecret, 4, await hs(secret)), 0, 'HS256 with the secret (the file\'s line break is not part of it)')
  t.equal(await codeOf(t, bySecret, 4, await hs(`${secret}x`)), 4, 'another secret')
  await bySecret.logs.waitFor((l) => l.reason === 'jwt-bad-signature')
})

t.test('a token sent as the user name is not in a trace, wire bytes included', async (t) => {
  const idp = await jwks(t)
  const traceFile = join(dir, 'jwt-trace.jsonl')
  const proxy = await startProxy({
    config: {
      upstream: mosquitto.url,
      plugins: [
        { name: 'trace', destination: traceFile, payload: 'text' },
        // passthrough: the token goes on to the broker too, so both legs' CONNECTs carry it.
        { name: 'auth', upstreamCredentials: 'passthrough', jwt: { ...base, jwksUrl: idp.url, from: 'username' } }
      ]
    }
  })
  t.teardown(() => proxy.stop())
  allLogs.push(proxy.logs.lines)
  const token = await sign(rsa, good)
  tokens.push(token)
  const ok = await login(t, proxy.url, 5, { username: token, clientId: 'traced-jwt' })
  t.ok(ok.ok, 'admitted')
  if (ok.ok) ok.client.end(true)
  await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.clientId === 'traced-jwt')
  // The trace file is written asynchronously: wait for the CONNECT's line.
  type Line = { type?: string, leg?: string, frame?: string }
  const traced = async (): Promise<Line[]> =>
    (await readFile(traceFile, 'utf8').catch(() => '')).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Line)
  const lines = await pollUntil('the traced CONNECT', 5000, async () => {
    const all = await traced()
    return all.filter((l) => l.type === 'connect' && l.frame !== undefined).length >= 2 ? all : undefined
  })
  for (const leg of ['client', 'broker']) {
    const connect = lines.find((l) => l.type === 'connect' && l.leg === leg && l.frame !== undefined)
    t.ok(connect, `the CONNECT on the ${leg} leg is traced with its bytes`)
    t.ok(Buffer.from(connect?.frame ?? '', 'base64').toString('latin1').includes('[redacted]'), `${leg} leg: the user name field says [redacted]`)
  }
  const parts = token.split('.').filter((part) => part.length > 8)
  t.same(lines.filter((l) => parts.some((part) => JSON.stringify(l).includes(part) || Buffer.from(l.frame ?? '', 'base64').toString('latin1').includes(part))), [], 'no part of the token in any trace line')
})

t.test('no token in any log line', async (t) => {
  t.ok(tokens.length > 20, `${tokens.length} tokens`)
  const lines = allLogs.flat()
  // Neither its claims nor its signature (a long user name is cut in a log line: the start alone would show).
  const parts = tokens.flatMap((tk) => tk.split('.').slice(1).filter((part) => part.length > 8))
  const leaks = lines.filter((line) => parts.some((part) => JSON.stringify(line).includes(part)))
  t.same(leaks, [], `none in ${lines.length} lines`)
})
