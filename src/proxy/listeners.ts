// One listener: a TCP server whose sockets may first carry a PROXY protocol header, then TLS
// (mqtts, wss), then WebSocket framing (ws, wss), before the MQTT stream reaches a Connection.
// Every step has the connect timeout; a socket that fails one is closed and logged at debug.

import net from 'node:net'
import tls from 'node:tls'
import http from 'node:http'
import { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { WebSocketServer, createWebSocketStream } from 'ws'
import type { ListenSpec } from '../config/listen.js'
import type { GuardMetrics } from '../observe/metrics.js'
import { parseProxyHeader } from '../wire/proxy-protocol.js'
import { ListenerCertificate } from './listen-tls.js'
import { GuardError } from '../errors.js'

export interface Peer {
  address: string
  port: number
  /** A verified client certificate (mqtts/wss with a CA): what auth may use as the user name. */
  certificate?: { commonName: string | undefined, subjectAltName: string | undefined } | undefined
}

export type OnAccept = (stream: Duplex, peer: Peer) => void

/**
 * Why the client's certificate did not verify, or undefined when it did. A TLSSocket made
 * here (not by tls.Server, which cannot take a stream that already had a PROXY header read
 * from it and still say which one it was) accepts any certificate during the handshake, as
 * Node's own server sockets do; tls.Server then asks the same handle, `verifyError()`.
 */
function clientCertificateError (secure: tls.TLSSocket): string | undefined {
  const handle = (secure as unknown as { _handle?: { verifyError?: () => Error | null } })._handle
  if (typeof handle?.verifyError !== 'function') return 'cannot verify (Node internals changed)'
  const err = handle.verifyError() as (Error & { code?: string }) | null
  return err === null ? undefined : err.code ?? err.message
}

/** `socket`'s stream with `head` in front of it. */
function startingWith (socket: net.Socket, head: Buffer): Duplex {
  const duplex = new Duplex({
    read () { socket.resume() },
    write (chunk: Buffer, _encoding, callback) { socket.write(chunk, callback) },
    final (callback) { socket.end(); callback() },
    destroy (err, callback) { socket.destroy(); callback(err) }
  })
  duplex.push(head)
  socket.on('data', (chunk: Buffer) => { if (!duplex.push(chunk)) socket.pause() })
  socket.on('end', () => { duplex.push(null) })
  socket.on('close', () => { duplex.destroy() })
  return duplex
}

const BIND_PROBLEMS: Record<string, string> = {
  EADDRINUSE: 'is in use',
  EADDRNOTAVAIL: 'is not an address of this machine',
  EACCES: 'needs privileges (ports below 1024 want root or CAP_NET_BIND_SERVICE)'
}

/**
 * Why a server could not listen, naming the setting that chose the address (`listen`, `admin`)
 * and how to change it: a bare "EADDRINUSE 127.0.0.1:9884" does not say which of the two it
 * was. Errors other than the address's own are returned as they are.
 */
export function listenError (err: unknown, key: string, host: string, port: number, change: string): unknown {
  const problem = BIND_PROBLEMS[(err as NodeJS.ErrnoException).code ?? '']
  if (problem === undefined) return err
  const address = `${host.includes(':') ? `[${host}]` : host}:${port}`
  return new GuardError('GUARD_ERR_LISTEN', `${key}: ${address} ${problem} (${change})`, { cause: err })
}

export class Listener {
  private readonly peers = new WeakMap<object, Peer>()
  private readonly certificate: ListenerCertificate | undefined
  private context: tls.SecureContext | undefined
  private readonly http: http.Server | undefined
  private readonly ws: WebSocketServer | undefined
  private server: net.Server | undefined

  constructor (readonly spec: ListenSpec, private readonly onAccept: OnAccept, private readonly log: Logger, metrics: GuardMetrics, private readonly timeoutMs: number) {
    if (spec.tls !== undefined) {
      this.certificate = new ListenerCertificate(spec, log, metrics, (options) => { this.context = tls.createSecureContext(options) })
      this.context = tls.createSecureContext(this.certificate.options)
    }
    if (spec.kind === 'ws' || spec.kind === 'wss') {
      this.ws = new WebSocketServer({
        noServer: true,
        // [MQTT-6.0.0-3]: the WebSocket sub-protocol is "mqtt" (MQTT 3.1 clients: "mqttv3.1").
        handleProtocols: (protocols) => protocols.has('mqtt') ? 'mqtt' : protocols.has('mqttv3.1') ? 'mqttv3.1' : false
      })
      this.http = http.createServer((_req, res) => { res.writeHead(426, { connection: 'close', upgrade: 'websocket' }).end('MQTT over WebSocket: upgrade required\n') })
      this.http.on('upgrade', (req, socket, head) => { this.upgrade(req, socket, head) })
      this.http.on('clientError', (_err, socket) => { socket.destroy() })
    }
  }

  async listen (): Promise<{ host: string, port: number }> {
    const server = net.createServer({ noDelay: true }, (socket) => { this.connection(socket) })
    this.server = server
    server.on('error', (err) => { this.log.error({ err, listener: this.spec.url }, 'listener error') })
    const { host, port } = this.spec
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error): void => { reject(listenError(err, 'listen', host, port, 'set listen: HOST:PORT, --listen, or MQTT_GUARD_LISTEN')) }
      server.once('error', fail)
      server.listen({ host, port }, () => { server.removeListener('error', fail); resolve() })
    })
    const address = server.address() as net.AddressInfo
    return { host: address.address, port: address.port }
  }

  private connection (socket: net.Socket): void {
    const { spec } = this
    // The common case, plain MQTT: straight to a Connection.
    if (spec.proxyProtocol === undefined && spec.kind === 'mqtt') return this.onAccept(socket, { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 })
    socket.on('error', () => {}) // until a Connection owns it
    const own = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 }
    if (spec.proxyProtocol === undefined) return this.secured(socket, own)
    if (!spec.proxyProtocol.isTrusted(own.address)) {
      this.log.warn({ listener: spec.url, address: own.address }, 'PROXY protocol listener: connection from an address not in trustedProxies refused')
      socket.destroy()
      return
    }
    this.readProxyHeader(socket, own)
  }

  private readProxyHeader (socket: net.Socket, own: Peer): void {
    let received: Buffer = Buffer.alloc(0)
    const timer = setTimeout(() => { fail('no PROXY header within connectTimeoutMs') }, this.timeoutMs)
    const fail = (reason: string): void => {
      clearTimeout(timer)
      socket.removeListener('data', onData)
      this.log.info({ listener: this.spec.url, address: own.address, reason }, 'PROXY protocol header refused')
      socket.destroy()
    }
    const onData = (chunk: Buffer): void => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk])
      const parsed = parseProxyHeader(received)
      if (parsed.status === 'incomplete') return
      if (parsed.status === 'invalid') return fail(parsed.reason)
      clearTimeout(timer)
      socket.removeListener('data', onData)
      const peer = parsed.header === undefined ? own : { address: parsed.header.sourceAddress, port: parsed.header.sourcePort }
      // What came with the header (often the ClientHello or CONNECT) must be read first. TLS
      // and HTTP read a net.Socket's handle directly, past anything unshift() put back, so
      // the rest of the stream goes through a duplex that starts with those bytes.
      this.secured(parsed.rest.length === 0 ? socket : startingWith(socket, parsed.rest), peer)
    }
    socket.on('data', onData)
  }

  /** TLS if the listener has it, then the MQTT or WebSocket stream. */
  private secured (socket: Duplex, peer: Peer): void {
    if (this.context === undefined) return this.stream(socket, peer)
    const files = this.spec.tls as NonNullable<ListenSpec['tls']>
    const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: this.context, requestCert: files.ca !== undefined, rejectUnauthorized: files.requireClientCert })
    secure.on('error', (err) => { this.log.debug({ listener: this.spec.url, address: peer.address, err: err.message }, 'TLS handshake failed') })
    const timer = setTimeout(() => { secure.destroy() }, this.timeoutMs)
    secure.once('close', () => { clearTimeout(timer) })
    secure.once('secure', () => {
      clearTimeout(timer)
      const verifyError = clientCertificateError(secure)
      if (verifyError === undefined && files.ca !== undefined) {
        const cert = secure.getPeerCertificate()
        if (cert.subject !== undefined) peer.certificate = { commonName: typeof cert.subject.CN === 'string' ? cert.subject.CN : undefined, subjectAltName: cert.subjectaltname }
      } else if (files.requireClientCert) {
        this.log.info({ listener: this.spec.url, address: peer.address, reason: verifyError }, 'client certificate refused')
        secure.destroy()
        return
      }
      this.stream(secure, peer)
    })
  }

  private stream (socket: Duplex, peer: Peer): void {
    if (this.http === undefined) return this.onAccept(socket, peer)
    this.peers.set(socket, peer)
    this.http.emit('connection', socket)
  }

  private upgrade (req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    if (path !== this.spec.path || this.ws === undefined) {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n')
      return
    }
    const peer = this.peers.get(req.socket) ?? { address: req.socket.remoteAddress ?? '', port: req.socket.remotePort ?? 0 }
    this.ws.handleUpgrade(req, socket, head, (ws) => {
      const stream = createWebSocketStream(ws)
      // A WebSocket that ends is the MQTT stream ending; errors close it like a socket's.
      stream.on('error', () => {})
      this.onAccept(stream, peer)
    })
  }

  reload (): void {
    this.certificate?.reload()
  }

  /** A reload removed this listener: it accepts no more connections; the open ones go on. */
  retire (): void {
    this.certificate?.close()
    this.server?.close()
  }

  async close (): Promise<void> {
    this.certificate?.close()
    this.ws?.close()
    this.http?.closeAllConnections()
    const server = this.server
    if (server !== undefined) await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  }
}
