// The shared Redis: one of three forms, as the operator runs it. A URL (standalone, `rediss://`
// for TLS), a Sentinel set and the master's name (the Sentinels with credentials of their own if
// they have requirepass), or a Cluster's seed nodes; each optionally with credentials, TLS files
// and the key prefix. ioredis does the topology (src/redis/client.ts); this file only says which
// form was given, and refuses a mix, a form that names no node, or a key of another form.

import { z } from 'zod'
import { configError } from '../errors.js'
import { inputFile } from './paths.js'
import { bool, dropUndefined, expected, got, strictOptions, text } from './zod.js'

export type RedisTopology = 'standalone' | 'sentinel' | 'cluster'

export interface RedisEndpoint { readonly host: string, readonly port: number }

/** TLS towards Redis (and towards the Sentinels): absolute file paths. Given, it means TLS, even with a redis:// URL. */
export interface RedisTls { readonly ca?: string, readonly cert?: string, readonly key?: string, readonly rejectUnauthorized: boolean, readonly servername?: string }

interface RedisCommon {
  /** Every key and channel of the proxy starts with it (default `mqtt-guard:`). */
  readonly keyPrefix: string
  readonly username?: string
  /** As written in the file; `passwordFile` (absolute) is read when the client is made. */
  readonly password?: string
  readonly passwordFile?: string
  readonly tls?: RedisTls
}

/** The Sentinels' own credentials (their requirepass or ACL user), not the data nodes'. */
export interface SentinelAuth {
  readonly sentinelUsername?: string
  readonly sentinelPassword?: string
  /** Absolute; read when the client is made, like passwordFile. */
  readonly sentinelPasswordFile?: string
}

export type RedisSpec = RedisCommon & (
  | { readonly topology: 'standalone', readonly url: string }
  | ({ readonly topology: 'sentinel', readonly sentinels: readonly RedisEndpoint[], readonly name: string } & SentinelAuth)
  | { readonly topology: 'cluster', readonly nodes: readonly RedisEndpoint[] }
)

export const DEFAULT_KEY_PREFIX = 'mqtt-guard:'

/** What every refusal of a form lists. */
export const REDIS_FORMS = 'redis://HOST:PORT, { url }, { sentinels: [HOST:PORT, ...], name } or { cluster: [HOST:PORT, ...] }'

const FORM_KEYS = ['url', 'sentinels', 'name', 'cluster'] as const
/** Keys only the Sentinel form takes, besides name. */
const SENTINEL_AUTH_KEYS = ['sentinelUsername', 'sentinelPassword', 'sentinelPasswordFile'] as const
const without = (keys: readonly string[]): Array<{ required: string[] }> => keys.map((k) => ({ required: [k] }))

// minItems for the JSON Schema only: the proxy's own refusal of an empty list lists the forms.
const endpoints = (what: string): z.ZodArray<z.ZodString> => z.array(z.string(expected('HOST:PORT')), expected(`a list of ${what} (HOST:PORT)`)).meta({ minItems: 1 })

