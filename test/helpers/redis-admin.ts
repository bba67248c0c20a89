import { Redis as IORedis } from 'ioredis'
import type { ConnectionOptions } from 'node:tls'

/**
 * Administrative queries for the topology helpers (redis-topologies.ts, redis-sentinel.ts):
 * one command on a fresh loopback connection, with replies parsed just enough to poll on.
 * A port alone is a plain connection without AUTH; a RedisTarget adds a password (a server
 * with requirepass) or TLS (a server on tls-port).
 */

export const HOST = '127.0.0.1'
export const REDIS_SERVER = process.env['REDIS_SERVER_BIN'] ?? 'redis-server'

export interface Endpoint { host: string; port: number }
export interface Killed { port: number; pid: number; at: number }
export interface Failover { port: number; pid: number; ms: number }
export interface RedisTarget { port: number; password?: string; tls?: ConnectionOptions }

/** One command on a fresh connection; undefined if the server is down or replies an error. */
export async function redisCall(to: number | RedisTarget, ...args: (string | number)[]): Promise<unknown> {
  const { port, password, tls } = typeof to === 'number' ? { port: to } as RedisTarget : to
  const c = new IORedis({
    host: HOST, port, ...(password === undefined ? {} : { password }), ...(tls === undefined ? {} : { tls }),
    lazyConnect: true, enableOfflineQueue: false, enableReadyCheck: false,
    retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: 1000, commandTimeout: 1000,
    disableClientInfo: true
  })
  c.on('error', () => undefined)
  try {
    await c.connect()
    const [name, ...rest] = args
    return await c.call(String(name), ...rest)
  } catch {
    return undefined
  } finally {
    c.disconnect()
  }
}

/** A flat RESP key/value list (CLUSTER SHARDS, SENTINEL MASTER) as a Map. */
export function pairs(flat: unknown): Map<string, unknown> {
  const m = new Map<string, unknown>()
  if (!Array.isArray(flat)) return m
  for (let i = 0; i + 1 < flat.length; i += 2) m.set(String(flat[i]), flat[i + 1])
  return m
}

export function infoField(info: unknown, field: string): string | undefined {
  return typeof info === 'string' ? new RegExp(`^${field}:(.*)\\r$`, 'm').exec(info)?.[1] : undefined
}

/** Readiness of a fresh process: answers INFO, and it is our child (not a port-race winner). */
export async function servesAs(to: number | RedisTarget, pid: number): Promise<boolean> {
  return infoField(await redisCall(to, 'INFO', 'server'), 'process_id') === String(pid)
}

/** ROLE as an array ('master', offset, replicas) / ('slave', ip, port, state, offset); undefined if down. */
export async function roleOf(to: number | RedisTarget): Promise<unknown[] | undefined> {
  const r = await redisCall(to, 'ROLE')
  return Array.isArray(r) ? r : undefined
}
