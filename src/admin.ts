// The admin HTTP endpoint: /healthz, /readyz, /metrics, /connections, /diagnostics,
// DELETE /connections/{clientId}, and the web console (/, /overview, /events, /clients/{id}).
// Plain node:http, JSON bodies. A bearer token (or the console's cookie holding it) guards
// everything but the two probes and the console's static files; config refuses a non-loopback
// admin address without one.

import http from 'node:http'
import { timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import type { AdminSpec } from './config.js'
import type { GuardMetrics } from './metrics.js'
import type { AdminRequest, AdminResponse } from './plugin-api.js'
import type { ClientPage, ConnectionView, Finding, Overview } from './admin-api.js'
import { Feed, TOKEN_COOKIE, cookieToken, openEvents, serveStatic } from './console.js'


/** What the admin endpoint asks of the proxy. */
export interface AdminTarget {
  metrics: GuardMetrics
  readiness: () => Promise<{ ready: boolean, checks: Record<string, boolean | string> }>
  connections: () => ConnectionView[]
  /** Closes `clientId` here, and tells the other instances; how many closed here, whether told. */
  kick: (clientId: string) => Promise<{ closedHere: number, announced: boolean }>
  /** The console's overview: one snapshot (the feed sends one a second). */
  overview: () => Promise<Overview>
  /** One client: its live connections and how its recent connections ended. */
  client: (clientId: string) => ClientPage
  /** Findings for `mqtt-guard doctor`. */
  diagnostics: () => Promise<{ instance: string, at: string, findings: Finding[] }>
  /** Paths the core does not know go to the plugins (e.g. /traces). */
  plugins?: (req: AdminRequest) => Promise<AdminResponse | undefined>
}

// Authenticated callers only (read after the token check): a console sends a trace's lines for pcapng.
const MAX_BODY = 16 * 1024 * 1024

async function readJson (req: http.IncomingMessage, limit = MAX_BODY): Promise<unknown> {
  let size = 0
  const chunks: Buffer[] = []
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > limit) throw Object.assign(new Error('body too large'), { status: 413 })
    chunks.push(chunk as Buffer)
  }
  if (chunks.length === 0) return undefined
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown
  } catch {
    throw Object.assign(new Error('body is not JSON'), { status: 400 })
  }
}

function send (res: http.ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body, null, 2) + '\n'
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' })
  res.end(text)
}

function sameToken (given: string, token: string): boolean {
  const a = Buffer.from(given)
  const b = Buffer.from(token)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** The bearer token, or the console's cookie holding it. */
function authorized (req: http.IncomingMessage, token: string | undefined): boolean {
  if (token === undefined) return true
  const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1]
  if (bearer !== undefined) return sameToken(bearer, token)
  const cookie = cookieToken(req)
  return cookie !== undefined && sameToken(cookie, token)
}


export class AdminServer {
  private constructor (private readonly server: http.Server, private readonly feed: Feed, readonly host: string, readonly port: number) {}

  static async start (spec: AdminSpec, target: AdminTarget, log: Logger): Promise<AdminServer> {
    const feed = new Feed(target.overview)
    const server = http.createServer((req, res) => {
      handle(req, res, spec, target, feed).catch((err: unknown) => {
        log.error({ err, url: req.url }, 'admin request failed')
        if (!res.headersSent) send(res, 500, { error: 'internal error' })
      })
    })
    server.on('clientError', (_err, socket) => { socket.destroy() })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host: spec.host, port: spec.port }, () => { server.removeListener('error', reject); resolve() })
    })
    const address = server.address() as { address: string, port: number }
    return new AdminServer(server, feed, address.address, address.port)
  }

  async close (): Promise<void> {
    this.feed.close()
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => { this.server.close(() => { resolve() }) })
  }
}

