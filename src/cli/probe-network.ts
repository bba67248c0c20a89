// `mqtt-guard probe`'s vocabulary (options, steps, report) and its steps below MQTT: name
// resolution, TCP, TLS (chain, host name, expiry) and the WebSocket upgrade, each recorded with
// its time and, when it fails, the likely fix. probe.ts runs them, then the MQTT steps.

import dns from 'node:dns/promises'
import net from 'node:net'
import tls from 'node:tls'
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import type { Duplex } from 'node:stream'
import WebSocket, { createWebSocketStream } from 'ws'

export type ProbeVersion = 3 | 4 | 5

export interface ProbeOptions {
  url: string
  username?: string | undefined
  password?: string | undefined
  clientId?: string | undefined
  cafile?: string | undefined
  cert?: string | undefined
  key?: string | undefined
  /** Go on when the server's certificate does not verify (the step still says why). */
  insecure?: boolean | undefined
  protocolVersion: ProbeVersion
  /** The probe topic; default `mqtt-guard/probe/<client ID>`. */
  topic?: string | undefined
  timeoutMs: number
  /** Certificates that end sooner than this many days are a warning. */
  warnDays?: number | undefined
  /** Each step as it finishes. */
  onStep?: ((step: ProbeStep) => void) | undefined
}

export type StepName = 'resolve' | 'tcp' | 'tls' | 'websocket' | 'connect' | 'subscribe' | 'qos 0' | 'qos 1' | 'qos 2' | 'disconnect'

export interface ProbeStep {
  step: StepName
  ok: boolean
  /** Milliseconds the step took. */
  ms: number
  /** What was found, in words. */
  detail: string
  /** For a failed step or a warning: the likely fix, in one sentence. */
  fix?: string | undefined
  /** True when the step passed with something to look at (a certificate expiring soon). */
  warning?: boolean | undefined
  data?: Record<string, unknown> | undefined
}

export interface ProbeReport {
  url: string
  clientId: string
  protocolVersion: ProbeVersion
  ok: boolean
  steps: ProbeStep[]
}

/** A step failed: the probe stops (the step was recorded). */
export class StepFailed extends Error {}

export const elapsed = (since: number): number => Math.round((performance.now() - since) * 100) / 100

/** Records a step; throws StepFailed when it failed. */
export type RecordStep = (step: ProbeStep) => ProbeStep

export async function resolve (host: string, record: RecordStep): Promise<{ address: string, family: number }> {
  const start = performance.now()
  if (net.isIP(host) !== 0) {
    record({ step: 'resolve', ok: true, ms: 0, detail: `${host} is an address`, data: { addresses: [host] } })
    return { address: host, family: net.isIP(host) }
  }
  try {
    const all = await dns.lookup(host, { all: true })
    const first = all[0] as { address: string, family: number }
    record({ step: 'resolve', ok: true, ms: elapsed(start), detail: `${host} → ${all.map((a) => a.address).join(', ')}`, data: { addresses: all.map((a) => a.address) } })
    return first
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? ''
    record({
      step: 'resolve', ok: false, ms: elapsed(start), detail: `${host} does not resolve (${code || (err as Error).message})`,
      fix: code === 'ENOTFOUND' ? 'check the host name, or the DNS servers and search domains this machine uses' : 'name resolution failed: check the DNS servers this machine uses and retry'
    })
    throw new StepFailed('resolve')
  }
}

const TCP_FIXES: Record<string, string> = {
  ECONNREFUSED: 'nothing listens there: is the broker running, and is this its port (1883 plain, 8883 TLS)?',
  ETIMEDOUT: 'no answer at all: a firewall or security group drops the packets, or the host is down',
  EHOSTUNREACH: 'no route to the host: check the network, VPN or routing',
  ENETUNREACH: 'no route to that network: check the network, VPN or routing',
  ECONNRESET: 'the connection was reset at once: something in between (a firewall, a load balancer) refuses it'
}

export async function tcp (target: { address: string, family: number }, port: number, timeoutMs: number, record: RecordStep): Promise<net.Socket> {
  const start = performance.now()
  const socket = net.connect({ host: target.address, port, family: target.family })
  socket.setNoDelay(true)
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })) }, timeoutMs)
      socket.once('connect', () => { clearTimeout(timer); resolve() })
      socket.once('error', (err) => { clearTimeout(timer); reject(err) })
    })
  } catch (err) {
    socket.destroy()
    const code = (err as NodeJS.ErrnoException).code ?? ''
    record({ step: 'tcp', ok: false, ms: elapsed(start), detail: `${target.address}:${port}: ${code !== '' ? code : (err as Error).message}`, fix: TCP_FIXES[code] ?? 'the TCP connection failed: check the address, the port and the network in between' })
  }
  record({ step: 'tcp', ok: true, ms: elapsed(start), detail: `connected to ${target.address}:${port}` })
  return socket
}

const TLS_FIXES: Record<string, string> = {
  CERT_HAS_EXPIRED: 'the server\'s certificate has expired: renew it',
  CERT_NOT_YET_VALID: 'the server\'s certificate is not valid yet: check the clocks of both machines',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the server uses a self-signed certificate: pass it (or its CA) with --cafile',
  SELF_SIGNED_CERT_IN_CHAIN: 'the chain ends in a CA this client does not trust: pass that CA with --cafile',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the chain does not lead to a CA this client trusts: pass the CA with --cafile, or have the server send its intermediate certificates',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the chain does not lead to a CA this client trusts: pass the CA with --cafile',
  ERR_TLS_CERT_ALTNAME_INVALID: 'the certificate is not for this host name: connect with a name it lists, or reissue it with this one'
}

