// Small MQTT.js helpers for end-to-end tests: connect with teardown (or expect a refusal), wait for the next message on a topic, wait for a client's 'close'. Deadlines only
// turn a missing event into a failure; they never stand in for synchronisation.

import mqtt, { connectAsync } from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import type { IClientOptions, IPublishPacket, MqttClient } from 'mqtt'
import type { Test } from 'tap'

export const BASE: IClientOptions = { reconnectPeriod: 0, connectTimeout: 5000 }

export interface Received { topic: string, payload: string, packet: IPublishPacket }

/** Connects, and ends the client (forcefully) in t.teardown. */
export async function client (t: Test, url: string, options: IClientOptions): Promise<MqttClient> {
  const c = await connectAsync(url, { ...BASE, ...options })
  t.teardown(async () => { await c.endAsync(true) })
  return c
}

/** Connects with one protocol version (4 = 3.1.1, 5), ended in t.teardown. */
export async function clientV (t: Test, url: string, version: 4 | 5, options: IClientOptions = {}): Promise<MqttClient> {
  return await client(t, url, { protocolVersion: version, ...options })
}

/** Connects expecting a refusal; resolves with the CONNACK code MQTT.js reports. */
export async function refusedCode (t: Test, url: string, version: 4 | 5, options: IClientOptions = {}): Promise<number | undefined> {
  const c = mqtt.connect(url, { ...BASE, protocolVersion: version, ...options })
  t.teardown(() => { c.end(true) })
  const [err] = await once(c as unknown as EventEmitter, 'error') as [Error & { code?: number }]
  return err.code
}

/** The next message on `topic`; rejects after `timeoutMs`. Call before the publish. */
export function nextMessage (c: MqttClient, topic: string, timeoutMs = 5000): Promise<Received> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      c.removeListener('message', onMessage)
      reject(new Error(`no message on ${topic} within ${timeoutMs} ms`))
    }, timeoutMs)
    const onMessage = (tp: string, payload: Buffer, packet: IPublishPacket): void => {
      if (tp !== topic) return
      clearTimeout(timer)
      c.removeListener('message', onMessage)
      resolve({ topic: tp, payload: payload.toString('utf8'), packet })
    }
    c.on('message', onMessage)
  })
}

/** Resolves when the client's connection closes; rejects after `timeoutMs`. */
export function closed (c: MqttClient, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`client did not see its connection close within ${timeoutMs} ms`)) }, timeoutMs)
    c.once('close', () => { clearTimeout(timer); resolve() })
  })
}

/** A topic of its own for each test, so tests cannot see each other's messages. */
export function uniqueTopic (name: string): string {
  return `e2e/${name}/${Math.random().toString(36).slice(2, 10)}`
}
