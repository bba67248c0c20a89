// The `listen` setting: "HOST:PORT" (plain MQTT) or objects with a URL that names the kind of
// listener (mqtt, mqtts, ws, wss), TLS files, and the PROXY protocol.

import { z } from 'zod'
import { configError } from '../errors.js'
import { compileTrusted } from '../wire/proxy-protocol.js'
import { bool, strings, strictOptions, text } from './zod.js'
import { inputFile } from './paths.js'

export type ListenKind = 'mqtt' | 'mqtts' | 'ws' | 'wss'

export interface ListenSpec {
  readonly kind: ListenKind
  readonly host: string
  readonly port: number
  /** The listener as configured (`mqtts://0.0.0.0:8883`): its name in logs and metrics. */
  readonly url: string
  /** WebSocket path, `/mqtt` unless the URL names one. */
  readonly path: string | undefined
  readonly tls: { readonly cert: string, readonly key: string, readonly ca: string | undefined, readonly requireClientCert: boolean } | undefined
  /** Expect a PROXY protocol v1/v2 header from these addresses (CIDRs); others are refused. */
  readonly proxyProtocol: { readonly trusted: readonly string[], readonly isTrusted: (address: string) => boolean } | undefined
}

export const listenEntry = z.union([z.string(), strictOptions({
  url: text('HOST:PORT or mqtt://, mqtts://, ws://, wss://HOST:PORT'),
  cert: text('a PEM file path').optional(),
  key: text('a PEM file path').optional(),
  ca: text('a PEM file path').optional(),
  requireClientCert: bool().optional(),
  proxyProtocol: bool().optional(),
  trustedProxies: strings().optional()
})])

type Entry = z.infer<typeof listenEntry>

const KINDS: Record<string, ListenKind> = { 'mqtt:': 'mqtt', 'mqtts:': 'mqtts', 'ws:': 'ws', 'wss:': 'wss' }
const DEFAULT_PORTS: Record<ListenKind, number> = { mqtt: 1883, mqtts: 8883, ws: 80, wss: 443 }

function hostPort (value: string, key: string): { host: string, port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value)
  if (match === null) throw configError(key, `expected HOST:PORT, got "${value}"`)
  const port = Number(match[3])
  if (port > 65535) throw configError(key, `port ${port} out of range`)
  const host = match[1] ?? match[2] ?? ''
  return { host: host === '' ? '0.0.0.0' : host, port }
}

export { hostPort as parseHostPort }

function file (configDir: string, value: string | undefined, key: string): string | undefined {
  return value === undefined ? undefined : inputFile(configDir, value, key)
}

function fromUrl (raw: string, key: string): { kind: ListenKind, host: string, port: number, path: string | undefined } {
  if (!/^[a-z]+:\/\//.test(raw)) return { kind: 'mqtt', ...hostPort(raw, key), path: undefined }
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw configError(key, `expected HOST:PORT or mqtt://, mqtts://, ws://, wss://HOST:PORT, got "${raw}"`)
  }
  const kind = KINDS[url.protocol]
  if (kind === undefined) throw configError(key, `unsupported scheme "${url.protocol}": expected mqtt:, mqtts:, ws: or wss:`)
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const web = kind === 'ws' || kind === 'wss'
  if (!web && url.pathname !== '' && url.pathname !== '/') throw configError(key, `${kind}:// takes no path`)
  return { kind, host: host === '' ? '0.0.0.0' : host, port: url.port === '' ? DEFAULT_PORTS[kind] : Number(url.port), path: web ? (url.pathname === '/' || url.pathname === '' ? '/mqtt' : url.pathname) : undefined }
}

function one (entry: Entry, key: string, configDir: string): ListenSpec {
  const o: Exclude<Entry, string> = typeof entry === 'string' ? { url: entry } : entry
  const { kind, host, port, path: wsPath } = fromUrl(o.url, typeof entry === 'string' ? key : `${key}.url`)
  const secure = kind === 'mqtts' || kind === 'wss'
  let tls: ListenSpec['tls']
  if (secure) {
    const cert = file(configDir, o.cert, `${key}.cert`)
    const keyFile = file(configDir, o.key, `${key}.key`)
    if (cert === undefined || keyFile === undefined) throw configError(`${key}.cert`, `${kind}:// needs cert and key (PEM files)`)
    const ca = file(configDir, o.ca, `${key}.ca`)
    if (o.requireClientCert === true && ca === undefined) throw configError(`${key}.ca`, 'requireClientCert needs the CA that signs client certificates')
    tls = { cert, key: keyFile, ca, requireClientCert: o.requireClientCert ?? false }
  } else {
    for (const k of ['cert', 'key', 'ca', 'requireClientCert'] as const) {
      if (o[k] !== undefined) throw configError(`${key}.${k}`, `only for mqtts:// and wss:// listeners`)
    }
  }
  let proxyProtocol: ListenSpec['proxyProtocol']
  if (o.proxyProtocol === true) {
    const trusted = o.trustedProxies ?? ['127.0.0.1', '::1']
    try {
      proxyProtocol = { trusted, isTrusted: compileTrusted(trusted) }
    } catch (err) {
      throw configError(`${key}.trustedProxies`, (err as Error).message)
    }
  } else if (o.trustedProxies !== undefined) {
    throw configError(`${key}.trustedProxies`, 'only with proxyProtocol: true')
  }
  const shown = host.includes(':') ? `[${host}]` : host
  return { kind, host, port, url: `${kind}://${shown}:${port}${wsPath ?? ''}`, path: wsPath, tls, proxyProtocol }
}

export function parseListen (raw: string | Entry[], key: string, configDir: string): ListenSpec[] {
  if (typeof raw === 'string') return raw.split(',').map((s) => one(s.trim(), key, configDir))
  return raw.map((entry, i) => one(entry, `${key}[${i}]`, configDir))
}