function readPem (file: string | undefined, what: string): Buffer | undefined {
  if (file === undefined) return undefined
  try {
    return readFileSync(file)
  } catch (err) {
    throw new Error(`${what} ${file}: ${(err as Error).message}`)
  }
}

/** The TLS handshake on `socket`: what the server's certificate says, verified or not. */
export async function handshake (socket: net.Socket, host: string, options: ProbeOptions, record: RecordStep): Promise<tls.TLSSocket> {
  const start = performance.now()
  const secure = tls.connect({
    socket,
    servername: net.isIP(host) === 0 ? host : undefined,
    ca: readPem(options.cafile, '--cafile'),
    cert: readPem(options.cert, '--cert'),
    key: readPem(options.key, '--key'),
    rejectUnauthorized: false
  })
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`no TLS handshake within ${options.timeoutMs} ms: is this a TLS port?`)) }, options.timeoutMs)
      secure.once('secureConnect', () => { clearTimeout(timer); resolve() })
      secure.once('error', (err) => { clearTimeout(timer); reject(err) })
      secure.once('close', () => { clearTimeout(timer); reject(new Error('the server closed the connection during the handshake')) })
    })
  } catch (err) {
    secure.destroy()
    const message = (err as Error).message
    const plain = /wrong version number|packet length too long|unknown protocol|is this a TLS port|disconnected before secure TLS|closed the connection during the handshake|ECONNRESET/.test(message)
    const clientCert = /certificate required|handshake failure|bad certificate/.test(message) && options.cert === undefined
    let fix = 'the TLS handshake failed: compare the TLS versions and ciphers both sides allow, and the client certificate'
    if (clientCert) fix = 'the server requires a client certificate: pass --cert and --key'
    else if (plain) fix = 'the server does not speak TLS on this port (or hung up on this client\'s TLS version): use mqtt://, or the TLS port, usually 8883'
    record({ step: 'tls', ok: false, ms: elapsed(start), detail: `handshake failed: ${message}`, fix })
  }
  const cert = secure.getPeerCertificate(false)
  const validTo = new Date(cert.valid_to)
  const days = Math.floor((validTo.getTime() - Date.now()) / 86_400_000)
  const names = subjectNames(cert)
  const failure = !secure.authorized ? String(secure.authorizationError) : tls.checkServerIdentity(host, cert) !== undefined ? 'ERR_TLS_CERT_ALTNAME_INVALID' : undefined
  const data = { protocol: secure.getProtocol(), subject: cert.subject?.CN, issuer: cert.issuer?.CN, names, validTo: validTo.toISOString(), daysLeft: days, verified: failure === undefined }
  const facts = `${String(secure.getProtocol())}, certificate ${cert.subject?.CN ?? '(no CN)'} from ${cert.issuer?.CN ?? '(no issuer CN)'}, ${days >= 0 ? `expires in ${days} day${days === 1 ? '' : 's'}` : `EXPIRED ${-days} day${days === -1 ? '' : 's'} ago`} (${validTo.toISOString().slice(0, 10)})`
  if (failure !== undefined) {
    const why = failure === 'ERR_TLS_CERT_ALTNAME_INVALID' ? `not valid for ${host} (it names ${names.join(', ') || 'nothing'})` : failure
    const step: ProbeStep = { step: 'tls', ok: options.insecure === true, ms: elapsed(start), detail: `${facts}; NOT verified: ${why}`, fix: TLS_FIXES[failure] ?? 'the certificate does not verify: check the chain with --cafile', warning: true, data }
    if (!step.ok) secure.destroy()
    record(step)
    return secure
  }
  const soon = days < (options.warnDays ?? 30)
  record({ step: 'tls', ok: true, ms: elapsed(start), detail: `${facts}; chain and host name verified`, warning: soon, fix: soon ? `the certificate ends in ${days} days: renew it before ${validTo.toISOString().slice(0, 10)}` : undefined, data })
  return secure
}

function subjectNames (cert: tls.PeerCertificate): string[] {
  const alt = (cert.subjectaltname ?? '').split(',').map((s) => s.trim().replace(/^(DNS|IP Address):/, '')).filter((s) => s !== '')
  return alt.length > 0 ? alt : [cert.subject?.CN ?? []].flat()
}

export async function upgrade (url: URL, options: ProbeOptions, record: RecordStep): Promise<{ stream: Duplex, socket: { destroy: () => void } }> {
  const start = performance.now()
  const ws = new WebSocket(url, ['mqtt'], {
    ca: readPem(options.cafile, '--cafile'),
    cert: readPem(options.cert, '--cert'),
    key: readPem(options.key, '--key'),
    rejectUnauthorized: options.insecure !== true,
    handshakeTimeout: options.timeoutMs
  })
  try {
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => { resolve() })
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => { reject(new Error(`HTTP ${String(res.statusCode)} ${res.statusMessage ?? ''} instead of a WebSocket upgrade`)) })
    })
  } catch (err) {
    ws.terminate()
    record({ step: 'websocket', ok: false, ms: elapsed(start), detail: `upgrade failed: ${(err as Error).message}`, fix: 'check the path (often /mqtt) and that the server serves MQTT over WebSockets on this port' })
  }
  const protocol = ws.protocol
  record({ step: 'websocket', ok: true, ms: elapsed(start), detail: `upgraded ${url.pathname}, subprotocol ${protocol !== '' ? protocol : '(none)'}`, warning: protocol !== 'mqtt', fix: protocol !== 'mqtt' ? 'the server did not agree to the "mqtt" subprotocol: some clients refuse such a server' : undefined })
  return { stream: createWebSocketStream(ws), socket: { destroy: () => { ws.terminate() } } }
}