async function handle (req: http.IncomingMessage, res: http.ServerResponse, spec: AdminSpec, target: AdminTarget, feed: Feed): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://admin')
  const path = url.pathname
  if (req.method === 'GET' && path === '/healthz') return send(res, 200, { status: 'ok' })
  // The console's files hold no data: the page loads, then asks for the token if it needs one.
  if (req.method === 'GET' && await serveStatic(path, res)) return
  if (req.method === 'POST' && path === '/login') return await login(req, res, spec)
  if (req.method === 'GET' && path === '/readyz') {
    const r = await target.readiness()
    return send(res, r.ready ? 200 : 503, r)
  }
  if (!authorized(req, spec.token)) {
    res.setHeader('www-authenticate', 'Bearer')
    return send(res, 401, { error: 'bearer token required' })
  }
  if (req.method === 'GET' && path === '/metrics') return send(res, 200, await target.metrics.text(), target.metrics.contentType)
  if (req.method === 'GET' && path === '/connections') {
    const clientId = url.searchParams.get('clientId')
    const list = target.connections().filter((c) => clientId === null || c.clientId === clientId)
    return send(res, 200, list)
  }
  if (req.method === 'GET' && path === '/diagnostics') return send(res, 200, await target.diagnostics())
  if (req.method === 'GET' && path === '/overview') return send(res, 200, await target.overview())
  if (req.method === 'GET' && path === '/events') return feed.open(req, res)
  const client = /^\/clients\/(.+)$/.exec(path)
  if (req.method === 'GET' && client !== null) return send(res, 200, target.client(decodeURIComponent(client[1] as string)))
  const kick = /^\/connections\/(.+)$/.exec(path)
  if (req.method === 'DELETE' && kick !== null) {
    const clientId = decodeURIComponent(kick[1] as string)
    const result = await target.kick(clientId)
    return send(res, result.closedHere > 0 || result.announced ? 200 : 404, { clientId, ...result })
  }
  if (target.plugins !== undefined) {
    let body: unknown
    try {
      body = req.method === 'POST' || req.method === 'PUT' ? await readJson(req) : undefined
    } catch (err) {
      return send(res, (err as { status?: number }).status ?? 400, { error: (err as Error).message })
    }
    const answer = await target.plugins({ method: req.method ?? 'GET', path, query: url.searchParams, body })
    if (answer?.events !== undefined) return stream(req, res, answer.events)
    if (answer !== undefined) return send(res, answer.status, answer.body)
  }
  const known = ['/healthz', '/readyz', '/metrics', '/connections', '/diagnostics', '/overview', '/events', '/login'].includes(path) || kick !== null || client !== null
  return send(res, known ? 405 : 404, { error: known ? 'method not allowed' : 'not found' })
}

/** A plugin's live feed as Server-Sent Events, until the client goes away. */
function stream (req: http.IncomingMessage, res: http.ServerResponse, events: NonNullable<AdminResponse['events']>): void {
  openEvents(res)
  const stop = events((event, data) => { res.write(`event: ${event}\ndata: ${data.replace(/\n/g, '\ndata: ')}\n\n`) })
  req.on('close', stop)
}

/** POST /login {token}: the console's cookie, so the browser's own requests carry the token. */
async function login (req: http.IncomingMessage, res: http.ServerResponse, spec: AdminSpec): Promise<void> {
  let body: unknown
  try {
    body = await readJson(req, 4096) // before any token check: small
  } catch (err) {
    return send(res, (err as { status?: number }).status ?? 400, { error: (err as Error).message })
  }
  const given = (body as { token?: unknown } | undefined)?.token
  if (spec.token === undefined) return send(res, 200, { ok: true, tokenRequired: false })
  if (typeof given !== 'string' || !sameToken(given, spec.token)) return send(res, 401, { error: 'wrong token' })
  res.setHeader('set-cookie', `${TOKEN_COOKIE}=${encodeURIComponent(given)}; HttpOnly; SameSite=Strict; Path=/`)
  return send(res, 200, { ok: true, tokenRequired: true })
}
