// Two proxies in this process, each with its own embedded broker and admin endpoint, sharing
// one Redis in the form given (a Sentinel set, a Cluster): what the topology tests drive.
// Checks that state crosses the instances: a retained message found through a wildcard
// filter, and a persistent session resumed on the other instance with its queued message.

import { randomBytes } from 'node:crypto'
import mqtt from 'mqtt'
import type { IConnackPacket } from 'mqtt'
import type { Test } from 'tap'
import { BASE, client, nextMessage, uniqueTopic } from './e2e-mqtt.js'
import { parseExposition, valueOf, type Family } from './metrics-scrape.js'
import { pollUntil } from './processes.js'
import { startProxy, type TestProxy } from './proxy.js'

export const rand = (): string => randomBytes(4).toString('hex')

export interface FleetProxy {
  proxy: TestProxy
  url: string
  /** GET /metrics, parsed. */
  scrape: () => Promise<Map<string, Family>>
  /** GET /healthz and /readyz bodies. */
  healthz: () => Promise<{ status: string, redis?: Record<string, unknown> }>
  readyz: () => Promise<{ status: number, body: { ready: boolean, checks: Record<string, unknown>, redis?: Record<string, unknown> } }>
}

/**
 * A proxy with an admin endpoint, on `redis`; the embedded broker unless `upstream` says
 * otherwise (a broker URL lets the proxy start while Redis refuses it: the embedded broker's
 * start waits for Redis). `configFile` places relative paths (a password file).
 */
export async function fleetProxy (t: Test, redis: Record<string, unknown>, options: { upstream?: string, configFile?: string } = {}): Promise<FleetProxy> {
  const proxy = await startProxy({ config: { upstream: options.upstream ?? 'embedded', redis, admin: '127.0.0.1:0' }, ...(options.configFile === undefined ? {} : { configFile: options.configFile }) })
  t.teardown(proxy.stop)
  const admin = `http://127.0.0.1:${proxy.server.admin?.port ?? 0}`
  return {
    proxy,
    url: proxy.url,
    scrape: async () => parseExposition(await (await fetch(`${admin}/metrics`)).text()),
    healthz: async () => await (await fetch(`${admin}/healthz`)).json() as { status: string, redis?: Record<string, unknown> },
    readyz: async () => {
      const res = await fetch(`${admin}/readyz`)
      return { status: res.status, body: await res.json() as { ready: boolean, checks: Record<string, unknown>, redis?: Record<string, unknown> } }
    }
  }
}

/** Polls the metrics until `ok` holds (bounded), and returns that scrape. */
export async function metricsUntil (what: string, p: FleetProxy, ok: (m: Map<string, Family>) => boolean, deadlineMs = 20_000): Promise<Map<string, Family>> {
  let last: Map<string, Family> | undefined
  try {
    return await pollUntil(what, deadlineMs, async () => {
      last = await p.scrape()
      return ok(last) ? last : undefined
    })
  } catch (err) {
    // What the proxy said last is the clue.
    const redis = [...(last?.values() ?? [])].filter((f) => f.name.startsWith('mqtt_guard_redis')).flatMap((f) => f.samples.map((s) => `${s.name}${JSON.stringify(s.labels)} ${s.value}`))
    throw new Error(`${(err as Error).message}; last scrape: ${redis.join(', ')}; /healthz: ${JSON.stringify(await p.healthz().catch(() => undefined))}`)
  }
}

export const redisGauges = (m: Map<string, Family>, topology: string): Record<string, number | undefined> => ({
  up: valueOf(m, 'mqtt_guard_redis_up'),
  info: valueOf(m, 'mqtt_guard_redis_info', { topology, role: 'master' }),
  readOnly: valueOf(m, 'mqtt_guard_redis_read_only'),
  failovers: valueOf(m, 'mqtt_guard_redis_failovers_total')
})

async function connack (t: Test, url: string, clientId: string): Promise<{ c: mqtt.MqttClient, connack: IConnackPacket, first: Promise<string> }> {
  const c = mqtt.connect(url, { ...BASE, protocolVersion: 4, clientId, clean: false })
  t.teardown(async () => { await c.endAsync(true) })
  const first = new Promise<string>((resolve) => { c.once('message', (_topic, payload) => { resolve(payload.toString()) }) })
  const ack = await new Promise<IConnackPacket>((resolve, reject) => {
    c.once('connect', resolve)
    c.once('error', reject)
  })
  return { c, connack: ack, first }
}

/**
 * One instance's embedded broker writes to Redis and reads back: a retained message found by a
 * later subscriber. `tag` goes into topics and client IDs: letters, digits and dashes.
 */
export async function retainedRoundTrip (t: Test, url: string, tag: string): Promise<void> {
  if (!/^[\w-]+$/.test(tag)) throw new Error(`tag ${JSON.stringify(tag)}: letters, digits and dashes only`)
  const topic = uniqueTopic(`${tag}-retained`)
  const pub = await client(t, url, { protocolVersion: 4, clientId: `${tag}-pub-${rand()}` })
  // PUBACK comes after the broker stored the retained message (in Redis).
  await pub.publishAsync(topic, `kept (${tag})`, { qos: 1, retain: true })
  const sub = await client(t, url, { protocolVersion: 5, clientId: `${tag}-sub-${rand()}` })
  const got = nextMessage(sub, topic, 10_000)
  await sub.subscribeAsync(topic, { qos: 1 })
  const r = await got
  t.equal(r.payload, `kept (${tag})`, `${tag}: the retained message read back from Redis`)
  t.equal(r.packet.retain, true, `${tag}: delivered as retained`)
}

/** A retained message set on A is found on B through a wildcard; a session made on A resumes on B. */
export async function crossInstance (t: Test, a: string, b: string, tag: string): Promise<void> {
  const topic = uniqueTopic(`${tag}-retain`)
  const pub = await client(t, a, { protocolVersion: 4, clientId: `${tag}-pub-${rand()}` })
  const sub = await client(t, b, { protocolVersion: 5, clientId: `${tag}-sub-${rand()}` })
  // B must not get the retained message as a live one still in flight on the Redis message bus
  // when it subscribes (seen under load): a marker published after it on A, received on B,
  // says everything A published before has passed B by.
  const marker = `${topic}-marker`
  await sub.subscribeAsync(marker, { qos: 1 })
  const passed = nextMessage(sub, marker, 10_000)
  await pub.publishAsync(`${topic}/x`, `retained via A (${tag})`, { qos: 1, retain: true })
  await pub.publishAsync(marker, 'after', { qos: 1 })
  await passed
  const got = nextMessage(sub, `${topic}/x`, 10_000)
  // A wildcard filter: on a Cluster this is a SCAN on every primary, the case a key prefix broke.
  await sub.subscribeAsync(`${topic}/#`, { qos: 1 })
  const r = await got
  t.equal(r.payload, `retained via A (${tag})`, `${tag}: retained on A, found on B through ${topic}/#`)
  t.equal(r.packet.retain, true, `${tag}: delivered as retained`)

  const clientId = `${tag}-persist-${rand()}`
  const ptopic = uniqueTopic(`${tag}-persist`)
  const first = await connack(t, a, clientId)
  await first.c.subscribeAsync(ptopic, { qos: 1 })
  await first.c.endAsync()
  await pub.publishAsync(ptopic, `queued on A (${tag})`, { qos: 1 })
  const second = await connack(t, b, clientId)
  t.equal(second.connack.sessionPresent, true, `${tag}: the session made on A is present on B`)
  t.equal(await second.first, `queued on A (${tag})`, `${tag}: the message queued meanwhile is delivered on B`)
  await second.c.endAsync()
}