const redisObject = strictOptions({
  url: text('redis://HOST:PORT or rediss://HOST:PORT').optional().describe('Standalone Redis (rediss:// for TLS)'),
  sentinels: endpoints('Sentinels').optional().describe('Sentinel form: the Sentinels (HOST:PORT), with name'),
  name: text('the Sentinel master name').optional().describe('Sentinel form: the master name the Sentinels monitor'),
  cluster: endpoints('Cluster seed nodes').optional().describe('Cluster form: seed nodes (HOST:PORT); the others are discovered'),
  username: text('a user name').optional().describe('Redis ACL user'),
  password: z.string(expected('a string')).optional(),
  passwordFile: text('a file path').optional().describe('A file holding the password (relative to this file)'),
  sentinelUsername: text('a user name').optional().describe('Sentinel form: the Sentinels\' ACL user'),
  sentinelPassword: z.string(expected('a string')).optional().describe('Sentinel form: the Sentinels\' password (their requirepass)'),
  sentinelPasswordFile: text('a file path').optional().describe('Sentinel form: a file holding the Sentinels\' password (relative to this file)'),
  tls: strictOptions({
    ca: text('a file path').optional(),
    cert: text('a file path').optional(),
    key: text('a file path').optional(),
    rejectUnauthorized: bool().optional(),
    servername: text('a host name').optional()
  }).optional().describe('TLS to Redis (and to the Sentinels) when given, also with a redis:// URL; file paths relative to this file'),
  keyPrefix: z.string(expected('a string')).optional().describe('Prefix of every key and channel (default mqtt-guard:)')
}).meta({
  // One form per object: the JSON Schema says so too (the proxy's own words are parseRedis').
  anyOf: [
    { required: ['url'], not: { anyOf: without(['sentinels', 'name', 'cluster', ...SENTINEL_AUTH_KEYS]) } },
    { required: ['sentinels', 'name'], not: { anyOf: without(['url', 'cluster']) } },
    { required: ['cluster'], not: { anyOf: without(['url', 'sentinels', 'name', ...SENTINEL_AUTH_KEYS]) } }
  ]
})

export const redisSchema = z.union([z.string(), redisObject], expected(REDIS_FORMS))
  .optional().describe('Shared state for every instance: a URL, a Sentinel set or a Cluster; without it, state is in memory')

type RawRedis = z.infer<typeof redisSchema>
type RawObject = z.infer<typeof redisObject>

function refuse (key: string, problem: string): never {
  throw configError(key, `${problem}; redis takes one of ${REDIS_FORMS}`)
}

/** `HOST:PORT` of a Sentinel or a seed node; the host may not be empty (the socket would go to localhost). */
function endpoint (value: string, key: string): RedisEndpoint {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value)
  const port = Number(match?.[3])
  if (match === null || port < 1 || port > 65535) throw configError(key, `expected HOST:PORT, got ${got(value)}`)
  return { host: match[1] ?? match[2] ?? '', port }
}

/** The one form the object gives; a mix, or none, is refused naming the key. */
function form (spec: RawObject): 'url' | 'sentinels' | 'cluster' {
  const given = FORM_KEYS.filter((k) => spec[k] !== undefined)
  const main = given.filter((k) => k !== 'name')
  if (main.length > 1) refuse(`redis.${main[1] ?? ''}`, `given with redis.${main[0] ?? ''}: give one form only`)
  if (main.length === 0) refuse(given.includes('name') ? 'redis.sentinels' : 'redis', given.includes('name') ? 'redis.name needs the Sentinels that know it' : 'names no Redis node')
  const only = main[0] === 'sentinels' || main[0] === 'cluster' ? main[0] : 'url'
  if (only === 'sentinels' && spec.name === undefined) refuse('redis.name', 'the Sentinel form needs the master name')
  if (only !== 'sentinels' && spec.name !== undefined) refuse('redis.name', `only the Sentinel form takes a master name, not the ${only === 'url' ? 'url' : 'cluster'} form`)
  const stray = SENTINEL_AUTH_KEYS.find((k) => spec[k] !== undefined)
  if (only !== 'sentinels' && stray !== undefined) refuse(`redis.${stray}`, `only the Sentinel form takes Sentinel credentials, not the ${only === 'url' ? 'url' : 'cluster'} form`)
  return only
}

