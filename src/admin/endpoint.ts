// The admin HTTP endpoint: /healthz, /readyz, /metrics, /connections, /diagnostics,
// DELETE /connections/{clientId}, POST /reload, and the web console (/, /overview, /events, /clients/{id}).
// Plain node:http, JSON bodies. A bearer token (or the console's cookie holding it) guards
// everything but the two probes and the console's static files; config refuses a non-loopback
// admin address without one.

import http from 'node:http'
import type net from 'node:net'
import type { Duplex } from 'node:stream'
import { timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import type { AdminSpec } from '../config/config.js'
import type { Registry } from 'prom-client'
import type { RedisStatus } from '../redis/watch.js'
import type { AdminRequest, AdminResponse } from '../plugin/api.js'
import type { ClientPage, ConnectionView, Finding, Overview } from '../views.js'
import { Feed, TOKEN_COOKIE, cookieToken, serveStatic } from './console.js'
import { listenError } from '../proxy/listeners.js'
import { RequestError, checkSameOrigin, decodePart, readJson, requestUrl, send } from './requests.js'
import { AdminSockets, RefusalLog } from './sockets.js'
import { Viewers, openEvents } from './stream.js'
import { adminMetrics } from './own-metrics.js'
import type { BrokerView, PoolView } from '../upstream/pool.js'
import type { ReloadReport } from '../reload/plan.js'


/** The registry the endpoint adds its own metrics to, and the text /metrics serves (GuardMetrics; a primary's aggregate). */
export interface MetricsText {
  readonly registry: Registry
  text: () => Promise<string>
  readonly contentType: string
}

/** What the admin endpoint asks of the proxy. */
export interface AdminTarget {
  metrics: MetricsText
  readiness: () => Promise<{ ready: boolean, checks: Record<string, boolean | string>, redis?: RedisStatus }>
  /** Redis as the proxy sees it (form, role, read-only, failovers, Cluster state); undefined without Redis. */
  redis?: () => Promise<RedisStatus | undefined>
  connections: () => ConnectionView[] | Promise<ConnectionView[]>
  /** Closes `clientId` here, and tells the other instances; how many closed here, whether told. */
  kick: (clientId: string) => Promise<{ closedHere: number, announced: boolean }>
  /** The console's overview: one snapshot (the feed sends one a second). */
  overview: () => Promise<Overview>
  /** One client: its live connections and how its recent connections ended. */
  client: (clientId: string) => ClientPage | Promise<ClientPage>
  /** Findings for `mqtt-guard doctor`. */
  diagnostics: () => Promise<{ instance: string, at: string, findings: Finding[] }>
  /** Paths the core does not know go to the plugins (e.g. /traces). */
  plugins?: (req: AdminRequest) => Promise<AdminResponse | undefined>
  /** MQTT connections open now, for the descriptors the admin endpoint leaves them. */
  openConnections?: () => number
  /** The brokers behind the proxy: one (embedded, a URL) or a pool with each broker's state. */
  upstreams?: () => UpstreamsView | Promise<UpstreamsView>
  /** Reads the configuration again and applies it (POST /reload); what changed and what was refused. */
  reload?: () => Promise<ReloadReport>
  /** Starts (rate a second) or ends (undefined) a drain of broker `index`; undefined: no such broker. */
  drain?: (index: number, rate: number | undefined) => BrokerView | undefined | Promise<BrokerView | undefined>
}

export type UpstreamsView = ({ kind: 'pool' } & PoolView) | { kind: 'embedded' | 'mqtt', description: string }

function sameToken (given: string, token: string): boolean {
  const a = Buffer.from(given)
  const b = Buffer.from(token)
  return a.length === b.length && timingSafeEqual(a, b)
}

// RFC 9110 §11.1: the scheme is case-insensitive; §11.6.2: `credentials = auth-scheme [ 1*SP
// token68 ]`, so any number of spaces (node:http already trims the ends of the value).
const BEARER = /^bearer +([^ ].*)$/i

/** The bearer token, or the console's cookie holding it: 'bearer', 'cookie' or undefined. */
function authorized (req: http.IncomingMessage, token: string | undefined): 'bearer' | 'cookie' | 'open' | undefined {
  const bearer = BEARER.exec(req.headers.authorization ?? '')?.[1]
  if (token === undefined) return bearer === undefined ? 'open' : 'bearer'
  if (bearer !== undefined) return sameToken(bearer, token) ? 'bearer' : undefined
  const cookie = cookieToken(req)
  return cookie !== undefined && sameToken(cookie, token) ? 'cookie' : undefined
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
  viewers: Viewers
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
  {
    // Liveness: always 200 while the process answers; Redis is shown, not judged (/readyz judges).
    path: '/healthz',
    open: true,
    methods: {
      GET: async ({ res, target }) => {
        const redis = await target.redis?.()
        send(res, 200, redis === undefined ? { status: 'ok' } : { status: 'ok', redis })
      }
    }
  },
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
      GET: async ({ res, url, target }) => {
        const clientId = url.searchParams.get('clientId')
        send(res, 200, (await target.connections()).filter((c) => clientId === null || c.clientId === clientId))
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
  {
    // The configuration file read again and applied: 200 with what changed (and what was refused
    // of it), 422 when it does not validate (nothing changed).
    path: '/reload',
    methods: {
      POST: async ({ res, target }) => {
        if (target.reload === undefined) return send(res, 409, { error: 'this proxy was started without a configuration to read again' })
        const report = await target.reload()
        send(res, report.applied ? 200 : 422, report)
      }
    }
  },
  { path: '/diagnostics', methods: { GET: async ({ res, target }) => { send(res, 200, await target.diagnostics()) } } },
  { path: '/overview', methods: { GET: async ({ res, target }) => { send(res, 200, await target.overview()) } } },
  { path: '/events', methods: { GET: ({ req, res, feed, viewers }) => { if (req.method === 'HEAD') headOfEvents(res); else if (roomFor(viewers, 'events')) feed.open(res) } } },
  { path: '/upstreams', methods: { GET: async ({ res, target }) => { send(res, 200, await target.upstreams?.() ?? { kind: 'unknown' }) } } },
  {
    // Drain a broker of a pool for maintenance: POST starts it ({ ratePerSecond }, default 10),
    // DELETE ends it. Per instance: a fleet drains a broker by calling every instance.
    path: /^\/upstreams\/(\d+)\/drain$/,
    methods: {
      POST: async ({ req, res, params: [n = ''], spec, target }) => {
        const body = await readJson(req, spec.maxBodyBytes) as { ratePerSecond?: unknown } | undefined
        const rate = body?.ratePerSecond ?? DRAIN_RATE
        if (typeof rate !== 'number' || !Number.isInteger(rate) || rate < 1 || rate > 100_000) {
          return send(res, 400, { error: `ratePerSecond: expected an integer from 1 to 100000, got ${JSON.stringify(rate)}` })
        }
        await drained(res, target, Number(n), rate)
      },
      DELETE: async ({ res, params: [n = ''], target }) => { await drained(res, target, Number(n), undefined) }
    }
  },
  { path: /^\/clients\/(.+)$/, methods: { GET: async ({ res, params: [clientId = ''], target }) => { send(res, 200, await target.client(clientId)) } } }
]

function findRoute (path: string): { route: Route, params: string[] } | undefined {
  for (const route of ROUTES) {
    if (route.path === path) return { route, params: [] }
    const match = typeof route.path === 'string' ? null : route.path.exec(path)
    if (match !== null) return { route, params: match.slice(1).map((p) => decodePart(p, 'path')) }
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

/** True when a stream can take another viewer; else a 503 (counted) by the caller's catch. */
function roomFor (viewers: Viewers, stream: string): true {
  const full = viewers.full(stream)
  if (full !== undefined) throw new RequestError(503, `too many viewers: ${full}`, 'viewers')
  return true
}

/** What one admin server holds besides node's: shared by every request it serves. */
interface State { spec: AdminSpec, holder: { spec: AdminSpec }, target: AdminTarget, feed: Feed, viewers: Viewers, sockets: AdminSockets, refusals: RefusalLog, log: Logger }

export class AdminServer {
  private constructor (private readonly server: http.Server, private readonly state: State, readonly host: string, readonly port: number) {}

  static async start (spec: AdminSpec, target: AdminTarget, log: Logger): Promise<AdminServer> {
    const refusals = new RefusalLog(log)
    // The bounds are read at each use, from the spec in force (a reload may replace it: respec).
    const holder = { spec }
    const bounds: AdminSpec = {
      get host () { return holder.spec.host },
      get port () { return holder.spec.port },
      get token () { return holder.spec.token },
      get maxConnections () { return holder.spec.maxConnections },
      get reserveDescriptors () { return holder.spec.reserveDescriptors },
      get timeoutMs () { return holder.spec.timeoutMs },
      get maxBodyBytes () { return holder.spec.maxBodyBytes },
      get maxViewers () { return holder.spec.maxViewers },
      get maxViewersPerStream () { return holder.spec.maxViewersPerStream },
      get viewerBufferBytes () { return holder.spec.viewerBufferBytes }
    }
    const viewers = new Viewers(bounds)
    const sockets = new AdminSockets(bounds, refusals, target.openConnections ?? (() => 0))
    const state: State = { spec: bounds, holder, target, feed: new Feed(target.overview, viewers), viewers, sockets, refusals, log }
    adminMetrics(target.metrics.registry, { refusals, viewers, sockets })
    const server = http.createServer({
      // Node checks these every connectionsCheckingInterval (30 s by default): too coarse.
      headersTimeout: spec.timeoutMs,
      requestTimeout: 2 * spec.timeoutMs,
      keepAliveTimeout: spec.timeoutMs,
      connectionsCheckingInterval: Math.min(1000, spec.timeoutMs / 2)
    }, (req, res) => { onRequest(req, res, state) })
    // A response that stops moving (a reader gone quiet) is cut; live streams write a heartbeat.
    server.timeout = 60_000
    server.on('connection', (socket: net.Socket) => { sockets.admit(socket) })
    server.on('clientError', (err: NodeJS.ErrnoException, socket) => { clientError(err, socket, refusals) })
    sockets.checkLimit(log)
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error): void => { reject(listenError(err, 'admin', spec.host, spec.port, 'set admin: HOST:PORT, --admin, or MQTT_GUARD_ADMIN; off turns it off')) }
      server.once('error', fail)
      server.listen({ host: spec.host, port: spec.port }, () => { server.removeListener('error', fail); resolve() })
    })
    const address = server.address() as { address: string, port: number }
    return new AdminServer(server, state, address.address, address.port)
  }

  /**
   * A reload's admin settings on the same address: the token and every bound apply from the
   * next request (and socket, and viewer). False when the address differs: that needs a new
   * server.
   */
  respec (spec: AdminSpec): boolean {
    const now = this.state.holder.spec
    if (spec.host !== now.host || spec.port !== now.port) return false
    this.state.holder.spec = spec
    this.server.headersTimeout = spec.timeoutMs
    this.server.requestTimeout = 2 * spec.timeoutMs
    this.server.keepAliveTimeout = spec.timeoutMs
    return true
  }

  async close (): Promise<void> {
    this.state.feed.close()
    this.state.viewers.close()
    this.state.refusals.close()
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => { this.server.close(() => { resolve() }) })
  }
}

