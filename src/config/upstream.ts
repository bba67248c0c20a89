// The broker side: the embedded aedes broker, one broker URL (as before issue 21), or several
// brokers with a balance, health checks and a failover mode. This file only says what was
// given and refuses what cannot work, naming the key and the accepted forms; the pool itself
// is src/upstream/pool.ts.

import { z } from 'zod'
import { configError } from '../errors.js'
import { inputFile } from './paths.js'
import { bool, dropUndefined, expected, got, int, oneOf, strictOptions, text } from './zod.js'

export interface TlsFiles { readonly ca?: string, readonly cert?: string, readonly key?: string, readonly rejectUnauthorized: boolean, readonly servername?: string }

/** One broker: where it is, how to reach it. */
export interface BrokerSpec {
  readonly url: string
  readonly host: string
  readonly port: number
  readonly tls: TlsFiles | undefined
  readonly proxyProtocol: 1 | 2 | undefined
}

/** A broker of a pool: its share of the clients, and what `redirect` tells clients to use. */
export interface PoolBroker extends BrokerSpec {
  readonly weight: number
  readonly serverReference: string | undefined
}

export const BALANCES = ['client-id', 'round-robin', 'least-connections', 'first'] as const
export const FAILOVERS = ['reconnect', 'rehome', 'redirect'] as const
export type Balance = typeof BALANCES[number]
export type Failover = typeof FAILOVERS[number]

export interface HealthCheck {
  readonly intervalMs: number
  readonly timeoutMs: number
  /** Consecutive failed checks (active or passive) that mark a broker down. */
  readonly failures: number
  /** Consecutive passed active checks that mark a down broker up again. */
  readonly recoveries: number
}

export const HEALTH_DEFAULTS: HealthCheck = { intervalMs: 2000, timeoutMs: 1000, failures: 2, recoveries: 2 }

export type UpstreamSpec =
  | { readonly kind: 'embedded' }
  | ({ readonly kind: 'mqtt' } & BrokerSpec)
  | { readonly kind: 'pool', readonly brokers: readonly PoolBroker[], readonly balance: Balance, readonly healthCheck: HealthCheck, readonly failover: Failover }

const URL_FORMS = 'mqtt://HOST:PORT or mqtts://HOST:PORT'
const FORMS = 'embedded, mqtt://HOST:PORT, mqtts://HOST:PORT, { url, ca, cert, key, rejectUnauthorized, servername, proxyProtocol } or { brokers: [...], balance, healthCheck, failover }'

const tlsShape = {
  ca: text('a file path').optional(),
  cert: text('a file path').optional(),
  key: text('a file path').optional(),
  rejectUnauthorized: bool().optional(),
  servername: text('a host name').optional()
}
const proxyProtocol = z.union([z.literal(1), z.literal(2)], expected('1 or 2')).optional()

const singleObject = strictOptions({ url: text('a URL'), proxyProtocol, ...tlsShape })

const brokerEntry = z.union([
  z.string(expected(URL_FORMS)),
  strictOptions({
    url: text(URL_FORMS),
    tls: strictOptions(tlsShape).optional().describe('TLS files for an mqtts:// broker (relative to this file)'),
    weight: int(1, 1000).optional().describe('Share of the clients (default 1)'),
    proxyProtocol: proxyProtocol.describe('Send a PROXY protocol header (1 or 2) to this broker'),
    serverReference: text('HOST:PORT or a URL clients can reach').optional().describe('failover: redirect tells MQTT 5 clients to use this address instead')
  })
], expected(`${URL_FORMS} or { url, tls, weight, proxyProtocol, serverReference }`))

const poolObject = strictOptions({
  brokers: z.array(brokerEntry, expected('a list of brokers')).describe('The brokers: URLs or { url, tls, weight, proxyProtocol, serverReference }'),
  balance: oneOf(BALANCES).optional().describe('client-id (default): rendezvous hash of the client ID | round-robin | least-connections | first (active/passive)'),
  healthCheck: strictOptions({
    intervalMs: int(100).optional(),
    timeoutMs: int(50).optional(),
    failures: int(1).optional(),
    recoveries: int(1).optional()
  }).optional().describe('Active MQTT CONNECT/CONNACK checks (default { intervalMs: 2000, timeoutMs: 1000, failures: 2, recoveries: 2 })'),
  failover: oneOf(FAILOVERS).optional().describe('What a client whose broker fails gets: reconnect (default) | rehome | redirect')
})

export const upstreamSchema = z.union([z.string(), poolObject, singleObject], expected(FORMS))
  .optional().describe('The broker: embedded, mqtt://HOST:PORT, mqtts://HOST:PORT, or several brokers { brokers, balance, healthCheck, failover }')

type RawUpstream = z.infer<typeof upstreamSchema>
type RawTls = { [K in keyof typeof tlsShape]?: z.infer<typeof tlsShape[K]> }

