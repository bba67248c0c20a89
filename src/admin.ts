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
import { listenError } from './listeners.js'


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
  // Content-Length also for HEAD, whose body node:http drops: the headers GET would send.
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

function sameToken (given: string, token: string): boolean {
  const a = Buffer.from(given)
  const b = Buffer.from(token)
  return a.length === b.length && timingSafeEqual(a, b)
}

// RFC 9110 §11.1: the scheme is case-insensitive; §11.6.2: `credentials = auth-scheme [ 1*SP
// token68 ]`, so any number of spaces (node:http already trims the ends of the value).
const BEARER = /^bearer +([^ ].*)$/i

/** The bearer token, or the console's cookie holding it. */
function authorized (req: http.IncomingMessage, token: string | undefined): boolean {
  if (token === undefined) return true
  const bearer = BEARER.exec(req.headers.authorization ?? '')?.[1]
  if (bearer !== undefined) return sameToken(bearer, token)
  const cookie = cookieToken(req)
  return cookie !== undefined && sameToken(cookie, token)
}

/** What a route's handler is given: `params` are its pattern's groups, decoded. */
interface Call {
  req: http.IncomingMessage
  res: http.ServerResponse
  url: URL
  params: string[]
  spec: AdminSpec
  target: AdminTarget
  feed: Feed
}

type Handler = (call: Call) => Promise<void> | void

interface Route {
  /** The exact path, or a pattern whose groups become `params`. */
  path: string | RegExp
  /** Served without the token: the probes, and the login that sets it. */
  open?: boolean
  /** By method; HEAD is served by GET's handler, OPTIONS and 405 answers list these. */
  methods: Partial<Record<'GET' | 'POST' | 'DELETE', Handler>>
}

/** The core's routes. A path not here goes to the plugins (e.g. /traces), then 404. */
const ROUTES: Route[] = [
  { path: '/healthz', open: true, methods: { GET: ({ res }) => { send(res, 200, { status: 'ok' }) } } },
  {
    path: '/readyz',
    open: true,
    methods: {
      GET: async ({ res, target }) => {
        const r = await target.readiness()
        send(res, r.ready ? 200 : 503, r)
      }
    }
  },
  { path: '/login', open: true, methods: { POST: async ({ req, res, spec }) => { await login(req, res, spec) } } },
  { path: '/metrics', methods: { GET: async ({ res, target }) => { send(res, 200, await target.metrics.text(), target.metrics.contentType) } } },
  {
    path: '/connections',
    methods: {
      GET: ({ res, url, target }) => {
        const clientId = url.searchParams.get('clientId')
        send(res, 200, target.connections().filter((c) => clientId === null || c.clientId === clientId))
      }
    }
  },
  {
    path: /^\/connections\/(.+)$/,
    methods: {
      DELETE: async ({ res, params: [clientId = ''], target }) => {
        const result = await target.kick(clientId)
        send(res, result.closedHere > 0 || result.announced ? 200 : 404, { clientId, ...result })
      }
    }
  },
  { path: '/diagnostics', methods: { GET: async ({ res, target }) => { send(res, 200, await target.diagnostics()) } } },
  { path: '/overview', methods: { GET: async ({ res, target }) => { send(res, 200, await target.overview()) } } },
  { path: '/events', methods: { GET: ({ req, res, feed }) => { if (req.method === 'HEAD') headOfEvents(res); else feed.open(req, res) } } },
  { path: /^\/clients\/(.+)$/, methods: { GET: ({ res, params: [clientId = ''], target }) => { send(res, 200, target.client(clientId)) } } }
]

function findRoute (path: string): { route: Route, params: string[] } | undefined {
  for (const route of ROUTES) {
    if (route.path === path) return { route, params: [] }
    const match = typeof route.path === 'string' ? null : route.path.exec(path)
    if (match !== null) return { route, params: match.slice(1).map((p) => decodeURIComponent(p)) }
  }
  return undefined
}

/** The Allow header's value (RFC 9110 §10.2.1): the route's methods, HEAD with GET, OPTIONS. */
function allow (route: Route): string {
  const methods = Object.keys(route.methods)
  return [...methods, ...(methods.includes('GET') ? ['HEAD'] : []), 'OPTIONS'].join(', ')
}

/** The route's handler for this method; OPTIONS (204) and 405 answers both carry Allow. */
async function serve (route: Route, call: Call): Promise<void> {
  const handler = route.methods[call.req.method === 'HEAD' ? 'GET' : call.req.method as keyof Route['methods']]
  if (handler !== undefined) return await handler(call)
  call.res.setHeader('allow', allow(route))
  if (call.req.method === 'OPTIONS') {
    call.res.writeHead(204, { 'cache-control': 'no-store' })
    call.res.end()
    return
  }
  send(call.res, 405, { error: 'method not allowed', allow: allow(route) })
}

/** An SSE answer's headers for HEAD, which must not stay open as the stream would. */
function headOfEvents (res: http.ServerResponse): void {
  openEvents(res)
  res.end()
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
      const fail = (err: Error): void => { reject(listenError(err, 'admin', spec.host, spec.port, 'set admin: HOST:PORT, --admin, or MQTT_GUARD_ADMIN; off turns it off')) }
      server.once('error', fail)
      server.listen({ host: spec.host, port: spec.port }, () => { server.removeListener('error', fail); resolve() })
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
  const found = findRoute(url.pathname)
  const call: Call = { req, res, url, params: found?.params ?? [], spec, target, feed }
  if (found?.route.open === true) return await serve(found.route, call)
  // The console's files hold no data: the page loads, then asks for the token if it needs one.
  if ((req.method === 'GET' || req.method === 'HEAD') && await serveStatic(url.pathname, res)) return
  if (!authorized(req, spec.token)) {
    res.setHeader('www-authenticate', 'Bearer')
    return send(res, 401, { error: 'bearer token required' })
  }
  if (found !== undefined) return await serve(found.route, call)
  if (target.plugins !== undefined && await askPlugins(req, res, url, target.plugins)) return
  send(res, 404, { error: 'not found' })
}

/** Paths the core does not know, for the plugins (HEAD asked as GET); false when none answered. */
async function askPlugins (req: http.IncomingMessage, res: http.ServerResponse, url: URL, plugins: NonNullable<AdminTarget['plugins']>): Promise<boolean> {
  let body: unknown
  try {
    body = req.method === 'POST' || req.method === 'PUT' ? await readJson(req) : undefined
  } catch (err) {
    send(res, (err as { status?: number }).status ?? 400, { error: (err as Error).message })
    return true
  }
  const method = req.method === 'HEAD' ? 'GET' : req.method ?? 'GET'
  const answer = await plugins({ method, path: url.pathname, query: url.searchParams, body })
  if (answer === undefined) return false
  if (answer.events === undefined) send(res, answer.status, answer.body)
  else if (req.method === 'HEAD') headOfEvents(res)
  else stream(req, res, answer.events)
  return true
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
