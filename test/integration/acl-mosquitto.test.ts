// acl: the same acl_file judged by a real Mosquitto 2 and by the proxy must decide alike.
// Publish: an MQTT 5 QoS 1 publish straight to a Mosquitto that enforces the file, and through
// the proxy (acl plugin with that file) to an open Mosquitto: both PUBACK reason codes must
// equal the plugin's decision. Receive: Mosquitto grants every subscription and checks `read`
// on delivery; what a subscriber to `#` gets before its sentinel must equal the plugin's
// `receive` decisions. (Subscriptions differ on purpose: the proxy refuses filters no rule
// covers, Mosquitto 2 grants them and filters deliveries; see the README.)

import t, { type Test } from 'tap'
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startMosquitto } from '../helpers/mosquitto.js'
import { startProxy } from '../helpers/proxy.js'
import { parseMosquittoAcl } from '../../plugins/acl/mosquitto-acl.js'
import { AclPolicy, type Action } from '../../plugins/acl/rules.js'

const ACL = `topic read public/#
topic readwrite sandbox/+

user alice
topic readwrite alice/#
topic write telemetry/#
topic deny alice/secret/#

user bob
topic bob/#
topic read telemetry/#

user admin
topic readwrite #

pattern readwrite devices/%c/#
pattern read inbox/%u
pattern deny devices/%c/locked
`

const TOPICS = ['public/news', 'sandbox/a', 'sandbox/a/b', 'alice/x', 'alice/secret/k', 'telemetry/t', 'bob/1',
  'devices/dev7/temp', 'devices/dev7/locked', 'devices/a1/x', 'inbox/carol', 'inbox/bob', 'devices/x3/t']

interface Who { user: string | undefined, clientId: string, sentinel?: string }
const SUBJECTS: Who[] = [
  { user: undefined, clientId: 'anon1', sentinel: 'public/news' },
  { user: undefined, clientId: 'dev7', sentinel: 'public/news' },
  { user: 'alice', clientId: 'a1', sentinel: 'alice/x' },
  { user: 'bob', clientId: 'dev7', sentinel: 'bob/1' },
  { user: 'carol', clientId: 'c1', sentinel: 'inbox/carol' },
  { user: 'admin', clientId: 'dev7', sentinel: 'public/news' },
  { user: 'a/b', clientId: 'x2' },
  { user: '+x', clientId: 'x3' }
]

const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-acl-cmp-'))
const file = path.join(dir, 'acl')
await writeFile(file, ACL)
const enforcing = await startMosquitto({ acl: ACL })
const open = await startMosquitto()
const proxy = await startProxy({ config: { upstream: open.url, plugins: [{ name: 'acl', aclFile: file }] } })
t.teardown(async () => {
  await proxy.stop()
  await Promise.all([enforcing.stop(), open.stop()])
  await rm(dir, { recursive: true, force: true })
})

const acl = parseMosquittoAcl(ACL, 'acl')
const policy = new AclPolicy([], {}, () => acl)
const expected = (who: Who, action: Action, topic: string): boolean =>
  policy.decide(policy.principal(who), { action, topic, qos: 1, retain: false }).allow

async function connect (t: Test, url: string, who: Who, options: IClientOptions = {}): Promise<MqttClient> {
  const client = mqtt.connect(url, { protocolVersion: 5, reconnectPeriod: 0, clientId: who.clientId, ...(who.user !== undefined && { username: who.user }), ...options })
  t.teardown(() => { client.end(true) })
  await once(client as unknown as EventEmitter, 'connect')
  return client
}

async function publishCode (client: MqttClient, topic: string): Promise<number> {
  return await client.publishAsync(topic, 'x', { qos: 1 }).then(() => 0, (err: Error & { code?: number }) => err.code ?? -1)
}

for (const who of SUBJECTS) {
  const name = `${who.user ?? '(anonymous)'}/${who.clientId}`
  t.test(`publish decisions of ${name}: Mosquitto = proxy = plugin`, async (t) => {
    const direct = await connect(t, enforcing.url, who)
    const viaProxy = await connect(t, proxy.url, who, { clientId: `${who.clientId}` })
    const rows: string[] = []
    for (const topic of TOPICS) {
      const want = expected(who, 'publish', topic) ? 0 : 0x87
      rows.push(`${topic}: mosquitto ${await publishCode(direct, topic)} proxy ${await publishCode(viaProxy, topic)} plugin ${want}`)
    }
    t.same(rows, rows.map((r) => r.replace(/mosquitto \d+ proxy \d+ plugin (\d+)$/, 'mosquitto $1 proxy $1 plugin $1')))
  })

  if (who.sentinel === undefined) continue
  const sentinel = who.sentinel
  t.test(`receive decisions of ${name}: Mosquitto = plugin`, async (t) => {
    t.ok(expected(who, 'receive', sentinel), 'the sentinel is readable')
    const subscriber = await connect(t, enforcing.url, who)
    await subscriber.subscribeAsync('#', { qos: 1 })
    const got: string[] = []
    subscriber.on('message', (topic, payload) => { got.push(`${topic}:${payload.toString()}`) })
    const admin = await connect(t, enforcing.url, { user: 'admin', clientId: `admin-${who.clientId}` })
    for (const topic of TOPICS) await admin.publishAsync(topic, 'case', { qos: 1 })
    await admin.publishAsync(sentinel, 'sentinel', { qos: 1 })
    while (!got.includes(`${sentinel}:sentinel`)) await new Promise((resolve) => setImmediate(resolve))
    const received = got.filter((m) => m.endsWith(':case')).map((m) => m.slice(0, -':case'.length))
    t.same(received, TOPICS.filter((topic) => expected(who, 'receive', topic)))
  })
}