function checkUrl (url: string, key: string): string {
  if (!/^rediss?:\/\/[^/?#]/.test(url)) throw configError(key, `expected redis://HOST:PORT or rediss://HOST:PORT, got ${got(url)}`)
  try {
    new URL(url)
  } catch {
    throw configError(key, `expected redis://HOST:PORT or rediss://HOST:PORT, got ${got(url)}`)
  }
  return url
}

function nodes (list: readonly string[], key: string, what: string): RedisEndpoint[] {
  if (list.length === 0) refuse(key, `names no ${what}: give at least one HOST:PORT`)
  return list.map((v, i) => endpoint(v, `${key}[${i}]`))
}

function tlsOf (raw: RawObject['tls'], configDir: string): RedisTls | undefined {
  if (raw === undefined) return undefined
  const file = (value: string | undefined, key: string): string | undefined => value === undefined ? undefined : inputFile(configDir, value, `redis.tls.${key}`)
  const tls: RedisTls = { ca: file(raw.ca, 'ca'), cert: file(raw.cert, 'cert'), key: file(raw.key, 'key'), rejectUnauthorized: raw.rejectUnauthorized ?? true, servername: raw.servername }
  return dropUndefined(tls)
}

/**
 * The `redis` setting, from the file or (a URL only) from `--redis` / `MQTT_GUARD_REDIS`, which
 * replaces the file's whole `redis` as it always did. Undefined: no Redis, state in memory.
 */
export function parseRedis (raw: RawRedis, configDir: string): RedisSpec | undefined {
  if (raw === undefined || raw === '') return undefined
  if (typeof raw === 'string') return { topology: 'standalone', url: checkUrl(raw, 'redis'), keyPrefix: DEFAULT_KEY_PREFIX }
  const only = form(raw)
  if (raw.password !== undefined && raw.passwordFile !== undefined) throw configError('redis.passwordFile', 'give redis.password or redis.passwordFile, not both')
  if (raw.sentinelPassword !== undefined && raw.sentinelPasswordFile !== undefined) throw configError('redis.sentinelPasswordFile', 'give redis.sentinelPassword or redis.sentinelPasswordFile, not both')
  const common = dropUndefined({
    keyPrefix: raw.keyPrefix ?? DEFAULT_KEY_PREFIX,
    username: raw.username,
    password: raw.password,
    passwordFile: raw.passwordFile === undefined ? undefined : inputFile(configDir, raw.passwordFile, 'redis.passwordFile'),
    tls: tlsOf(raw.tls, configDir)
  })
  if (only === 'sentinels') {
    const auth: SentinelAuth = dropUndefined({
      sentinelUsername: raw.sentinelUsername,
      sentinelPassword: raw.sentinelPassword,
      sentinelPasswordFile: raw.sentinelPasswordFile === undefined ? undefined : inputFile(configDir, raw.sentinelPasswordFile, 'redis.sentinelPasswordFile')
    })
    return { ...common, ...auth, topology: 'sentinel', sentinels: nodes(raw.sentinels ?? [], 'redis.sentinels', 'Sentinel'), name: raw.name ?? '' }
  }
  if (only === 'cluster') {
    // A brace in the prefix would be every key's hash tag: all keys in one slot, on one node.
    if (/[{}]/.test(common.keyPrefix)) throw configError('redis.keyPrefix', `${got(common.keyPrefix)} has a { or }: on a Cluster it would become every key's hash tag and put all keys in one slot; remove the braces`)
    return { ...common, topology: 'cluster', nodes: nodes(raw.cluster ?? [], 'redis.cluster', 'seed node') }
  }
  return { ...common, topology: 'standalone', url: checkUrl(raw.url ?? '', 'redis.url') }
}

/**
 * Where the proxy's Redis is, for logs and findings: no password, never. TLS is said where the
 * form does not say it already (a redis:// URL with `tls`, the Sentinel and Cluster forms).
 */
export function describeRedis (spec: RedisSpec): string {
  const list = (eps: readonly RedisEndpoint[]): string => eps.map((e) => `${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`).join(', ')
  const tls = spec.tls === undefined ? '' : ' over TLS'
  switch (spec.topology) {
    case 'standalone': {
      const url = new URL(spec.url)
      url.password = url.password === '' ? '' : '***'
      return `${url.toString()}${url.protocol === 'redis:' ? tls : ''}`
    }
    case 'sentinel': return `Sentinel master ${spec.name} via ${list(spec.sentinels)}${tls}`
    case 'cluster': return `Cluster via ${list(spec.nodes)}${tls}`
  }
}
