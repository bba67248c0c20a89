// A JWKS endpoint for JWT tests: node:http on 127.0.0.1:0 serving the public halves of keys
// made with jose's generateKeyPair. It counts requests, rotates keys, and on demand answers
// HTML, 500, or nothing (stalls until the test ends). `sign` makes tokens with its keys.

import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { EventEmitter } from 'node:events'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose'

export type JwksMode = 'ok' | 'html' | 'error' | 'stall'

export interface TestKey { kid: string, alg: 'RS256' | 'ES256', privateKey: CryptoKey, publicKey: CryptoKey, jwk: JWK }

export async function makeKey (kid: string, alg: 'RS256' | 'ES256' = 'RS256'): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }
  return { kid, alg, privateKey, publicKey, jwk }
}

/** A signed token; `claims` are merged over sub/iat/exp (an hour). `header` overrides the protected header. */
export async function sign (key: TestKey, claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return await new SignJWT({ sub: 'alice', iat: now, exp: now + 3600, ...claims })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header })
    .sign(key.privateKey)
}

export class JwksServer {
  requests = 0
  mode: JwksMode = 'ok'
  keys: TestKey[]
  private readonly events = new EventEmitter()
  private readonly stalled = new Set<http.ServerResponse>()

  private constructor (private readonly server: http.Server, keys: TestKey[]) {
    this.keys = keys
  }

  static async start (keys: TestKey[]): Promise<JwksServer> {
    const holder: { self?: JwksServer } = {}
    const server = http.createServer((_req, res) => { holder.self?.answer(res) })
    const self = holder.self = new JwksServer(server, keys)
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    return self
  }

  get url (): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/.well-known/jwks.json`
  }

  private answer (res: http.ServerResponse): void {
    this.requests++
    this.events.emit('request', this.requests)
    if (this.mode === 'stall') { this.stalled.add(res); return }
    if (this.mode === 'html') { res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>Sign in</body></html>'); return }
    if (this.mode === 'error') { res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error'); return }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: this.keys.map((k) => k.jwk) }))
  }

  /** Resolves once the server has had `n` requests in all. */
  async waitForRequests (n: number, timeoutMs = 5000): Promise<void> {
    if (this.requests >= n) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { this.events.removeListener('request', on); reject(new Error(`JWKS had ${this.requests} requests, not ${n}, within ${timeoutMs} ms`)) }, timeoutMs)
      const on = (count: number): void => { if (count >= n) { clearTimeout(timer); this.events.removeListener('request', on); resolve() } }
      this.events.on('request', on)
    })
  }

  async stop (): Promise<void> {
    for (const res of this.stalled) res.destroy()
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => { this.server.close(() => { resolve() }) })
  }
}
