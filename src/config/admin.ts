// The admin endpoint's settings: where it listens, its token, and the bounds that keep it from
// hurting the MQTT side (connections, descriptors, timeouts, bodies, live viewers). Every bound
// has a default an operator need not think about; config.ts calls parseAdmin.

import { z } from 'zod'
import { configError } from '../errors.js'
import { parseHostPort } from './listen.js'
import { expected, int, strictOptions, text } from './zod.js'

/** The admin HTTP endpoint and its bounds; undefined in GuardConfig when turned off. */
export interface AdminSpec {
  readonly host: string
  readonly port: number
  readonly token: string | undefined
  /** Open admin sockets at most; an idle or unfinished one is closed to make room. */
  readonly maxConnections: number
  /** Descriptors the admin endpoint always leaves free for the MQTT listeners. */
  readonly reserveDescriptors: number
  /** Headers and whole request within this; also the keep-alive idle time. */
  readonly timeoutMs: number
  /** Request bodies, after the token check (the console posts a trace's lines for pcapng). */
  readonly maxBodyBytes: number
  /** Live streams (/events, /traces/{id}/live) open at once, in all and per stream. */
  readonly maxViewers: number
  readonly maxViewersPerStream: number
  /** Bytes a viewer may be behind before its events are dropped (and it is told how many). */
  readonly viewerBufferBytes: number
}

export const ADMIN_DEFAULTS = {
  listen: '127.0.0.1:9884',
  maxConnections: 64,
  reserveDescriptors: 256,
  timeoutMs: 5000,
  maxBodyBytes: 16 * 1024 * 1024,
  maxViewers: 16,
  maxViewersPerStream: 4,
  viewerBufferBytes: 256 * 1024
} as const

const bounds = {
  maxConnections: int(4).optional(),
  reserveDescriptors: int(0).optional(),
  timeoutMs: int(500, 120_000).optional(),
  maxBodyBytes: int(1024).optional(),
  maxViewers: int(1).optional(),
  maxViewersPerStream: int(1).optional(),
  viewerBufferBytes: int(4096).optional()
}

export const adminSchema = z.union([
  z.literal(false),
  z.string(),
  strictOptions({ listen: text('HOST:PORT').optional(), token: z.string(expected('a string of at least 16 characters')).min(16).optional(), ...bounds })
], expected('HOST:PORT, false, or { listen, token, maxConnections, ... }'))
  .optional().describe('The admin HTTP endpoint (default 127.0.0.1:9884); a token is required off loopback')

export const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/

export function parseAdmin (raw: z.infer<typeof adminSchema>, override: string | undefined, token: string | undefined): AdminSpec | undefined {
  if (override === 'false' || override === 'off' || (override === undefined && raw === false)) return undefined
  const file = typeof raw === 'object' ? raw : {}
  const listen = override ?? (typeof raw === 'string' ? raw : file.listen) ?? ADMIN_DEFAULTS.listen
  const { host, port } = parseHostPort(listen, 'admin')
  const given = Object.fromEntries(Object.entries(file).filter(([k, v]) => k in bounds && v !== undefined)) as Partial<AdminSpec>
  const { listen: _listen, ...defaults } = ADMIN_DEFAULTS
  const spec: AdminSpec = { host, port, token: token ?? file.token, ...defaults, ...given }
  if (spec.token !== undefined && spec.token.length < 16) throw configError('admin.token', 'must be at least 16 characters')
  // Metrics and kicks are not for everyone who can reach the port.
  if (spec.token === undefined && !LOOPBACK.test(host)) {
    throw configError('admin.token', `required when admin listens on ${host}, not loopback (or set MQTT_GUARD_ADMIN_TOKEN)`)
  }
  // Viewers hold their connection for as long as they watch: the probes must still get one.
  if (spec.maxViewers >= spec.maxConnections) {
    throw configError('admin.maxViewers', `expected an integer below admin.maxConnections (${spec.maxConnections}), got ${spec.maxViewers}`)
  }
  return spec
}
