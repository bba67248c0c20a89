// The JWT pieces that need no proxy: the `jwt` options' errors (named key, accepted forms),
// EMQX's ACL claim formats read into token rules and decided, the JWKS cache's fetch budget
// under a flood (a fake clock, a real HTTP server), and probe's explanation of a refused token.

import t from 'tap'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { buildConfig } from '../../src/config/config.js'
import { resolveConfig } from '../../src/plugin/loader.js'
import { explainJwt } from '../../src/cli/probe-jwt.js'
import { parseAclClaim } from '../../plugins/auth/acl-claim.js'
import { JwksCache } from '../../plugins/auth/jwks.js'
import { jwksFindings } from '../../plugins/auth/jwks-findings.js'
import { jwtOptions, type JwtOptions } from '../../plugins/auth/jwt-options.js'
import { parseWith } from '../../src/config/zod.js'
import { decideByToken } from '../../plugins/acl/token-rules.js'
import type { TokenAcl } from '../../src/plugin/api.js'
import { tempDir } from '../helpers/auth-clients.js'
import { JwksServer, makeKey, sign } from '../helpers/jwks-server.js'

const dir = await tempDir(t, 'mqtt-guard-jwt-unit-')
const config = (jwt: unknown): Promise<unknown> => resolveConfig(buildConfig({ plugins: [{ name: 'auth', jwt }] }, {}, join(dir, 'guard.yaml')))