function onRequest (req: http.IncomingMessage, res: http.ServerResponse, state: State): void {
  state.sockets.busy(req.socket, res)
  handle(req, res, state).catch((err: unknown) => {
    if (err instanceof RequestError) {
      // The client's mistake: one line back, no stack in the log.
      state.refusals.refuse(err.reason)
      state.log.debug({ url: req.url, status: err.status, reason: err.message }, 'admin request refused')
      if (!res.headersSent) send(res, err.status, { error: err.message })
      else res.destroy()
      return
    }
    state.log.error({ err, url: req.url }, 'admin request failed')
    if (!res.headersSent) send(res, 500, { error: 'internal error' })
  })
}

/** Bad HTTP or a request too slow to arrive: a short answer when the socket can take one. */
function clientError (err: NodeJS.ErrnoException, socket: Duplex, refusals: RefusalLog): void {
  const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
  refusals.refuse(timeout ? 'timeout' : 'bad_request')
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy()
    return
  }
  const [status, text] = timeout ? ['408 Request Timeout', 'request not received in time'] : ['400 Bad Request', 'malformed HTTP request']
  const body = JSON.stringify({ error: text }) + '\n'
  socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`)
}

async function handle (req: http.IncomingMessage, res: http.ServerResponse, state: State): Promise<void> {
  const { spec, target } = state
  const url = requestUrl(req)
  const found = findRoute(url.pathname)
  const call: Call = { req, res, url, params: found?.params ?? [], spec, target, feed: state.feed, viewers: state.viewers }
  if (found?.route.open === true) {
    checkSameOrigin(req, false)
    return await serve(found.route, call)
  }
  // The console's files hold no data: the page loads, then asks for the token if it needs one.
  if ((req.method === 'GET' || req.method === 'HEAD') && await serveStatic(url.pathname, res)) return
  const by = authorized(req, spec.token)
  if (by === undefined) {
    res.setHeader('www-authenticate', 'Bearer')
    return send(res, 401, { error: 'bearer token required' })
  }
  checkSameOrigin(req, by === 'bearer')
  if (found !== undefined) return await serve(found.route, call)
  if (target.plugins !== undefined && await askPlugins(call, target.plugins)) return
  send(res, 404, { error: 'not found' })
}

/** Clients a second a drain moves when the request does not say. */
const DRAIN_RATE = 10

async function drained (res: http.ServerResponse, target: AdminTarget, index: number, rate: number | undefined): Promise<void> {
  if (target.drain === undefined || (await target.upstreams?.())?.kind !== 'pool') return send(res, 409, { error: 'the proxy has one broker: upstream.brokers lists several to drain one' })
  const view = await target.drain(index, rate)
  if (view === undefined) return send(res, 404, { error: `no broker ${index}: GET /upstreams lists them from 0` })
  send(res, 200, view)
}

/** Paths the core does not know, for the plugins (HEAD asked as GET); false when none answered. */
async function askPlugins ({ req, res, url, spec, viewers }: Call, plugins: NonNullable<AdminTarget['plugins']>): Promise<boolean> {
  const body = req.method === 'POST' || req.method === 'PUT' ? await readJson(req, spec.maxBodyBytes) : undefined
  const method = req.method === 'HEAD' ? 'GET' : req.method ?? 'GET'
  const answer = await plugins({ method, path: url.pathname, query: url.searchParams, body })
  if (answer === undefined) return false
  if (answer.events === undefined) send(res, answer.status, answer.body)
  else if (req.method === 'HEAD') headOfEvents(res)
  else stream(res, url.pathname, viewers, answer.events)
  return true
}

/** A plugin's live feed as Server-Sent Events, until the client goes away; 503 when full. */
function stream (res: http.ServerResponse, path: string, viewers: Viewers, events: NonNullable<AdminResponse['events']>): void {
  roomFor(viewers, path)
  const viewer = viewers.open(path, path.startsWith('/traces/') ? 'trace' : 'plugin', res)
  const stop = events((event, data) => { viewer.send(event, data) })
  res.once('close', stop)
}

/** POST /login {token}: the console's cookie, so the browser's own requests carry the token. */
async function login (req: http.IncomingMessage, res: http.ServerResponse, spec: AdminSpec): Promise<void> {
  const body = await readJson(req, 4096) // before any token check: small
  const given = (body as { token?: unknown } | undefined)?.token
  if (spec.token === undefined) return send(res, 200, { ok: true, tokenRequired: false })
  if (typeof given !== 'string' || !sameToken(given, spec.token)) return send(res, 401, { error: 'wrong token' })
  res.setHeader('set-cookie', `${TOKEN_COOKIE}=${encodeURIComponent(given)}; HttpOnly; SameSite=Strict; Path=/`)
  return send(res, 200, { ok: true, tokenRequired: true })
}
