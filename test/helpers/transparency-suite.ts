// The transparency suite shared by test/integration/transparency-v4 and -v5: every scenario
// runs directly against a private Mosquitto and through the proxy in front of it (a plain proxy,
// whose packets are forwarded undecoded, and an observed one, whose every packet is decoded and
// shown to a spy plugin), and the results must be the same and what MQTT says they should be.
// The version-specific answers (CONNACK codes, reason codes) are given by the test file.

import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import type { IPublishPacket } from 'mqtt-packet'
import type { Plugin } from '../../src/plugin/api.js'
import { startMosquitto, type Mosquitto } from './mosquitto.js'
import { startProxy, type TestProxy } from './proxy.js'
import { freePort } from './ports.js'
import { startFakeBroker } from './fake-broker.js'
import * as S from './transparency-scenarios.js'

export interface Expectations {
  version: S.Version
  /** CONNACK code Mosquitto gives a wrong password. */
  wrongPassword: number
  /** CONNACK code the proxy gives when the broker is unreachable or silent. */
  unavailable: number
  /** SUBACK for [allowed QoS 1, denied QoS 1, allowed QoS 2]. */
  subackDenied: number[]
  /** What the client gets for a denied QoS 1 PUBLISH (`cmd` or `cmd:reasonCode`). */
  deniedPublish: string[]
  /** What the first client gets when a second one takes its client ID over. */
  takeoverFirst: string[]
  /** What a raw keepalive-1 client gets before the broker closes it. */
  keepalivePackets: string[]
}

export interface Env {
  mosquitto: Mosquitto
  /** No plugins: every packet after CONNECT is forwarded undecoded. */
  plain: TestProxy
  /** A spy plugin that decodes and observes every packet. */
  observed: TestProxy
  /** Topics the spy saw in PUBLISH packets, per direction. */
  spied: { in: string[], out: string[] }
}

/** A plugin that looks at everything and changes nothing. */
export function spyPlugin (spied: { in: string[], out: string[] }): Plugin {
  return {
    name: 'spy',
    in: { publish: (_conn, p: IPublishPacket) => { spied.in.push(p.topic) } },
    out: { publish: (_conn, p: IPublishPacket) => { spied.out.push(p.topic) } },
    observe: () => {}
  }
}

export async function startEnv (t: Test): Promise<Env> {
  const mosquitto = await startMosquitto({ v5: true })
  t.teardown(() => mosquitto.stop())
  const spied = { in: [] as string[], out: [] as string[] }
  const plain = await startProxy({ config: { upstream: mosquitto.url } })
  t.teardown(() => plain.stop())
  const observed = await startProxy({ config: { upstream: mosquitto.url }, extraPlugins: [spyPlugin(spied)] })
  t.teardown(() => observed.stop())
  return { mosquitto, plain, observed, spied }
}

/** At the end of each test: every client gone, no proxy connection left. */
export async function settled (t: Test, ...proxies: TestProxy[]): Promise<void> {
  await S.endAllPeers()
  for (const p of proxies) t.equal(await S.drained(p), 0, `no connection left on proxy :${p.port}`)
}

const DYNSEC = process.env['MOSQUITTO_DYNSEC'] ?? '/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so'

/**
 * Mosquitto 2.0's acl_file never refuses a SUBSCRIBE (it filters on delivery), so a failure
 * SUBACK needs the dynamic-security plugin: anonymous clients may subscribe to ok/# only and
 * may not publish to denied/#.
 */