t.test('option errors name the key and the accepted forms', async (t) => {
  const url = 'https://idp.test/jwks.json'
  await t.rejects(config({ jwksUrl: url, algorithms: ['RS257'] }), { code: 'GUARD_ERR_CONFIG', message: /^plugins\[0\]\.jwt\.algorithms\[0\]: expected one of RS256, .*EdDSA, HS256, HS384, HS512, got "RS257"$/ })
  await t.rejects(config({ jwksUrl: url, algorithms: ['none'] }), { message: /^plugins\[0\]\.jwt\.algorithms\[0\]: "none" is never accepted/ })
  await t.rejects(config({ jwksUrl: url, algorithms: ['RS256', 'HS256'] }), { message: /^plugins\[0\]\.jwt\.algorithms: HS256 only with secretFile/ })
  await t.rejects(config({ algorithms: ['RS256'] }), { message: /^plugins\[0\]\.jwt: give exactly one of jwksUrl, publicKeyFile or secretFile \(got 0\)/ })
  await t.rejects(config({ jwksUrl: 'ftp://x/' }), { message: /^plugins\[0\]\.jwt\.jwksUrl: expected an http:\/\/ or https:\/\/ URL/ })
  await t.rejects(config({ jwksUrl: url, form: 'password' }), { message: /^plugins\[0\]\.jwt\.form: unknown key \(expected one of jwksUrl, / })
  await t.rejects(config({ jwksUrl: url, from: 'clientId' }), { message: /^plugins\[0\]\.jwt\.from: expected one of password, username/ })
  await writeFile(join(dir, 'short.key'), 'short\n')
  await t.rejects(config({ secretFile: './short.key' }), { message: /^plugins\[0\]\.jwt\.secretFile: the secret in .* has 5 bytes, expected at least 32/ })
  await t.rejects(config({ secretFile: './missing.key' }), { message: /^plugins\[0\]\.jwt\.secretFile: file .* does not exist/ })
  await writeFile(join(dir, 'hs.key'), 'x'.repeat(40))
  await t.rejects(config({ secretFile: './hs.key', algorithms: ['RS256'] }), { message: /^plugins\[0\]\.jwt\.algorithms: with secretFile only HS256/ })
  await t.resolves(config({ secretFile: './hs.key' }), 'a secret file alone: HS256')
  await t.resolves(config({ jwksUrl: url, issuer: ['a', 'b'], audience: 'mqtt' }))
})

const subject = { user: 'carol', clientId: 'c-1' }
const ask = (action: 'publish' | 'subscribe' | 'receive', topic: string, qos = 0, retain = false): { action: typeof action, topic: string, qos: number, retain: boolean } => ({ action, topic, qos, retain })

t.test('EMQX 5 list form: first match decides, none leaves it to acl\'s rules', async (t) => {
  const acl = parseAclClaim([
    { permission: 'deny', action: 'publish', topic: 't/2', retain: true },
    { permission: 'allow', action: 'pub', topics: ['t/${clientid}', 'u/${username}/#'], qos: [0, 1] },
    { permission: 'allow', action: 'subscribe', topic: 'eq t/1/#' },
    { permission: 'deny', action: 'all', topic: 't/3' }
  ]) as TokenAcl
  t.equal(acl.noMatch, 'next')
  const allow = (req: ReturnType<typeof ask>): boolean | undefined => decideByToken(acl, subject, req)?.allow
  t.equal(allow(ask('publish', 't/c-1')), true)
  t.equal(allow(ask('publish', 't/c-1', 2)), undefined, 'qos 2 not in [0, 1]: no match')
  t.equal(allow(ask('publish', 'u/carol/x/y', 1)), true)
  t.equal(allow(ask('publish', 't/2', 0, true)), false, 'retained publish denied')
  t.equal(allow(ask('publish', 't/2')), undefined, 'not retained: no match')
  t.equal(allow(ask('subscribe', 't/1/#')), true, 'eq: the filter itself')
  t.equal(allow(ask('subscribe', 't/1/x')), undefined, 'eq: not another one')
  t.equal(allow(ask('receive', 't/1/x')), true, 'what the subscription delivers')
  t.equal(allow(ask('subscribe', '#')), false, 'deny t/3 overlaps #')
  t.equal(allow(ask('receive', 't/3')), false)
  t.same(decideByToken(acl, subject, ask('publish', 't/c-1')), { allow: true, rule: 'token acl[1]', text: 'token allow publish t/%c u/%u/#' })
  t.equal(decideByToken(acl, { user: 'a/#', clientId: 'c-1' }, ask('publish', 'u/a/b/x')), undefined, '%u never widens')
})

t.test('the old { pub, sub, all } form allows what it names and denies the rest', async (t) => {
  const acl = parseAclClaim({ pub: ['p/%c'], sub: ['s/#'], all: ['a/%u'] }) as TokenAcl
  t.equal(acl.noMatch, 'deny')
  t.equal(decideByToken(acl, subject, ask('publish', 'p/c-1'))?.allow, true)
  t.equal(decideByToken(acl, subject, ask('subscribe', 's/x'))?.allow, true)
  t.equal(decideByToken(acl, subject, ask('subscribe', 'a/carol'))?.allow, true)
  t.match(decideByToken(acl, subject, ask('publish', 's/x')), { allow: false, rule: 'token acl' })
})

t.test('claims that cannot be honoured whole are refused with the reason', async (t) => {
  const rows: Array<[unknown, RegExp]> = [
    ['all', /expected a list of rules or \{ pub, sub, all \}/],
    [[{ permission: 'maybe', action: 'publish', topic: 'a' }], /acl\[0\]\.permission: expected allow or deny/],
    [[{ permission: 'allow', action: 'read', topic: 'a' }], /acl\[0\]\.action: expected publish, subscribe or all/],
    [[{ permission: 'allow', action: 'publish' }], /acl\[0\]: expected topic or topics/],
    [[{ permission: 'allow', action: 'publish', topic: 'a/${peerhost}' }], /placeholder \$\{peerhost\} is not supported/],
    [[{ permission: 'allow', action: 'publish', topic: 'a/#/b' }], /"#" must be a whole level/],
    [[{ permission: 'allow', action: 'publish', topic: 'a', clientid_re: '.*' }], /field clientid_re is not supported/],
    [[{ permission: 'allow', action: 'publish', topic: 'a', qos: [3] }], /qos: expected a list of 0, 1, 2/],
    [{ pub: 'a' }, /acl\.pub: expected a list/],
    [{ deny: ['a'] }, /acl\.deny: not supported/]
  ]
  for (const [claim, problem] of rows) t.match(parseAclClaim(claim), { problem }, JSON.stringify(claim))
})

t.test('JWKS cache: a flood of unknown kids fetches at most once per cooldown', async (t) => {
  const key = await makeKey('k1')
  const idp = await JwksServer.start([key])
  t.teardown(() => idp.stop())
  let clock = 1_000_000
  const stats = { fetches: { ok: 0, failed: 0 } }
  const cache = new JwksCache({ url: idp.url, cacheMs: 300_000, cooldownMs: 10_000, timeoutMs: 2000 }, stats, () => clock)
  t.notOk('unavailable' in await cache.keys())
  t.equal(idp.requests, 1)
  clock += 5_000
  await Promise.all(Array.from({ length: 50 }, async () => await cache.unknownKey()))
  t.equal(idp.requests, 1, 'within the cooldown: none')
  clock += 6_000
  await Promise.all(Array.from({ length: 50 }, async () => await cache.unknownKey()))
  t.equal(idp.requests, 2, 'past it: one, shared by all')
  idp.mode = 'error'
  clock += 300_000
  const stale = await cache.keys()
  await idp.waitForRequests(3)
  t.notOk('unavailable' in stale, 'a stale set is used while its successor is fetched')
  t.equal(stats.fetches.ok, 2, 'counted')
})

t.test('probe explains a refused token from its own claims, never printing it', async (t) => {
  const key = await makeKey('kid-9')
  const now = Date.now()
  const expired = await sign(key, { iss: 'https://idp.test/', aud: 'mqtt', exp: Math.floor(now / 1000) - 3600 })
  const said = explainJwt('device', expired, now) ?? ''
  t.match(said, /^the password is a JWT \(decoded here, not verified: alg RS256, kid kid-9, iss https:\/\/idp\.test\/, aud mqtt, sub alice, exp .*\): it expired 60 min ago/)
  for (const part of expired.split('.')) t.notOk(said.includes(part), 'no part of the token')
  t.match(explainJwt(await sign(key, { nbf: Math.floor(now / 1000) + 10_800, exp: Math.floor(now / 1000) + 14_400 }), undefined, now), /^the user name is a JWT .*: it is not valid before .* \(in 3 h\): check the clocks/)
  t.match(explainJwt(undefined, `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"x"}').toString('base64url')}.`, now), /unsigned \(alg none\)/)
  t.match(explainJwt(undefined, await sign(key), now), /nothing wrong in its own claims: compare iss and aud/)
  t.match(explainJwt(undefined, 'eyJhbGciOi.eyJ4.abc', now), /does not decode/)
  t.equal(explainJwt('alice', 'secret', now), undefined, 'not a JWT: nothing to say')
})

t.test('doctor: a JWKS fetch that took over half of jwksTimeoutMs (or a second) is reported slow', async (t) => {
  const o = parseWith(jwtOptions, { jwksUrl: 'https://idp.test/jwks.json' }) as JwtOptions
  const stats = { fetches: { ok: 3, failed: 0 } }
  const at = Date.parse('2026-12-07T06:00:00Z')
  t.same(jwksFindings(o, { at, ms: 120, ok: true, problem: undefined }, stats), [], 'a quick fetch: nothing to say')
  const [slow] = jwksFindings(o, { at, ms: 1500, ok: true, problem: undefined }, stats)
  t.match(slow, { id: 'jwks-slow', severity: 'warning', summary: /is slow to fetch \(1500 ms; it fails at 3000 ms\)/ })
  const short = parseWith(jwtOptions, { jwksUrl: 'https://idp.test/jwks.json', jwksTimeoutMs: 400 }) as JwtOptions
  t.match(jwksFindings(short, { at, ms: 250, ok: true, problem: undefined }, stats), [{ id: 'jwks-slow' }], 'over half of a short jwksTimeoutMs')
})
