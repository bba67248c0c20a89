// The identity services issue 23's bench rows need, run inside the bench process on a loopback
// port: a JWKS endpoint with one RS256 key (the proxy fetches it once and caches it) and an
// HTTP authorization hook that allows everything (the proxy asks once per client and topic,
// then answers from its cache). Started on first use and shared by every round; the server
// does not keep the bench process alive. Counts the requests, so the report can show that the
// cached paths made none per message.

import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { SignJWT, exportJWK, generateKeyPair } from 'jose'

export interface IdentityServices {
  /** http://127.0.0.1:PORT/jwks.json */
  readonly jwksUrl: string
  /** http://127.0.0.1:PORT/authz (EMQX's authorization answer: {"result":"allow"}) */
  readonly authzUrl: string
  readonly issuer: string
  readonly audience: string
  /** An RS256 token for the generator's user, valid for two hours. */
  readonly token: string
  /** Requests served so far, by path. */
  readonly requests: Record<string, number>
}

export const BENCH_ISSUER = 'https://bench-idp.invalid/'
export const BENCH_AUDIENCE = 'mqtt'

let services: IdentityServices | undefined
let starting: Promise<IdentityServices> | undefined

/** The running services (after `identityServices()` resolved once). */
export function runningServices (): IdentityServices {
  if (services === undefined) throw new Error('identity services not started: call identityServices() in the variant\'s prepare step')
  return services
}

export async function identityServices (): Promise<IdentityServices> {
  starting ??= start()
  return await starting
}

async function start (): Promise<IdentityServices> {
  const { publicKey, privateKey } = await generateKeyPair('RS256')
  const jwk = { ...await exportJWK(publicKey), kid: 'bench-1', alg: 'RS256', use: 'sig' }
  const requests: Record<string, number> = {}
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/'
    requests[path] = (requests[path] ?? 0) + 1
    req.resume()
    req.on('end', () => {
      if (path === '/jwks.json') return reply(res, 200, { keys: [jwk] })
      if (path === '/authz' || path === '/auth') return reply(res, 200, { result: 'allow', is_superuser: false })
      reply(res, 404, { error: 'not found' })
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { resolve() })
  })
  server.unref()
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: 'RS256', kid: 'bench-1' })
    .setSubject('bench')
    .setIssuer(BENCH_ISSUER)
    .setAudience(BENCH_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime('2h')
    .sign(privateKey)
  services = { jwksUrl: `${base}/jwks.json`, authzUrl: `${base}/authz`, issuer: BENCH_ISSUER, audience: BENCH_AUDIENCE, token, requests }
  return services
}

function reply (res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}
