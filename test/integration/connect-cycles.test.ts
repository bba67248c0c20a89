// 10 000 connect/disconnect cycles through the proxy with client-id and dedupe on Redis: no
// growth in file descriptors, heap, live connections or Redis keys.

import t from 'tap'
import net from 'node:net'
import { readdirSync } from 'node:fs'
import { once } from 'node:events'
import { Redis as IORedis } from 'ioredis'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startRedis } from '../helpers/redis.js'
import { startProxy } from '../helpers/proxy.js'
import { handMadeConnect } from '../helpers/raw-client.js'
import { pollUntil } from '../helpers/processes.js'
import v8 from 'node:v8'
import vm from 'node:vm'

// A full collection before each heap reading, so that only what is still referenced counts.
v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void
const heap = async (): Promise<number> => {
  // The test's log sink keeps every line in memory; that is the test's memory, not the proxy's.
  proxy.logs.lines.splice(0)
  await new Promise((resolve) => setTimeout(resolve, 50))
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

const CYCLES = Number(process.env.MQTT_GUARD_CYCLES ?? 10_000)
const CONCURRENCY = 50

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())
const redis = await startRedis()
t.teardown(() => redis.stop())
const db = new IORedis(redis.url, { maxRetriesPerRequest: 1 })
t.teardown(() => { db.disconnect() })
const proxy = await startProxy({
  config: {
    upstream: mosquitto.url,
    redis: { url: redis.url, keyPrefix: 'cycles:' },
    log: { level: 'warn' },
    // Flapping would (rightly) ban IDs that reconnect this fast; leases are what is counted here.
    plugins: [{ name: 'client-id', policy: 'reject-new', flapping: false }, { name: 'dedupe' }]
  }
})
t.teardown(() => proxy.stop())

const fds = (): number => readdirSync('/proc/self/fd').length
const DISCONNECT = Buffer.from([0xe0, 0x00])

/** One client: CONNECT, wait for CONNACK 0, DISCONNECT, wait for the close. */
async function cycle (i: number): Promise<void> {
  const s = net.connect({ port: proxy.port, host: '127.0.0.1' })
  s.on('error', () => {})
  await once(s, 'connect')
  s.write(handMadeConnect(4, `cycle-${i % 200}`))
  const [connack] = await once(s, 'data') as [Buffer]
  if (connack[3] !== 0) throw new Error(`cycle ${i}: CONNACK ${connack[3] ?? '?'}`)
  s.end(DISCONNECT)
  await once(s, 'close')
}

t.test(`${CYCLES} connect/disconnect cycles leave nothing behind`, { timeout: 180_000 }, async (t) => {
  for (let i = 0; i < 200; i++) await cycle(i) // warm-up
  await pollUntil('idle', 5000, () => proxy.server.connections.size === 0 ? true : undefined)
  const before = { fds: fds(), heap: await heap(), keys: await db.dbsize() }
  let next = 0
  const started = Date.now()
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < CYCLES) await cycle(next++)
  }))
  t.comment(`${CYCLES} cycles in ${Date.now() - started} ms`)
  await pollUntil('every connection gone', 5000, () => proxy.server.connections.size === 0 ? true : undefined)
  await pollUntil('leases released', 5000, async () => (await db.dbsize()) <= before.keys ? true : undefined)
  await pollUntil('sockets closed', 5000, () => fds() <= before.fds + 5 ? true : undefined)
  const after = { fds: fds(), heap: await heap(), keys: await db.dbsize() }
  t.ok(after.fds <= before.fds + 5, `descriptors ${after.fds} (before: ${before.fds})`)
  t.ok(after.keys <= before.keys, `Redis keys ${after.keys} (before: ${before.keys})`)
  // After full collections: a leak of even 300 bytes per cycle would show as 3 MiB.
  t.ok(after.heap - before.heap < 3 * 1024 * 1024, `heap grew ${((after.heap - before.heap) / 1048576).toFixed(2)} MiB`)
  t.equal(proxy.server.connections.size, 0)
})
