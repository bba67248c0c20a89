// The bounded soak (npm run soak, 60 s here): mixed QoS 0/1/2 traffic with reconnects and
// subscription churn through the proxy with every plugin on. QoS 1 and 2 lose nothing; QoS 2
// is never duplicated; the proxy's memory does not keep growing.

import t from 'tap'
import { soak } from '../../bench/soak.js'

t.test('60 s soak: nothing lost at QoS 1 and 2, no QoS 2 duplicate', { timeout: 180_000 }, async (t) => {
  const result = await soak(Number(process.env.MQTT_GUARD_SOAK_SECONDS ?? 60), (line) => { t.comment(line) })
  for (const q of [0, 1, 2] as const) {
    const c = result.qos[q]
    t.comment(`QoS ${q}: ${c.sent} expected, ${c.received} received, ${c.lost} lost, ${c.duplicated} duplicated`)
  }
  t.ok(result.qos[1].sent > 10_000, 'real traffic')
  t.equal(result.qos[1].lost, 0, 'QoS 1: nothing lost')
  t.equal(result.qos[2].lost, 0, 'QoS 2: nothing lost')
  t.equal(result.qos[2].duplicated, 0, 'QoS 2: no duplicate')
  const m = result.memoryMiB
  const firstHalf = Math.max(...m.slice(0, Math.floor(m.length / 2)))
  const secondHalf = Math.max(...m.slice(Math.floor(m.length / 2)))
  t.ok(secondHalf < firstHalf + 40, `proxy RSS: at most ${firstHalf} MiB in the first half, ${secondHalf} MiB in the second`)
})
