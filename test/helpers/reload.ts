// A proxy in this process whose configuration a test rewrites and reloads, as `mqtt-guard start`
// re-reads its file (StartOptions.reread); MQTT.js helpers the reload tests share: a QoS 1
// round trip, the SUBACK codes, and a count of every way a client can see its connection end.

import type { Test } from 'tap'
import type { IDisconnectPacket, MqttClient } from 'mqtt'
import { buildConfig } from '../../src/config/config.js'
import { GuardServer } from '../../src/server.js'
import { resolveConfig } from '../../src/plugin/loader.js'
import type { Plugin } from '../../src/plugin/api.js'
import type { ReloadReport } from '../../src/reload/plan.js'
import { LogSink } from './log-sink.js'
import { nextMessage } from './e2e-mqtt.js'

export type Raw = Record<string, unknown>

export interface ReloadableProxy {
  server: GuardServer
  logs: LogSink
  /** The first listener's port and URL. */
  port: number
  url: string
  /** The file's content from now on, read again and applied (as SIGHUP does). */
  reload: (raw: Raw) => Promise<ReloadReport>
  /** The file's content from now on, for the next reload however asked (POST /reload). */
  write: (raw: Raw) => void
}

/** `raw` is the file's content; the admin endpoint is off unless it names one. */
export async function reloadableProxy (t: Pick<Test, 'teardown'>, raw: Raw, extraPlugins: Plugin[] = []): Promise<ReloadableProxy> {
  let current = raw
  const read = async (): Promise<Awaited<ReturnType<typeof resolveConfig>>> => await resolveConfig(buildConfig({ admin: false, ...current }, {}))
  const config = await read()
  const logs = new LogSink()
  const server = await GuardServer.start(config, { log: logs.logger(config.log.level), extraPlugins, reread: read })
  t.teardown(async () => { await server.stop() })
  const port = server.listeners[0]?.port ?? 0
  return {
    server,
    logs,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    reload: async (next) => {
      current = next
      return await server.reloadFromSource('test')
    },
    write: (next) => { current = next }
  }
}

/** Subscribes to `topic`, publishes to it at QoS 1 and waits for the message to come back. */
export async function roundTrip (c: MqttClient, topic: string, payload = 'ping'): Promise<void> {
  await c.subscribeAsync(topic, { qos: 1 })
  const got = nextMessage(c, topic)
  await c.publishAsync(topic, payload, { qos: 1 })
  const message = await got
  if (message.payload !== payload) throw new Error(`${topic}: expected ${payload}, got ${message.payload}`)
}

/** The SUBACK return codes, whether MQTT.js resolves or rejects (it rejects on any failure). */
export async function suback (c: MqttClient, topics: string[], qos: 0 | 1 | 2 = 1): Promise<number[]> {
  return await c.subscribeAsync(topics, { qos }).then(
    (granted) => granted.map((g) => g.qos as number),
    (err: Error & { packet?: { granted: number[] } }) => { if (err.packet === undefined) throw err; return err.packet.granted })
}

/** 0 when the QoS 1/2 publish was acknowledged, else the reason code MQTT.js reports. */
export async function publishCode (c: MqttClient, topic: string, qos: 0 | 1 | 2 = 1): Promise<number> {
  return await c.publishAsync(topic, 'x', { qos }).then(() => 0, (err: Error & { code?: number }) => err.code ?? -1)
}

/** Every close, offline and DISCONNECT the clients saw, as `clientId:event`. */
export function drops (clients: MqttClient[]): string[] {
  const seen: string[] = []
  for (const c of clients) {
    const id = c.options.clientId ?? '?'
    c.on('close', () => { seen.push(`${id}:close`) })
    c.on('offline', () => { seen.push(`${id}:offline`) })
    c.on('disconnect', (p: IDisconnectPacket) => { seen.push(`${id}:disconnect 0x${(p.reasonCode ?? 0).toString(16)}`) })
  }
  return seen
}
