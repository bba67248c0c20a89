// Steady traffic and probes for the Redis failover measurement (test/integration/redis-failover.test.ts):
// QoS 1 publishers and counting subscribers, a CONNECT prober that records each outcome with its
// time, a raw client that resends acknowledged messages with DUP (what dedupe must remove), and a
// sampler of both proxies' /metrics. Everything is paced by a fixed interval and stops on stop();
// every wait has a deadline.

import { setTimeout as delay } from 'node:timers/promises'
import mqtt, { type MqttClient } from 'mqtt'
import type { Test } from 'tap'
import { RawMqttClient } from './raw-client.js'
import { parseExposition, valueOf, type Family } from './metrics-scrape.js'

export const TICK_MS = 100

/** One CONNECT attempt: its CONNACK code (0 admitted), 'timeout' or 'closed', and how long it took. */
export interface ProbeResult { proxy: string, kind: string, at: number, code: number | 'timeout' | 'closed', ms: number }

export async function connectOnce (url: string, clientId: string, username: string, password: string): Promise<{ code: ProbeResult['code'], ms: number }> {
  const start = Date.now()
  const c = mqtt.connect(url, { protocolVersion: 4, clientId, username, password, clean: true, reconnectPeriod: 0, connectTimeout: 3000 })
  const code = await new Promise<ProbeResult['code']>((resolve) => {
    c.once('connect', () => { resolve(0) })
    c.once('error', (err: Error & { code?: number | string }) => { resolve(typeof err.code === 'number' ? err.code : 'closed') })
    c.once('close', () => { resolve('closed') })
    setTimeout(() => { resolve('timeout') }, 3500).unref()
  })
  const ms = Date.now() - start
  await c.endAsync(true)
  return { code, ms }
}

export interface ProbeStream { proxy: string, kind: string, url: string, username: string, password: string }

/** Every TICK_MS, one fresh client per stream (IDs from `nextId`) until `running()` is false. */
export async function probe (streams: ProbeStream[], nextId: () => string, running: () => boolean, out: ProbeResult[]): Promise<void> {
  await Promise.all(streams.map(async (s) => {
    for (let n = 0; running() && n < 2000; n++) {
      const at = Date.now()
      const r = await connectOnce(s.url, nextId(), s.username, s.password)
      out.push({ proxy: s.proxy, kind: s.kind, at, ...r })
      await delay(Math.max(0, TICK_MS - (Date.now() - at)))
    }
  }))
}

export interface Traffic {
  /** Acknowledged publishes per publisher: the highest sequence number acked + 1. */
  acked: number[]
  /** Per subscriber, copies delivered by payload. */
  seen: Array<Map<string, number>>
  publishers: MqttClient[]
  subscribers: MqttClient[]
  stop: () => Promise<void>
}

async function connected (t: Test, url: string, options: mqtt.IClientOptions): Promise<MqttClient> {
  const c = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 200, connectTimeout: 3000, ...options })
  c.on('error', () => { /* counted through what arrives */ })
  t.teardown(async () => { await c.endAsync(true) })
  return c
}

/** `pubs` publishers through `pubUrl` each send one QoS 1 message per `periodMs`; `subs` subscribers through `subUrl` count them. */
export async function startTraffic (t: Test, o: { pubUrl: string, subUrl: string, topic: string, pubs: number, subs: number, periodMs: number, user: { username: string, password: string }, tag: string }): Promise<Traffic> {
  const seen: Array<Map<string, number>> = []
  const subscribers: MqttClient[] = []
  for (let i = 0; i < o.subs; i++) {
    const c = await connected(t, o.subUrl, { ...o.user, clientId: `${o.tag}-sub-${i}` })
    const m = new Map<string, number>()
    c.on('message', (_topic, payload) => { const p = payload.toString(); m.set(p, (m.get(p) ?? 0) + 1) })
    await c.subscribeAsync(`${o.topic}/#`, { qos: 1 })
    seen.push(m)
    subscribers.push(c)
  }
  const publishers = await Promise.all(Array.from({ length: o.pubs }, async (_, i) => await connected(t, o.pubUrl, { ...o.user, clientId: `${o.tag}-pub-${i}` })))
  const acked = publishers.map(() => 0)
  let running = true
  const loops = publishers.map(async (c, i) => {
    await delay(Math.floor((o.periodMs * i) / o.pubs)) // spread the publishers over the period
    for (let seq = 0; running && seq < 100_000; seq++) {
      const at = Date.now()
      await c.publishAsync(`${o.topic}/p${i}`, `p${i}:${seq}`, { qos: 1 })
      acked[i] = seq + 1
      await delay(Math.max(0, o.periodMs - (Date.now() - at)))
    }
  })
  return {
    acked, seen, publishers, subscribers,
    stop: async () => { running = false; await Promise.all(loops) }
  }
}