export async function startDynsecMosquitto (t: Test): Promise<Mosquitto> {
  const dir = await mkdtemp(join(tmpdir(), 'mqtt-guard-dynsec-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'dynsec.json')
  await writeFile(file, JSON.stringify({
    defaultACLAccess: { publishClientSend: true, publishClientReceive: true, subscribe: false, unsubscribe: true },
    clients: [],
    groups: [{ groupname: 'anon', roles: [{ rolename: 'limited' }], clients: [] }],
    roles: [{
      rolename: 'limited',
      acls: [
        { acltype: 'subscribePattern', topic: 'ok/#', priority: 0, allow: true },
        { acltype: 'publishClientSend', topic: 'denied/#', priority: 0, allow: false }
      ]
    }],
    anonymousGroup: 'anon'
  }))
  const m = await startMosquitto({ extraConfig: `plugin ${DYNSEC}\nplugin_opt_config_file ${file}` })
  t.teardown(() => m.stop())
  return m
}

export function transparencySuite (t: Test, env: Env, x: Expectations): void {
  const v = x.version
  const { mosquitto, plain, observed } = env
  const targets = { direct: mosquitto.url, proxy: plain.url, observed: observed.url }
  let n = 0
  const tag = (what: string): string => `v${v}-${what}-${++n}`

  t.test('QoS 0/1/2 both directions: exact payloads, counts, order per publisher', async (t) => {
    t.teardown(S.endAllPeers)
    const expected = S.expectedFlow()
    const combos: Array<[keyof typeof targets, keyof typeof targets]> = [
      ['direct', 'direct'], ['proxy', 'proxy'], ['direct', 'proxy'], ['proxy', 'direct'], ['observed', 'observed']
    ]
    for (const [from, to] of combos) {
      t.same(await S.qosFlow(targets[from], targets[to], v, tag(`qos-${from}-${to}`)), expected, `publisher ${from}, subscriber ${to}`)
    }
    await settled(t, plain, observed)
  })

  t.test('retained: set, delivered to a later subscriber with retain=1, cleared by an empty payload', async (t) => {
    t.teardown(S.endAllPeers)
    const direct = await S.retained(targets.direct, v, tag('ret'))
    t.match(direct, {
      late: [
        { topic: 'r', payload: 'kept', qos: 1, retain: true },
        { topic: 'r', payload: 'kept again', qos: 1, retain: false },
        { topic: 'r', payload: '', qos: 1, retain: false },
        { topic: 'r', payload: 'live', qos: 1, retain: false }
      ],
      afterClear: [{ topic: 'r', payload: 'live', qos: 1, retain: false }]
    })
    t.equal(direct.late?.length, 4)
    t.equal(direct.afterClear?.length, 1, 'nothing retained after the clear')
    t.same(await S.retained(targets.proxy, v, tag('ret')), direct, 'through the proxy')
    t.same(await S.retained(targets.observed, v, tag('ret')), direct, 'through the observed proxy')
    await settled(t, plain, observed)
  })

  t.test('wills: a vanished client\'s will is published, a disconnected one\'s is not; both closes reach the broker', async (t) => {
    t.teardown(S.endAllPeers)
    const direct = await S.wills(targets.direct, v, tag('will'), mosquitto)
    t.match(direct, [{ topic: 'will/gone', payload: 'gone is gone', qos: 1, retain: false }, { topic: 'will/left', payload: 'marker' }])
    t.equal(direct.length, 2)
    if (v === 5) t.match(direct[0]?.properties, { contentType: 'text/plain', userProperties: { why: 'gone' } }, 'will properties')
    t.same(await S.wills(targets.proxy, v, tag('will'), mosquitto), direct, 'through the proxy')
    t.same(await S.wills(targets.observed, v, tag('will'), mosquitto), direct, 'through the observed proxy')
    await settled(t, plain, observed)
  })

  t.test('persistent session: offline messages delivered on return with sessionPresent; session ends', async (t) => {
    t.teardown(S.endAllPeers)
    const expected = { firstPresent: false, secondPresent: true, offline: [0, 1, 2, 3, 4].map((i) => `offline ${i}`), afterEndPresent: false }
    const combos: Array<[keyof typeof targets, keyof typeof targets]> = [['direct', 'direct'], ['proxy', 'proxy'], ['direct', 'proxy'], ['proxy', 'direct'], ['observed', 'observed']]
    for (const [first, second] of combos) {
      t.same(await S.persistentSession(targets[first], targets[second], v, tag(`sess-${first}-${second}`), mosquitto), expected, `first ${first}, return ${second}`)
    }
    await settled(t, plain, observed)
  })

  t.test('keepalive: PINGREQ answered; a silent client is closed by the broker and the proxy closes it', async (t) => {
    t.teardown(S.endAllPeers)
    const [direct, proxied, observedRun] = await Promise.all([
      S.keepalive(targets.direct, v, tag('ka')), S.keepalive(targets.proxy, v, tag('ka')), S.keepalive(targets.observed, v, tag('ka'))
    ])
    t.same(direct.packets, x.keepalivePackets, 'direct')
    t.same(proxied.packets, direct.packets, 'through the proxy')
    t.same(observedRun.packets, direct.packets, 'through the observed proxy')
    for (const [name, r] of Object.entries({ direct, proxied, observedRun })) {
      // Mosquitto 2.0 checks keepalives every few seconds, so "1.5 × 1 s" is at least 1.5 s.
      t.ok(r.closedAfterMs >= 1000 && r.closedAfterMs < 10_000, `${name}: closed ${r.closedAfterMs} ms after the last PINGRESP`)
    }
    await settled(t, plain, observed)
  })

  t.test('unsubscribe stops delivery', async (t) => {
    t.teardown(S.endAllPeers)
    const direct = await S.unsubscribe(targets.direct, v, tag('unsub'))
    t.same(direct.inbox, ['a one', 'b marker'])
    t.same(await S.unsubscribe(targets.proxy, v, tag('unsub')), direct, 'through the proxy')
    t.same(await S.unsubscribe(targets.observed, v, tag('unsub')), direct, 'through the observed proxy')
    await settled(t, plain, observed)
  })

  t.test('packets pipelined behind CONNECT, before CONNACK, are replayed in order', async (t) => {
    t.teardown(S.endAllPeers)
    const direct = await S.pipelined(targets.direct, v, tag('pipe'))
    const connack = v === 5 ? 'connack:0' : 'connack'
    const puback = v === 5 ? 'puback:0' : 'puback'
    t.same(direct, [connack, 'suback 1', 'publish p early q1', puback, 'pingresp'], 'Mosquitto')
    t.same(await S.pipelined(targets.proxy, v, tag('pipe')), direct, 'through the proxy')
    t.same(await S.pipelined(targets.observed, v, tag('pipe')), direct, 'through the observed proxy')
    await settled(t, plain, observed)
  })

  t.test('session takeover by a second client with the same ID', async (t) => {
    t.teardown(S.endAllPeers)
    const direct = await S.takeover(targets.direct, v, tag('take'))
    t.same(direct, { first: x.takeoverFirst, firstClosed: true, secondCode: 0 })
    t.same(await S.takeover(targets.proxy, v, tag('take')), direct, 'through the proxy')
    t.same(await S.takeover(targets.observed, v, tag('take')), direct, 'through the observed proxy')
    await settled(t, plain, observed)
  })

  t.test('PUBLISH + DISCONNECT while a slow (async) plugin decides: message delivered, no will', async (t) => {
    t.teardown(S.endAllPeers)
    // A hook awaiting Redis, say; the 50 ms timer is the plugin's latency, not synchronisation.
    const slowHook = (): Promise<void> => new Promise((resolve) => { setTimeout(resolve, 50) })
    const slow = await startProxy({ config: { upstream: mosquitto.url }, extraPlugins: [{ name: 'slow', in: { publish: slowHook } }] })
    t.teardown(() => slow.stop())
    const direct = await S.lastWords(targets.direct, v, tag('last'), mosquitto)
    t.same(direct, { inbox: ['msg last words', 'marker marker'], seen: 'Client X disconnected.' }, 'Mosquitto')
    t.same(await S.lastWords(targets.proxy, v, tag('last'), mosquitto), direct, 'through the proxy')
    t.same(await S.lastWords(slow.url, v, tag('last'), mosquitto), direct, 'through a proxy with a slow plugin')
    await settled(t, plain, slow)
  })

  t.test('broker refusals relayed unchanged: CONNACK, SUBACK failure, denied PUBLISH', async (t) => {
    t.teardown(S.endAllPeers)
    const [locked, dynsec] = await Promise.all([
      startMosquitto({ allowAnonymous: false, passwords: { alice: 'secret' } }),
      existsSync(DYNSEC) ? startDynsecMosquitto(t) : undefined
    ])
    t.teardown(() => locked.stop())
    const lockedProxy = await startProxy({ config: { upstream: locked.url } })
    t.teardown(() => lockedProxy.stop())
    for (const [name, opts] of Object.entries({ 'wrong password': { username: 'alice', password: 'nope' }, anonymous: {} })) {
      const direct = await S.attempt(locked.url, v, opts)
      const proxied = await S.attempt(lockedProxy.url, v, opts)
      t.equal(S.connackCode(direct), x.wrongPassword, `${name}: Mosquitto's code`)
      t.same(proxied.connack, direct.connack, `${name}: same CONNACK through the proxy`)
      await proxied.gone()
      t.ok(proxied.closed, `${name}: closed after the refusal`)
    }
    const ok = await S.connectPeer(lockedProxy.url, v, { username: 'alice', password: 'secret' })
    await ok.client.endAsync()
    await settled(t, lockedProxy)
    if (dynsec === undefined) { t.comment(`no dynamic-security plugin at ${DYNSEC}: SUBACK failure not checked`); return }
    const dynsecProxy = await startProxy({ config: { upstream: dynsec.url } })
    t.teardown(() => dynsecProxy.stop())
    for (const url of [dynsec.url, dynsecProxy.url]) {
      const peer = await S.connectPeer(url, v)
      await peer.client.subscribeAsync({ 'ok/a': { qos: 1 }, 'denied/a': { qos: 1 }, 'ok/#': { qos: 2 } }).catch(() => {})
      t.same((peer.last('suback') as { granted?: number[] } | undefined)?.granted, x.subackDenied, `SUBACK via ${url}`)
      await peer.client.publishAsync('denied/x', 'no', { qos: 1 }).catch(() => {})
      t.same(peer.after().filter((p) => p.startsWith('puback')), x.deniedPublish, `denied PUBLISH via ${url}`)
      await peer.client.endAsync()
    }
    await settled(t, dynsecProxy)
  })

  t.test('broker unreachable: CONNACK server unavailable', async (t) => {
    t.teardown(S.endAllPeers)
    const proxy = await startProxy({ config: { upstream: `mqtt://127.0.0.1:${await freePort()}` } })
    t.teardown(() => proxy.stop())
    const peer = await S.attempt(proxy.url, v)
    t.equal(S.connackCode(peer), x.unavailable)
    await peer.gone()
    await settled(t, proxy)
  })

  t.test('broker never answers CONNECT: CONNACK server unavailable after connectTimeoutMs', async (t) => {
    t.teardown(S.endAllPeers)
    const silent = await startFakeBroker(async (s) => { await s.closed })
    t.teardown(() => silent.close())
    const proxy = await startProxy({ config: { upstream: silent.url, limits: { connectTimeoutMs: 500 } } })
    t.teardown(() => proxy.stop())
    const started = Date.now()
    const peer = await S.attempt(proxy.url, v)
    const elapsed = Date.now() - started
    t.equal(S.connackCode(peer), x.unavailable)
    t.ok(elapsed >= 450 && elapsed < 1500, `answered after ${elapsed} ms`)
    t.equal(silent.sessions[0]?.received[0]?.cmd, 'connect', 'the broker did get the CONNECT')
    await peer.gone()
    await silent.sessions[0]?.closed
    t.pass('the proxy closed the upstream socket')
    await settled(t, proxy)
  })

  t.test('broker dies: the client is closed, as when connected directly', async (t) => {
    t.teardown(S.endAllPeers)
    const doomed = await startMosquitto()
    t.teardown(() => doomed.stop())
    const proxy = await startProxy({ config: { upstream: doomed.url } })
    t.teardown(() => proxy.stop())
    const direct = await S.connectPeer(doomed.url, v, { clientId: tag('die') })
    const proxied = await S.connectPeer(proxy.url, v, { clientId: tag('die') })
    doomed.kill('SIGKILL')
    await Promise.all([direct.gone(), proxied.gone()])
    t.same(proxied.after(), direct.after(), 'same packets before the close')
    await settled(t, proxy)
  })
}
