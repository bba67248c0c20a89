import { readFileSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startServer } from './processes.js'
import type { ExitInfo } from './processes.js'
import { servesAs, type RedisTarget } from './redis-admin.js'

/**
 * Start a private redis-server for one test: own temp dir, free port on
 * 127.0.0.1, nothing saved to disk. Never touches the machine's :6379.
 * With `tls` it serves TLS only (port 0, tls-port on the free port).
 */

const REDIS_SERVER = process.env['REDIS_SERVER_BIN'] ?? 'redis-server'

export interface RedisOptions {
  /** Extra command-line config, e.g. ['--maxmemory', '10mb']. */
  extraArgs?: string[]
  /** Deadline for one start to become ready. Default 15 s. */
  startTimeoutMs?: number
  tls?: RedisTlsFiles
}

/** PEM files (test/helpers/certs.ts) for a Redis on TLS only. */
export interface RedisTlsFiles {
  cert: string
  key: string
  /** tls-ca-cert-file: the CA clients' certificates must be signed by (and replication's). */
  ca: string
  /** tls-auth-clients yes: every client must show a certificate. Default false. */
  authClients?: boolean
  /** The helper's own probes' certificate, needed with authClients. */
  client?: { cert: string; key: string }
}

export interface Redis {
  readonly port: number
  /** PID of the current process (changes after restart()). */
  readonly pid: number
  /** redis://127.0.0.1:PORT, rediss:// with TLS */
  readonly url: string
  /** For redisCall/roleOf (redis-admin.ts): the port, and TLS when the server has it. */
  readonly target: RedisTarget
  readonly dir: string
  readonly logFile: string
  /** SIGTERM, SIGKILL after a timeout, wait for exit, remove the temp dir. */
  stop(): Promise<void>
  /** Signal the current process by PID (fault injection: 'SIGKILL', 'SIGSTOP', ...). */
  kill(signal?: NodeJS.Signals): void
  /** Resolves when the current process exits. */
  exited(): Promise<ExitInfo>
  /** Stop if running, then start a new, empty server on the SAME port. */
  restart(): Promise<void>
  log(): string
}

/**
 * Send raw RESP inline commands and collect the reply text until `done`
 * says it is complete (or the connection fails / times out -> undefined).
 */
export function rawRedis(
  port: number,
  commands: string,
  done: (reply: string) => boolean,
  timeoutMs = 1000
): Promise<string | undefined> {
  return new Promise(resolve => {
    let reply = ''
    const sock = connect({ port, host: '127.0.0.1' })
    const finish = (v: string | undefined): void => {
      sock.destroy()
      resolve(v)
    }
    sock.setTimeout(timeoutMs, () => finish(undefined))
    sock.once('error', () => finish(undefined))
    sock.once('close', () => finish(done(reply) ? reply : undefined))
    sock.once('connect', () => sock.write(commands))
    sock.on('data', chunk => {
      reply += chunk.toString('utf8')
      if (done(reply)) finish(reply)
    })
  })
}

/** PING a Redis on 127.0.0.1:port; true iff it answered +PONG. */
export async function redisPing(port: number, timeoutMs = 1000): Promise<boolean> {
  const reply = await rawRedis(port, 'PING\r\n', r => r.includes('\r\n'), timeoutMs)
  return reply?.startsWith('+PONG\r\n') ?? false
}

/**
 * Readiness: +PONG, and INFO's process_id is our child's PID, so a Redis
 * that won a race for the port is not mistaken for ours.
 */
async function readyAndOurs(port: number, pid: number): Promise<boolean> {
  const reply = await rawRedis(port, 'PING\r\nINFO server\r\n', r => /process_id:\d+\r\n/.test(r))
  if (reply === undefined || !reply.startsWith('+PONG\r\n')) return false
  return reply.match(/process_id:(\d+)\r\n/)?.[1] === String(pid)
}

/** What redis-server takes for a TLS-only server on `port` (replication over TLS too). */
function tlsArgs(port: number, tls: RedisTlsFiles): string[] {
  return [
    '--port', '0', '--tls-port', String(port), '--tls-replication', 'yes',
    '--tls-cert-file', tls.cert, '--tls-key-file', tls.key, '--tls-ca-cert-file', tls.ca,
    '--tls-auth-clients', tls.authClients === true ? 'yes' : 'no'
  ]
}

/** How the helper's probes connect to a server with these files. */
export function tlsTarget(port: number, tls: RedisTlsFiles | undefined): RedisTarget {
  if (tls === undefined) return { port }
  const pem = (file: string): Buffer => readFileSync(file)
  return { port, tls: { ca: pem(tls.ca), ...(tls.client === undefined ? {} : { cert: pem(tls.client.cert), key: pem(tls.client.key) }) } }
}

export async function startRedis(opts: RedisOptions = {}): Promise<Redis> {
  const dir = await mkdtemp(join(tmpdir(), 'mqtt-guard-redis-'))
  const logFile = join(dir, 'redis.log')
  const server = await startServer({
    name: 'redis-server',
    command: REDIS_SERVER,
    dir,
    logFile,
    startTimeoutMs: opts.startTimeoutMs ?? 15_000,
    argv: port => [
      ...(opts.tls === undefined ? ['--port', String(port)] : tlsArgs(port, opts.tls)),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', 'no',
      '--dir', dir,
      // '' = log to stdout, which is a descriptor on redis.log
      '--logfile', '',
      '--daemonize', 'no',
      ...(opts.extraArgs ?? [])
    ],
    probe: (port, child) => opts.tls === undefined ? readyAndOurs(port, child.pid) : servesAs(tlsTarget(port, opts.tls), child.pid),
    url: port => `${opts.tls === undefined ? 'redis' : 'rediss'}://127.0.0.1:${port}`
  })

  return {
    port: server.port,
    get pid() {
      return server.pid
    },
    url: server.url,
    target: tlsTarget(server.port, opts.tls),
    dir,
    logFile,
    stop: () => server.stop(),
    kill: signal => server.kill(signal),
    exited: () => server.exited(),
    restart: () => server.restart(),
    log: () => server.log()
  }
}
