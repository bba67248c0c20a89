// An HTTP auth/authz hook service for tests: a node:http server on 127.0.0.1:0 that records
// every request (headers and JSON body) and answers by a script the test sets: EMQX-style
// allow / deny / ignore / is_superuser, 204, 500, an HTML page, garbage, or a 5 s stall.

import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export type Reply =
  | 'allow' | 'deny' | 'ignore' | 'superuser' | 'no-content' | 'server-error' | 'forbidden' | 'html' | 'garbage' | 'stall'

export interface HookRequest {
  readonly path: string
  readonly headers: IncomingHttpHeaders
  readonly body: Record<string, unknown>
  readonly raw: string
}

export interface HookServer {
  readonly url: string
  readonly requests: HookRequest[]
  /** How each request is answered; the default allows everything. */
  script: (req: HookRequest) => Reply
  /** Requests answered so far, and in flight now. */
  readonly inFlight: number
  /** Resolves when `n` requests have arrived. */
  waitForRequests: (n: number) => Promise<void>
  stop: () => Promise<void>
}

const STALL_MS = 5000

function answer (res: ServerResponse, reply: Reply): void {
  const json = (status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
  }
  switch (reply) {
    case 'allow': json(200, { result: 'allow', is_superuser: false }); return
    case 'deny': json(200, { result: 'deny' }); return
    case 'ignore': json(200, { result: 'ignore' }); return
    case 'superuser': json(200, { result: 'allow', is_superuser: true }); return
    case 'no-content': res.writeHead(204).end(); return
    case 'server-error': json(500, { error: 'boom' }); return
    case 'forbidden': json(403, { result: 'allow' }); return
    case 'html': res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>502 Bad Gateway</body></html>'); return
    case 'garbage': res.writeHead(200, { 'content-type': 'application/json' }).end('{"result": allow'); return
    case 'stall': return
  }
}

export async function startHookServer (): Promise<HookServer> {
  const requests: HookRequest[] = []
  const waiters: Array<{ n: number, resolve: () => void }> = []
  const timers = new Set<NodeJS.Timeout>()
  let inFlight = 0
  const hook: HookServer = {
    url: '',
    requests,
    script: () => 'allow',
    get inFlight () { return inFlight },
    waitForRequests: async (n) => {
      if (requests.length >= n) return
      await new Promise<void>((resolve) => { waiters.push({ n, resolve }) })
    },
    stop: async () => {
      for (const timer of timers) clearTimeout(timer)
      server.closeAllConnections()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8')
      let body: Record<string, unknown> = {}
      try { body = JSON.parse(raw) as Record<string, unknown> } catch { /* recorded raw */ }
      const request = { path: req.url ?? '', headers: req.headers, body, raw }
      requests.push(request)
      for (const w of waiters.filter((w) => requests.length >= w.n)) { waiters.splice(waiters.indexOf(w), 1); w.resolve() }
      const reply = hook.script(request)
      inFlight++
      res.on('close', () => { inFlight-- })
      if (reply !== 'stall') { answer(res, reply); return }
      // A stalled service answers only after STALL_MS, long after any test's timeoutMs.
      const timer = setTimeout(() => { timers.delete(timer); answer(res, 'allow') }, STALL_MS)
      timers.add(timer)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  Object.assign(hook, { url: `http://127.0.0.1:${port}/mqtt/auth` })
  return hook
}