/** One broker URL and its TLS files, checked; `key` names it in errors. */
function broker (value: string, rawTls: RawTls | undefined, proxy: 1 | 2 | undefined, key: string, configDir: string): BrokerSpec {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw configError(key, `expected ${key.endsWith(']') ? '' : '"embedded", '}${URL_FORMS}, got ${got(value)}`)
  }
  if (url.protocol !== 'mqtt:' && url.protocol !== 'mqtts:') throw configError(key, `unsupported scheme "${url.protocol}": expected mqtt: or mqtts:`)
  const secure = url.protocol === 'mqtts:'
  const host = url.hostname.replace(/^\[|\]$/g, '')
  if (host === '') throw configError(key, `no host in "${value}"`)
  const tlsKey = key.endsWith(']') ? `${key}.tls` : key
  if (!secure && rawTls !== undefined && Object.values(rawTls).some((v) => v !== undefined) && key.endsWith(']')) {
    throw configError(`${tlsKey}`, `TLS files given for ${value}, which is not mqtts://`)
  }
  const file = (f: string | undefined, name: string): string | undefined => f === undefined ? undefined : inputFile(configDir, f, `${tlsKey}.${name}`)
  const tls = secure
    ? { ca: file(rawTls?.ca, 'ca'), cert: file(rawTls?.cert, 'cert'), key: file(rawTls?.key, 'key'), rejectUnauthorized: rawTls?.rejectUnauthorized ?? true, servername: rawTls?.servername }
    : undefined
  return { url: value, host, port: url.port === '' ? (secure ? 8883 : 1883) : Number(url.port), tls, proxyProtocol: proxy }
}

function pool (raw: z.infer<typeof poolObject>, configDir: string): UpstreamSpec {
  if (raw.brokers.length === 0) throw configError('upstream.brokers', `names no broker: give at least one ${URL_FORMS}`)
  const seen = new Map<string, string>()
  const brokers = raw.brokers.map((entry, i): PoolBroker => {
    const key = `upstream.brokers[${i}]`
    const e = typeof entry === 'string' ? { url: entry } : entry
    if (e.url === 'embedded') throw configError(key, `the embedded broker cannot be one of several; give ${URL_FORMS}`)
    const spec = broker(e.url, 'tls' in e ? e.tls : undefined, 'proxyProtocol' in e ? e.proxyProtocol : undefined, key, configDir)
    const id = `${spec.host.toLowerCase()}:${spec.port}`
    const twin = seen.get(id)
    if (twin !== undefined) throw configError(key, `${e.url} is the same broker as ${twin} (${id}); list each broker once, with a weight for a larger share`)
    seen.set(id, key)
    return { ...spec, weight: 'weight' in e ? e.weight ?? 1 : 1, serverReference: 'serverReference' in e ? e.serverReference : undefined }
  })
  const failover = raw.failover ?? 'reconnect'
  if (failover === 'redirect' && brokers.every((b) => b.serverReference === undefined)) {
    throw configError('upstream.failover', 'redirect sends MQTT 5 clients to another broker\'s serverReference, and no broker has one: give upstream.brokers[i].serverReference (an address clients can reach), or use reconnect or rehome')
  }
  const h = raw.healthCheck ?? {}
  const healthCheck: HealthCheck = { ...HEALTH_DEFAULTS, ...dropUndefined(h) }
  if (healthCheck.timeoutMs > healthCheck.intervalMs) throw configError('upstream.healthCheck.timeoutMs', `${healthCheck.timeoutMs} is longer than intervalMs ${healthCheck.intervalMs}: a check must end before the next starts`)
  return { kind: 'pool', brokers, balance: raw.balance ?? 'client-id', healthCheck, failover }
}

/**
 * The `upstream` setting. A string from `--upstream` / `MQTT_GUARD_UPSTREAM` (or the file) is
 * `embedded`, one URL, or a comma-separated list of URLs (a pool with the defaults).
 */
export function parseUpstream (raw: RawUpstream, configDir: string): UpstreamSpec {
  if (raw === undefined || raw === 'embedded') return { kind: 'embedded' }
  if (typeof raw === 'string') {
    const urls = raw.split(',').map((u) => u.trim())
    if (urls.length > 1) {
      if (urls.some((u) => u === '')) throw configError('upstream', `an empty entry in the list ${got(raw)}; expected ${URL_FORMS}, comma-separated`)
      return pool({ brokers: urls }, configDir)
    }
    return { kind: 'mqtt', ...broker(raw.trim(), undefined, undefined, 'upstream', configDir) }
  }
  if ('brokers' in raw) return pool(raw, configDir)
  if (raw.url === 'embedded') return { kind: 'embedded' }
  return { kind: 'mqtt', ...broker(raw.url, raw, raw.proxyProtocol, 'upstream', configDir) }
}
