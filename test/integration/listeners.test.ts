// Listeners: mqtts (with and without client certificates), ws and wss with MQTT.js, the PROXY
// protocol from raw sockets (the real address in logs and /connections), certificate reload
// and expiry, and the config errors that name the key.

import t, { type Test } from 'tap'
import net from 'node:net'
import { once, type EventEmitter } from 'node:events'
import { readFile, copyFile } from 'node:fs/promises'
import path from 'node:path'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import { BASE, nextMessage, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { handMadeConnect } from '../helpers/raw-client.js'
import { makePki } from '../helpers/certs.js'
import { encodeProxyV1, encodeProxyV2 } from '../../src/wire/proxy-protocol.js'
import { buildConfig } from '../../src/config/config.js'
import { isGuardError } from '../../src/errors.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const pki = await makePki(t)
const serverCert = await pki.server(['localhost', '127.0.0.1'])

async function proxy (t: Test, listen: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<TestProxy> {
  const p = await startProxy({ config: { upstream: mosquitto.url, listen: [listen], ...extra } })
  t.teardown(() => p.stop())
  return p
}

async function connected (t: Test, url: string, options: IClientOptions): Promise<MqttClient> {
  const c = await mqtt.connectAsync(url, { ...BASE, ...options })
  t.teardown(async () => { await c.endAsync(true) })
  return c
}

async function roundTrip (t: Test, c: MqttClient): Promise<void> {
  const topic = uniqueTopic('listen')
  await c.subscribeAsync(topic, { qos: 1 })
  const got = nextMessage(c, topic)
  await c.publishAsync(topic, 'over the listener', { qos: 1 })
  t.equal((await got).payload, 'over the listener')
}

const ca = await readFile(pki.ca)

t.test('mqtts: TLS 1.2+, MQTT 3.1.1 and 5', async (t) => {
  const p = await proxy(t, { url: 'mqtts://127.0.0.1:0', cert: serverCert.cert, key: serverCert.key })
  for (const protocolVersion of [4, 5] as const) {
    await roundTrip(t, await connected(t, `mqtts://127.0.0.1:${p.port}`, { protocolVersion, ca, clientId: `tls-${protocolVersion}` }))
  }
  const old = net.connect({ port: p.port, host: '127.0.0.1' })
  const { default: tls } = await import('node:tls')
  const legacy = tls.connect({ socket: old, ca, maxVersion: 'TLSv1.1', minVersion: 'TLSv1' })
  const [err] = await once(legacy, 'error') as [NodeJS.ErrnoException]
  t.ok(err.code !== undefined, `TLS 1.1 refused (${err.code ?? ''})`)
  old.destroy()
})

t.test('mqtts with client certificates: required, and the CN reaches the plugins', async (t) => {
  const alice = await pki.client('alice', { san: ['email:alice@example.com'] })
  const seen: Array<{ commonName?: string, subjectAltName?: string } | undefined> = []
  const p = await startProxy({
    config: { upstream: mosquitto.url, listen: [{ url: 'mqtts://127.0.0.1:0', cert: serverCert.cert, key: serverCert.key, ca: pki.ca, requireClientCert: true }] },
    extraPlugins: [{ name: 'cert-recorder', in: { connect: (conn) => { seen.push(conn.certificate) } } }]
  })
  t.teardown(() => p.stop())
  const url = `mqtts://127.0.0.1:${p.port}`
  await roundTrip(t, await connected(t, url, { protocolVersion: 5, ca, cert: await readFile(alice.cert), key: await readFile(alice.key), clientId: 'mtls' }))
  t.match(seen[0], { commonName: 'alice', subjectAltName: 'email:alice@example.com' })
  const refused = mqtt.connect(url, { ...BASE, protocolVersion: 4, ca, clientId: 'no-cert' })
  t.teardown(() => { refused.end(true) })
  await once(refused as unknown as EventEmitter, 'error').catch((err: unknown) => err)
  t.equal(seen.length, 1, 'a client without a certificate never gets to CONNECT')
  const otherPki = await makePki(t)
  const mallory = await otherPki.client('alice')
  const forged = mqtt.connect(url, { ...BASE, protocolVersion: 4, ca, cert: await readFile(mallory.cert), key: await readFile(mallory.key), clientId: 'forged' })
  t.teardown(() => { forged.end(true) })
  await once(forged as unknown as EventEmitter, 'close')
  t.equal(seen.length, 1, 'nor does one whose certificate another CA signed')
  await p.logs.waitFor((l) => l.msg === 'client certificate refused')
})

t.test('auth logs a verified certificate in as its CN; acl\'s %u is that user', async (t) => {
  const bob = await pki.client('bob')
  const p = await startProxy({
    config: {
      upstream: mosquitto.url,
      listen: [{ url: 'mqtts://127.0.0.1:0', cert: serverCert.cert, key: serverCert.key, ca: pki.ca, requireClientCert: true }],
      plugins: [
        { name: 'auth', certificateUser: 'commonName' },
        { name: 'acl', rules: [{ allow: ['publish', 'subscribe', 'receive'], topic: 'devices/%u/#' }] }
      ]
    }
  })
  t.teardown(() => p.stop())
  const url = `mqtts://127.0.0.1:${p.port}`
  const tlsOptions = { ca, cert: await readFile(bob.cert), key: await readFile(bob.key) }
  const c = await connected(t, url, { protocolVersion: 5, ...tlsOptions, clientId: 'bob-1' })
  t.equal((await c.subscribeAsync('devices/bob/#', { qos: 1 }))[0]?.qos, 1, 'his own topics')
  await t.rejects(c.subscribeAsync('devices/alice/#', { qos: 1 }), /Not authorized/, 'not another user\'s (SUBACK 0x87)')
  const claims = mqtt.connect(url, { ...BASE, protocolVersion: 5, ...tlsOptions, clientId: 'bob-2', username: 'alice', password: 'x' })
  t.teardown(() => { claims.end(true) })
  const [err] = await once(claims as unknown as EventEmitter, 'error') as [Error & { code?: number }]
  t.equal(err.code, 0x86, 'a user name that differs from the certificate is refused')
})

t.test('ws and wss: MQTT over WebSocket on /mqtt with the "mqtt" sub-protocol', async (t) => {
  const ws = await proxy(t, { url: 'ws://127.0.0.1:0' })
  await roundTrip(t, await connected(t, `ws://127.0.0.1:${ws.port}/mqtt`, { protocolVersion: 4, clientId: 'ws-4' }))
  await roundTrip(t, await connected(t, `ws://127.0.0.1:${ws.port}/mqtt`, { protocolVersion: 5, clientId: 'ws-5' }))
  const wss = await proxy(t, { url: 'wss://127.0.0.1:0', cert: serverCert.cert, key: serverCert.key })
  await roundTrip(t, await connected(t, `wss://127.0.0.1:${wss.port}/mqtt`, { protocolVersion: 5, ca, clientId: 'wss-5' }))
  const plain = await fetch(`http://127.0.0.1:${ws.port}/mqtt`)
  t.equal(plain.status, 426, 'plain HTTP: upgrade required')
  const wrongPath = mqtt.connect(`ws://127.0.0.1:${ws.port}/other`, { ...BASE, clientId: 'ws-path' })
  t.teardown(() => { wrongPath.end(true) })
  await once(wrongPath as unknown as EventEmitter, 'close')
  t.notOk([...ws.server.connections].some((c) => c.clientId === 'ws-path'), 'another path is refused')
})

/** A raw client that sends a PROXY header and a CONNECT; resolves with the first bytes back. */
async function viaProxyHeader (port: number, header: Buffer, clientId: string): Promise<{ socket: net.Socket, answer: Buffer | undefined }> {
  const socket = net.connect({ port, host: '127.0.0.1' })
  socket.on('error', () => {})
  await once(socket, 'connect')
  socket.write(Buffer.concat([header, handMadeConnect(4, clientId)]))
  const answer = await Promise.race([
    once(socket, 'data').then(([d]) => d as Buffer),
    once(socket, 'close').then(() => undefined)
  ])
  return { socket, answer }
}

t.test('PROXY protocol v1 and v2: the real address is what the proxy sees', async (t) => {
  const p = await proxy(t, { url: 'mqtt://127.0.0.1:0', proxyProtocol: true, trustedProxies: ['127.0.0.0/8'] })
  const v1 = await viaProxyHeader(p.port, encodeProxyV1({ family: 'IPv4', sourceAddress: '203.0.113.7', sourcePort: 40001, destinationAddress: '10.0.0.1', destinationPort: 1883 }), 'pp-v1')
  t.teardown(() => { v1.socket.destroy() })
  t.equal(v1.answer?.toString('hex'), '20020000', 'CONNACK 0 after a v1 header')
  const v2 = await viaProxyHeader(p.port, encodeProxyV2({ family: 'IPv6', sourceAddress: '2001:db8::42', sourcePort: 40002, destinationAddress: '2001:db8::1', destinationPort: 1883 }), 'pp-v2')
  t.teardown(() => { v2.socket.destroy() })
  t.equal(v2.answer?.toString('hex'), '20020000', 'CONNACK 0 after a v2 header')
  const views = [...p.server.connections].map((c) => c.view())
  t.match(views.find((v) => v.clientId === 'pp-v1'), { address: '203.0.113.7', port: 40001 })
  t.match(views.find((v) => v.clientId === 'pp-v2'), { address: '2001:db8::42', port: 40002 })
  const none = await viaProxyHeader(p.port, Buffer.alloc(0), 'pp-none')
  t.equal(none.answer, undefined, 'no header: closed')
  await p.logs.waitFor((l) => l.msg === 'PROXY protocol header refused' && l.reason === 'no PROXY protocol header')
  const untrusted = await proxy(t, { url: 'mqtt://127.0.0.1:0', proxyProtocol: true, trustedProxies: ['10.0.0.0/8'] })
  const refused = await viaProxyHeader(untrusted.port, encodeProxyV1({ family: 'IPv4', sourceAddress: '198.51.100.1', sourcePort: 1, destinationAddress: '10.0.0.1', destinationPort: 1883 }), 'pp-untrusted')
  t.equal(refused.answer, undefined, 'a header from an address not in trustedProxies is refused')
  await untrusted.logs.waitFor((l) => typeof l.msg === 'string' && l.msg.includes('not in trustedProxies'))
})

t.test('PROXY protocol in front of TLS: the header, then the handshake in the same packet', async (t) => {
  const p = await proxy(t, { url: 'mqtts://127.0.0.1:0', cert: serverCert.cert, key: serverCert.key, proxyProtocol: true })
  const { default: tls } = await import('node:tls')
  const raw = net.connect({ port: p.port, host: '127.0.0.1' })
  await once(raw, 'connect')
  // cork: the header and the ClientHello leave in one segment, as a load balancer sends them.
  raw.cork()
  raw.write(encodeProxyV2({ family: 'IPv4', sourceAddress: '192.0.2.9', sourcePort: 5555, destinationAddress: '10.0.0.1', destinationPort: 8883 }))
  const secure = tls.connect({ socket: raw, ca, servername: 'localhost' })
  process.nextTick(() => { raw.uncork() })
  await once(secure, 'secureConnect')
  secure.write(handMadeConnect(4, 'pp-tls'))
  const [connack] = await once(secure, 'data') as [Buffer]
  t.equal(connack.toString('hex'), '20020000')
  t.match([...p.server.connections].map((c) => c.view()).find((v) => v.clientId === 'pp-tls'), { address: '192.0.2.9', port: 5555, listener: `mqtts://127.0.0.1:0` })
  secure.destroy()
})

t.test('towards the broker: TLS with CA verification, and the client\'s address in a PROXY header', async (t) => {
  // B is the "broker": a proxy with an mqtts listener and a PROXY-protocol listener, fronting Mosquitto.
  const b = await startProxy({
    config: {
      upstream: mosquitto.url,
      listen: [{ url: 'mqtts://127.0.0.1:0', cert: serverCert.cert, key: serverCert.key }, { url: 'mqtt://127.0.0.1:0', proxyProtocol: true }]
    }
  })
  t.teardown(() => b.stop())
  const [tlsPort, ppPort] = b.server.listeners.map((l) => l.port)
  const overTls = await proxy(t, { url: 'mqtt://127.0.0.1:0' }, { upstream: { url: `mqtts://127.0.0.1:${tlsPort ?? 0}`, ca: pki.ca } })
  await roundTrip(t, await connected(t, overTls.url, { protocolVersion: 5, clientId: 'up-tls' }))
  const wrongCa = await proxy(t, { url: 'mqtt://127.0.0.1:0' }, { upstream: { url: `mqtts://127.0.0.1:${tlsPort ?? 0}` } })
  const refused = mqtt.connect(wrongCa.url, { ...BASE, protocolVersion: 5, clientId: 'up-untrusted' })
  t.teardown(() => { refused.end(true) })
  const [err] = await once(refused as unknown as EventEmitter, 'error') as [Error & { code?: number }]
  t.equal(err.code, 0x88, 'a broker certificate the system CAs do not know: 0x88, broker unavailable')
  // A client behind a load balancer (PROXY header to A); A tells B who it really is.
  const a = await proxy(t, { url: 'mqtt://127.0.0.1:0', proxyProtocol: true }, { upstream: { url: `mqtt://127.0.0.1:${ppPort ?? 0}`, proxyProtocol: 2 } })
  const via = await viaProxyHeader(a.port, encodeProxyV1({ family: 'IPv4', sourceAddress: '203.0.113.50', sourcePort: 6000, destinationAddress: '10.0.0.1', destinationPort: 1883 }), 'pp-chain')
  t.teardown(() => { via.socket.destroy() })
  t.equal(via.answer?.toString('hex'), '20020000')
  t.match([...b.server.connections].map((c) => c.view()).find((v) => v.clientId === 'pp-chain'), { address: '203.0.113.50', port: 6000 }, 'the broker side sees the client\'s address')
})

t.test('certificates: reloaded when the files change; expiry warned and exported', async (t) => {
  const soon = await pki.server(['127.0.0.1'], { days: 5, name: 'soon' })
  const later = await pki.server(['127.0.0.1'], { days: 90, name: 'later' })
  const dir = path.dirname(soon.cert)
  const cert = path.join(dir, 'live.pem')
  const key = path.join(dir, 'live.key')
  await copyFile(soon.cert, cert)
  await copyFile(soon.key, key)
  const p = await startProxy({ config: { upstream: mosquitto.url, admin: '127.0.0.1:0', listen: [{ url: 'mqtts://127.0.0.1:0', cert, key }] } })
  t.teardown(() => p.stop())
  await p.logs.waitFor((l) => l.msg === 'TLS certificate expires within 7 days' && l.days === 4)
  const metricsText = async (): Promise<string> => await (await fetch(`http://127.0.0.1:${p.server.admin?.port ?? 0}/metrics`)).text()
  const seconds = (text: string): number => Number(/mqtt_guard_tls_certificate_expiry_seconds\{[^}]*\} (\d+)/.exec(text)?.[1])
  t.ok(Math.abs(seconds(await metricsText()) - 5 * 86400) < 3600, 'about 5 days left')
  await copyFile(later.key, key)
  await copyFile(later.cert, cert)
  await p.logs.waitFor((l) => l.msg === 'file reloaded' && l.file === cert, 5000)
  const { default: tls } = await import('node:tls')
  const s = tls.connect({ port: p.port, host: '127.0.0.1', ca })
  await once(s, 'secureConnect')
  t.ok(new Date(s.getPeerCertificate().valid_to).getTime() > Date.now() + 80 * 86400_000, 'new connections get the new certificate')
  s.destroy()
  t.ok(seconds(await metricsText()) > 80 * 86400, 'and the metric follows')
})

t.test('listener config errors name the key', async (t) => {
  const error = (listen: unknown): string => {
    try {
      buildConfig({ listen }, {})
    } catch (e) {
      return isGuardError(e) ? e.message : String(e)
    }
    return 'no error'
  }
  t.match(error([{ url: 'mqtts://127.0.0.1:8883' }]), /^listen\[0\]\.cert: mqtts:\/\/ needs cert and key/)
  t.match(error([{ url: 'mqtts://127.0.0.1:8883', cert: '/nope.pem', key: '/nope.key' }]), /^listen\[0\]\.cert: file \/nope\.pem does not exist/)
  t.match(error([{ url: 'http://127.0.0.1:80' }]), /^listen\[0\]\.url: unsupported scheme "http:"/)
  t.match(error([{ url: 'mqtt://127.0.0.1:1883', cert: 'x' }]), /^listen\[0\]\.cert: only for mqtts:\/\/ and wss:\/\//)
  t.match(error([{ url: 'mqtt://127.0.0.1:1883', proxyProtocol: true, trustedProxies: ['10.0.0.0/33'] }]), /^listen\[0\]\.trustedProxies: /)
  t.match(error([{ url: 'mqtt://127.0.0.1:1883', trustedProxies: ['10.0.0.0/8'] }]), /^listen\[0\]\.trustedProxies: only with proxyProtocol: true/)
  t.match(error([{ url: 'mqtts://127.0.0.1:8883', cert: serverCert.cert, key: serverCert.key, requireClientCert: true }]), /^listen\[0\]\.ca: requireClientCert needs the CA/)
})
