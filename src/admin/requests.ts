// The admin endpoint's HTTP pieces that judge a request: a client's mistake is a RequestError
// (answered with its status and a one-line reason, never a 500 or a stack in the log), bodies
// are read within a limit, and a state-changing request from a browser must prove it comes
// from the console's own page.

import type http from 'node:http'
import type { RefusalReason } from './sockets.js'

/** A request the client got wrong: answered `status` with `message`, logged without a stack. */
export class RequestError extends Error {
  constructor (readonly status: number, message: string, readonly reason: RefusalReason = 'bad_request') {
    super(message)
    this.name = 'RequestError'
  }
}

/** decodeURIComponent, with malformed percent-encoding a 400 that says where. */
export function decodePart (text: string, where: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    throw new RequestError(400, `${where}: malformed percent-encoding`)
  }
}

export function requestUrl (req: http.IncomingMessage): URL {
  try {
    return new URL(req.url ?? '/', 'http://admin')
  } catch {
    throw new RequestError(400, 'request target is not a valid URL path')
  }
}

export async function readJson (req: http.IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0)
  if (declared > limit) throw new RequestError(413, `body over ${limit} bytes`, 'body_too_large')
  let size = 0
  const chunks: Buffer[] = []
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > limit) throw new RequestError(413, `body over ${limit} bytes`, 'body_too_large')
    chunks.push(chunk as Buffer)
  }
  if (chunks.length === 0) return undefined
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown
  } catch {
    throw new RequestError(400, 'body is not JSON')
  }
}

export function send (res: http.ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body, null, 2) + '\n'
  // Content-Length also for HEAD, whose body node:http drops: the headers GET would send.
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

/**
 * Throws when a state-changing request that a browser may have sent (it carries a cookie, an
 * Origin or Sec-Fetch-Site) lacks a same-origin proof. A page on another port of the same host
 * is the same *site*, so SameSite=Strict lets the cookie through; what stops it is that a
 * simple cross-origin request cannot send a JSON content type or a custom header without a
 * CORS preflight, which this server never answers with an Access-Control header. A request
 * with a bearer token is a script's and needs none of this.
 */
export function checkSameOrigin (req: http.IncomingMessage, bearer: boolean): void {
  if (bearer || SAFE_METHODS.has(req.method ?? 'GET')) return
  const h = req.headers
  const browser = h.cookie !== undefined || h.origin !== undefined || h['sec-fetch-site'] !== undefined
  if (!browser) return
  const site = h['sec-fetch-site']
  if (site !== undefined && site !== 'same-origin') throw new RequestError(403, `cross-origin request refused (Sec-Fetch-Site: ${site})`, 'cross_origin')
  if (h.origin !== undefined && originHost(h.origin) !== h.host) throw new RequestError(403, `cross-origin request refused (Origin ${h.origin} is not this server)`, 'cross_origin')
  const json = /^application\/json\s*(;|$)/i.test(h['content-type'] ?? '')
  if (!json && h['x-requested-with'] === undefined) {
    throw new RequestError(403, 'a state-changing request from a browser needs Content-Type: application/json or an X-Requested-With header', 'cross_origin')
  }
}

function originHost (origin: string): string | undefined {
  try {
    return new URL(origin).host
  } catch {
    return undefined // "null" (a sandboxed or file: page) is no origin of ours
  }
}
