// Issue 18, item 5: a client cannot make the proxy's log grow faster than the bounds allow.
// A proxy with the acl plugin in front of a private Mosquitto, MQTT.js clients, log lines read
// back parsed from the in-memory sink: a 5 000-filter SUBSCRIBE writes one `acl denied` line;
// a 64 KiB client ID, user name and topic are cut, with their size; a flood of denied
// publishes gets the connection's budget, then one summary before `connection closed`.

import t, { type Test } from 'tap'
import mqtt, { type MqttClient } from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import { startMosquitto } from '../helpers/mosquitto.js'
import { clientV } from '../helpers/e2e-mqtt.js'
import { startProxy, type TestProxy } from '../helpers/proxy.js'
import type { LogLine } from '../helpers/log-sink.js'
import { MAX_FIELD_CHARS } from '../../src/log/log.js'
import { LOG_BUDGET, SUMMARY_MSG } from '../../src/log/budget.js'

const mosquitto = await startMosquitto()
t.teardown(() => mosquitto.stop())

async function guard (t: Test): Promise<TestProxy> {
  const rules = [{ allow: ['publish', 'subscribe', 'receive'], topic: 'ok/#' }]
  const proxy = await startProxy({ config: { upstream: mosquitto.url, plugins: [{ name: 'acl', rules }] } })
  t.teardown(() => proxy.stop())
  return proxy
}

/** Ends the client and resolves with every line its connection wrote, `connection closed` last. */
async function linesOf (proxy: TestProxy, client: MqttClient, clientId: string): Promise<LogLine[]> {
  const opened = await proxy.logs.waitFor((l) => l.msg === 'connection opened' && l.clientId === clientId)
  await client.endAsync()
  await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.conn === opened.conn)
  return proxy.logs.lines.filter((l) => l.conn === opened.conn)
}

const cutTo = (c: string): string => `${c.repeat(MAX_FIELD_CHARS)}…`

for (const version of [4, 5] as const) {
  const fail = version === 5 ? 0x87 : 0x80

  t.test(`MQTT ${version === 5 ? '5' : '3.1.1'}: a SUBSCRIBE with 5 000 denied filters writes one line`, async (t) => {
    const proxy = await guard(t)
    const clientId = `lb-sub-${version}`
    const client = await clientV(t, proxy.url, version, { clientId })
    const filters = ['ok/1', ...Array.from({ length: 5000 }, (_, i) => `no/${i}`)]
    const granted = await client.subscribeAsync(filters, { qos: 1 }).then(
      (g) => g.map((s) => s.qos as number),
      (err: Error & { packet?: { granted: number[] } }) => { if (err.packet === undefined) throw err; return err.packet.granted })
    t.same(granted, [1, ...filters.slice(1).map(() => fail)], 'the SUBACK still has one code per filter')
    const lines = await linesOf(proxy, client, clientId)
    const denied = lines.filter((l) => l.msg === 'acl denied')
    t.equal(denied.length, 1, 'one acl line for the SUBSCRIBE')
    t.match(denied[0], {
      plugin: 'acl', action: 'subscribe', filterCount: 5001, deniedCount: 5000, clientId,
      denied: ['no/0', 'no/1', 'no/2', 'no/3', 'no/4'].map((filter) => ({ filter, qos: 1, rule: 'default deny' }))
    })
    t.equal((denied[0]?.denied as unknown[]).length, 5, 'the first five denied filters, no more')
    t.ok(lines.length <= 5, `${lines.length} lines for the whole connection (opened ×2, acl, closed)`)
    t.ok(JSON.stringify(denied[0]).length < 2000, 'and a short one')
  })
}

t.test('a 64 KiB client ID, user name and will topic are cut in the log, with their size', async (t) => {
  const proxy = await guard(t)
  const [clientId, username, topic] = ['c', 'u', 't'].map((c) => c.repeat(65_535)) as [string, string, string]
  const client = mqtt.connect(proxy.url, { protocolVersion: 5, reconnectPeriod: 0, clientId, username, will: { topic, payload: Buffer.from('x'), qos: 0, retain: false } })
  t.teardown(() => { client.end(true) })
  const [err] = await once(client as unknown as EventEmitter, 'error') as [Error & { code?: number }]
  t.equal(err.code, 0x87, 'the will topic is denied at CONNECT')
  const closed = await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.reason === 'GUARD_ERR_NOT_AUTHORIZED')
  const lines = proxy.logs.lines.filter((l) => l.conn === closed.conn && l.level >= 30)
  t.same(lines.map((l) => l.msg), ['acl denied', 'connection closed'])
  for (const line of lines) {
    t.match(line, { clientId: cutTo('c'), clientIdBytes: 65_535, username: cutTo('u'), usernameBytes: 65_535 }, `${String(line.msg)}: who, cut`)
    t.ok(JSON.stringify(line).length < 2000, `${String(line.msg)}: ${JSON.stringify(line).length} characters`)
  }
  t.match(lines[0], { action: 'publish', topic: cutTo('t'), topicBytes: 65_535 }, 'the will topic, cut')
})

t.test(`a flood of denied publishes: ${LOG_BUDGET.lines} lines, then one summary before connection closed`, async (t) => {
  const proxy = await guard(t)
  const clientId = 'lb-flood'
  const client = await clientV(t, proxy.url, 4, { clientId })
  for (let i = 0; i < 100; i++) client.publish(`no/${i}`, 'x', { qos: 0 })
  // Packets of one direction are judged in order: this PUBACK comes after all of them.
  await client.publishAsync('ok/end', 'x', { qos: 1 })
  const lines = await linesOf(proxy, client, clientId)
  const denied = lines.filter((l) => l.msg === 'acl denied')
  t.equal(denied.length, LOG_BUDGET.lines, 'the budget')
  t.same(denied.map((l) => l.topic), Array.from({ length: LOG_BUDGET.lines }, (_, i) => `no/${i}`), 'the first ones')
  t.match(lines.slice(-2), [
    { msg: SUMMARY_MSG, level: 40, suppressed: 100 - LOG_BUDGET.lines, byMsg: { 'acl denied': 100 - LOG_BUDGET.lines }, windowMs: LOG_BUDGET.windowMs, clientId },
    { msg: 'connection closed', reason: 'client-disconnect', clientId }
  ], 'the summary, then the close line, which the budget never holds back')
})
