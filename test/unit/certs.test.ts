// The throwaway PKI helper: its certificates carry the extensions and dates asked for, and
// node:tls on 127.0.0.1 accepts (or refuses) them the way the TLS tests will rely on.

import t from 'tap'
import type { Test } from 'tap'
import { X509Certificate } from 'node:crypto'
import { once } from 'node:events'
import { access, readFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import tls from 'node:tls'
import { makePki } from '../helpers/certs.js'
import type { CertFiles, Pki } from '../helpers/certs.js'

const DAY_MS = 24 * 60 * 60 * 1000
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1'
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2'

const pki = await makePki(t)

async function x509 (file: string): Promise<X509Certificate> {
  return new X509Certificate(await readFile(file))
}

/** A mutual-TLS server on 127.0.0.1:0 that trusts the PKI's CA; closed in teardown. */
async function listen (t: Test, pki: Pki, files: CertFiles, options: tls.TlsOptions = {}): Promise<{ server: tls.Server, port: number }> {
  const [cert, key, ca] = await Promise.all([readFile(files.cert), readFile(files.key), readFile(pki.ca)])
  const server = tls.createServer({ cert, key, ca, requestCert: true, rejectUnauthorized: true, ...options })
  const sockets = new Set<tls.TLSSocket>()
  server.on('secureConnection', (socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    return new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  })
  return { server, port: (server.address() as AddressInfo).port }
}

/** Resolves once the handshake verified, rejects with the TLS error (e.g. CERT_HAS_EXPIRED). */
async function connect (t: Test, port: number, options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  const socket = tls.connect({ host: '127.0.0.1', port, ...options })
  t.teardown(() => { socket.destroy() })
  return await new Promise((resolve, reject) => {
    socket.once('secureConnect', () => { resolve(socket) })
    socket.once('error', reject)
  })
}

async function clientOptions (pki: Pki, files: CertFiles): Promise<tls.ConnectionOptions> {
  const [cert, key, ca] = await Promise.all([readFile(files.cert), readFile(files.key), readFile(pki.ca)])
  return { cert, key, ca }
}

t.test('CA and leaf certificates carry the asked-for extensions', async (t) => {
  t.match(pki.dir, /mqtt-guard-pki-/)
  const ca = await x509(pki.ca)
  t.equal(ca.ca, true, 'CA:TRUE')
  t.equal(ca.checkIssued(ca), true, 'self-signed')

  const server = await x509((await pki.server(['localhost', '127.0.0.1'])).cert)
  t.equal(server.ca, false)
  t.equal(server.checkIssued(ca), true, 'server cert issued by the CA')
  t.equal(server.verify(ca.publicKey), true, 'server cert signed by the CA key')
  t.same(server.keyUsage, [SERVER_AUTH])
  t.equal(server.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1')
  t.equal(server.checkHost('localhost'), 'localhost')
  t.equal(server.checkIP('127.0.0.1'), '127.0.0.1')

  const client = await x509((await pki.client('alice', { san: ['email:alice@example.com'] })).cert)
  t.same(client.keyUsage, [CLIENT_AUTH])
  t.equal(client.subject, 'CN=alice')
  t.equal(client.checkIssued(ca), true)
})

t.test('validTo follows days: 5 ahead, 30 by default, -1 and 0 in the past', async (t) => {
  const now = Date.now()
  const [five, dflt, minusOne, zero] = await Promise.all([
    pki.client('five', { days: 5 }), pki.client('default'), pki.server(['localhost'], { days: -1 }), pki.server(['localhost'], { days: 0 })
  ])
  const validTo = async (files: CertFiles): Promise<number> => Date.parse((await x509(files.cert)).validTo)
  const near = (actual: number, expected: number, what: string): void => {
    t.ok(Math.abs(actual - expected) < 60_000, `${what}: ${new Date(actual).toISOString()} ≈ ${new Date(expected).toISOString()}`)
  }
  near(await validTo(five), now + 5 * DAY_MS, 'days 5')
  near(await validTo(dflt), now + 30 * DAY_MS, 'default 30 days')
  near(await validTo(minusOne), now - DAY_MS, 'days -1')
  t.ok(await validTo(zero) < now, 'days 0 has expired already')
  const fiveFrom = Date.parse((await x509(five.cert)).validFrom)
  t.ok(fiveFrom <= now, 'a valid certificate is valid now')
})

t.test('mutual TLS: the server sees the client CN and SANs', async (t) => {
  const { server, port } = await listen(t, pki, await pki.server(['localhost', '127.0.0.1']))
  const alice = await pki.client('alice', { san: ['email:alice@example.com', 'DNS:alice.devices.example'] })
  const accepted = once(server, 'secureConnection') as Promise<[tls.TLSSocket]>
  // no servername: node checks the certificate against `host`, i.e. the IP SAN (an IP is
  // not allowed as SNI, RFC 6066 §3)
  const socket = await connect(t, port, await clientOptions(pki, alice))
  t.equal(socket.authorized, true, 'client verified the server against IP:127.0.0.1')
  const [peer] = await accepted
  t.equal(peer.authorized, true, 'server verified the client')
  const cert = peer.getPeerCertificate()
  t.equal(cert.subject.CN, 'alice')
  t.match(cert.subjectaltname, /email:alice@example\.com/)
  t.match(cert.subjectaltname, /DNS:alice\.devices\.example/)
})

t.test('a DNS SAN verifies by servername; an address missing from the SANs does not', async (t) => {
  const { port } = await listen(t, pki, await pki.server(['localhost']))
  const options = await clientOptions(pki, await pki.client('bob'))
  const socket = await connect(t, port, { ...options, servername: 'localhost' })
  t.equal(socket.authorized, true)
  await t.rejects(connect(t, port, options), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }, '127.0.0.1 is not among the SANs')
})

t.test('an expired server certificate fails verification with CERT_HAS_EXPIRED', async (t) => {
  const { port } = await listen(t, pki, await pki.server(['127.0.0.1'], { days: -1, name: 'expired' }))
  const options = await clientOptions(pki, await pki.client('carol'))
  await t.rejects(connect(t, port, options), { code: 'CERT_HAS_EXPIRED' })
})

t.test('a client certificate from another CA does not verify on the server', async (t) => {
  // rejectUnauthorized false so the reason stays readable on the socket: with true, node
  // just destroys it and tlsClientError says only ECONNRESET
  const { server, port } = await listen(t, pki, await pki.server(['127.0.0.1']), { rejectUnauthorized: false })
  const other = await makePki(t)
  const [mallory, theirs] = await Promise.all([other.client('mallory'), clientOptions(pki, await pki.client('alice'))])
  const accepted = once(server, 'secureConnection') as Promise<[tls.TLSSocket]>
  await connect(t, port, { ...theirs, cert: await readFile(mallory.cert), key: await readFile(mallory.key) })
  const [peer] = await accepted
  t.equal(peer.authorized, false)
  // typed Error in @types/node, but node sets the OpenSSL code string
  t.equal(peer.authorizationError as unknown, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE')
  t.equal(peer.getPeerCertificate().subject.CN, 'mallory')
})

t.test('openssl errors carry its stderr; bad names are refused before openssl', async (t) => {
  await t.rejects(pki.client('dave', { san: ['bogus:x'] }), /openssl ca failed: .*(bogus|subjectAltName|extension)/is)
  await t.rejects(pki.server([]), /at least one name/)
  await t.rejects(pki.server(['localhost'], { name: '../escape' }), /plain file name/)
  await pki.server(['localhost'], { name: 'twice' })
  await t.rejects(pki.server(['localhost'], { name: 'twice' }), /already used/, 'names are unique within a PKI')
  await t.rejects(pki.client('eve', { san: ['DNS:a,DNS:b'] }), /comma/)
})

t.test('cleanup removes the directory and may run twice', async (t) => {
  const own = await makePki()
  await own.server(['localhost'])
  await own.cleanup()
  await own.cleanup()
  await t.rejects(access(own.dir), { code: 'ENOENT' })
})
