// What doctor says of a pool of brokers (src/observe/upstream-findings.ts): all down (error),
// some down (warning), a broker that keeps going down and up, clients piled on one broker while
// others are up; and nothing for a healthy, even pool.

import t from 'tap'
import { FLAPPING_CHANGES, poolFindings } from '../../src/observe/upstream-findings.js'
import type { BrokerView, PoolView } from '../../src/upstream/pool.js'

function broker (index: number, over: Partial<BrokerView> = {}): BrokerView {
  return {
    index, url: `mqtt://10.0.0.${index + 1}:1883`, weight: 1, state: 'up', drainingSince: undefined, connections: 10,
    failuresInRow: 0, lastError: undefined, lastCheckMs: 2, lastCheckAt: '2026-12-06T00:00:00.000Z', since: '2026-12-06T00:00:00.000Z',
    downs: 0, recentChanges: 0, dials: 10, dialFailures: 0, serverReference: undefined, ...over
  }
}

const pool = (brokers: BrokerView[], balance: PoolView['balance'] = 'client-id'): PoolView =>
  ({ balance, failover: 'reconnect', healthCheck: { intervalMs: 2000, timeoutMs: 1000, failures: 2, recoveries: 2 }, brokers })

const ids = (view: PoolView): string[] => poolFindings(view).map((f) => `${f.id}:${f.severity}`)

t.test('a healthy, even pool: nothing to say', async (t) => {
  t.same(poolFindings(pool([broker(0), broker(1), broker(2)])), [])
})

t.test('one broker down: a warning naming it and its last error', async (t) => {
  const [f] = poolFindings(pool([broker(0), broker(1, { state: 'down', connections: 0, lastError: 'broker 10.0.0.2:1883 unreachable: ECONNREFUSED', downs: 1 }), broker(2)]))
  t.equal(f?.id, 'upstream-broker-down')
  t.equal(f?.severity, 'warning')
  t.match(f?.summary, /^1 of 3 brokers down/)
  t.match(f?.evidence.join('\n'), /mqtt:\/\/10\.0\.0\.2:1883: down since .*ECONNREFUSED/)
})

t.test('every broker down: an error, every CONNECT refused', async (t) => {
  const down = (i: number): BrokerView => broker(i, { state: 'down', connections: 0, lastError: 'no CONNACK within 1000 ms' })
  const findings = poolFindings(pool([down(0), down(1)]))
  t.same(ids(pool([down(0), down(1)])), ['upstream-down:error'])
  t.match(findings[0]?.summary, /all 2 brokers are down: every CONNECT is refused with 3 \/ 0x88/)
})

t.test(`a broker that changed state ${FLAPPING_CHANGES} times in ten minutes is flapping`, async (t) => {
  t.same(ids(pool([broker(0, { recentChanges: FLAPPING_CHANGES - 1 }), broker(1)])), [], 'one change fewer: not yet')
  const findings = poolFindings(pool([broker(0, { recentChanges: FLAPPING_CHANGES }), broker(1)]))
  t.same(findings.map((f) => f.id), ['upstream-broker-flapping'])
  t.match(findings[0]?.summary, /went down and up 4 times in ten minutes/)
  t.match(findings[0]?.evidence.join('\n'), /health checks: every 2000 ms, timeout 1000 ms/)
})

t.test('clients piled on one broker while others are up', async (t) => {
  const skewed = pool([broker(0, { connections: 90 }), broker(1, { connections: 5 }), broker(2, { connections: 5 })])
  const [f] = poolFindings(skewed)
  t.equal(f?.id, 'upstream-skewed')
  t.match(f?.summary, /^90 % of the connections are on mqtt:\/\/10\.0\.0\.1:1883, though 3 brokers are up/)
  t.match(f?.fix, /reconnect/, 'client-id: the fix says clients return as they reconnect')
  t.match(poolFindings(pool(skewed.brokers, 'first'))[0]?.fix, /balance first sends every client to the first broker/, 'first: by design')
  t.same(ids(pool([broker(0, { connections: 9 }), broker(1, { connections: 1 })])), [], 'too few connections to say anything')
  t.same(ids(pool([broker(0, { connections: 90 }), broker(1, { state: 'down', connections: 0 })])), ['upstream-broker-down:warning'], 'the other broker is down: no skew, a broker down')
})