/** Acked messages a subscriber never got, and copies beyond the first, over every subscriber. */
export function tally (tr: Traffic): { sent: number, delivered: number, lost: number, duplicates: number } {
  let lost = 0
  let duplicates = 0
  let delivered = 0
  for (const m of tr.seen) {
    tr.acked.forEach((n, i) => { for (let s = 0; s < n; s++) if (!m.has(`p${i}:${s}`)) lost++ })
    for (const [p, n] of m) if (/^p\d+:/.test(p)) { delivered += n; duplicates += n - 1 }
  }
  return { sent: tr.acked.reduce((a, b) => a + b, 0), delivered, lost, duplicates }
}

/**
 * A raw 3.1.1 client that publishes `count` QoS 1 messages (packet IDs 1..count, payload
 * `dup-<id>`), each acknowledged, and then resends them one at a time with DUP set: a resend of
 * an acknowledged message, which dedupe removes when its record is readable.
 */
export interface Resender { resend: (id: number) => Promise<number>, close: () => Promise<void> }

export async function resender (port: number, clientId: string, user: { username: string, password: string }, topic: string, count: number): Promise<Resender> {
  const raw = await RawMqttClient.open(port, 4, false)
  const connack = raw.next('connack')
  raw.sendPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: true, keepalive: 60, username: user.username, password: Buffer.from(user.password) })
  if ((await connack).returnCode !== 0) throw new Error('resender refused')
  const send = async (id: number, dup: boolean): Promise<number> => {
    const start = Date.now()
    const ack = raw.next('puback', 5000)
    raw.sendPacket({ cmd: 'publish', topic, payload: Buffer.from(`dup-${id}`), qos: 1, messageId: id, dup, retain: false })
    const p = await ack
    if (p.messageId !== id) throw new Error(`PUBACK for ${String(p.messageId)}, not ${id}`)
    return Date.now() - start
  }
  for (let id = 1; id <= count; id++) await send(id, false)
  return { resend: async (id) => await send(id, true), close: async () => { await raw.destroy() } }
}

export interface Sample { at: number, proxy: string, up?: number, failovers?: number, failOpen?: number, failClosed?: number, dropped?: number, lookup?: number, removed?: number, ok: boolean }

export async function sampleMetrics (proxy: string, admin: string): Promise<Sample> {
  const at = Date.now()
  let m: Map<string, Family>
  try {
    m = parseExposition(await (await fetch(`${admin}/metrics`, { signal: AbortSignal.timeout(2000) })).text())
  } catch {
    return { at, proxy, ok: false }
  }
  return {
    at, proxy, ok: true,
    up: valueOf(m, 'mqtt_guard_redis_up'),
    failovers: valueOf(m, 'mqtt_guard_redis_failovers_total'),
    failOpen: valueOf(m, 'mqtt_guard_client_id_events_total', { event: 'failOpen' }),
    failClosed: valueOf(m, 'mqtt_guard_client_id_events_total', { event: 'failClosed' }),
    dropped: valueOf(m, 'mqtt_guard_dedupe_redis_failures_total', { kind: 'dropped' }),
    lookup: valueOf(m, 'mqtt_guard_dedupe_redis_failures_total', { kind: 'lookup' }),
    removed: valueOf(m, 'mqtt_guard_dedupe_removed_total', { direction: 'in' })
  }
}

/** Samples both admin endpoints every 250 ms while `running()`. */
export async function sampler (admins: Record<string, string>, running: () => boolean, out: Sample[]): Promise<void> {
  for (let n = 0; running() && n < 1000; n++) {
    const at = Date.now()
    out.push(...await Promise.all(Object.entries(admins).map(async ([p, a]) => await sampleMetrics(p, a))))
    await delay(Math.max(0, 250 - (Date.now() - at)))
  }
}

/** First and last time (relative to `t0`) a sample of `proxy` matched, or undefined. */
export function span<T extends { at: number }> (xs: T[], match: (x: T) => boolean, t0: number): { first: number, last: number, n: number } | undefined {
  const hits = xs.filter(match)
  if (hits.length === 0) return undefined
  return { first: Math.min(...hits.map((h) => h.at)) - t0, last: Math.max(...hits.map((h) => h.at)) - t0, n: hits.length }
}
