// A pool whose dial fails because this process is out of descriptors (EMFILE) or local ports
// refuses that client and leaves the broker up; any other dial failure counts against the broker
// (found by the scale run of issue 22: one worker past its descriptors marked its brokers down
// and closed its 9 990 clients).

import t from 'tap'
import type { IConnectPacket } from 'mqtt-packet'
import { BrokerPool } from '../../src/upstream/pool.js'
import { parseUpstream } from '../../src/config/upstream.js'
import { GuardError } from '../../src/errors.js'
import type { ConnectionInfo } from '../../src/plugin/api.js'

function pool (): BrokerPool {
  const spec = parseUpstream({ brokers: ['mqtt://127.0.0.1:1', 'mqtt://127.0.0.1:2'], balance: 'least-connections', failover: 'reconnect', healthCheck: { intervalMs: 60_000, failures: 1 } }, process.cwd())
  if (spec.kind !== 'pool') throw new Error('expected a pool')
  return new BrokerPool({ ...spec, instanceId: 'test' })
}

/** Every broker's dial fails with `code` (as broker-socket.ts reports it: a GuardError whose cause has the code). */
function failWith (p: BrokerPool, code: string): void {
  for (const m of (p as unknown as { members: Array<{ socket: { open: () => Promise<never> } }> }).members) {
    m.socket.open = async () => {
      const cause = Object.assign(new Error(`connect ${code}`), { code })
      throw new GuardError('GUARD_ERR_UPSTREAM_UNAVAILABLE', `broker unreachable: ${code}`, { cause })
    }
  }
}

const connect = { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60, clientId: 'c1' } as IConnectPacket
const conn = { id: '1', address: '127.0.0.1', clientId: 'c1' } as unknown as ConnectionInfo

for (const code of ['EMFILE', 'ENFILE', 'EADDRNOTAVAIL']) {
  t.test(`${code}: the client is refused, saying why; the brokers stay up`, async (t) => {
    const p = pool()
    t.teardown(async () => { await p.close() })
    failWith(p, code)
    await t.rejects(p.dial(connect, conn), { code: 'GUARD_ERR_UPSTREAM_UNAVAILABLE', message: new RegExp(`${code} \\(this process is out of descriptors or local ports`) })
    t.same(p.view().brokers.map((b) => [b.state, b.dialFailures]), [['up', 0], ['up', 0]], 'no broker counted down')
  })
}

t.test('ECONNREFUSED: a broker failure, counted (and with failures: 1, the broker is down)', async (t) => {
  const p = pool()
  t.teardown(async () => { await p.close() })
  failWith(p, 'ECONNREFUSED')
  await t.rejects(p.dial(connect, conn), { code: 'GUARD_ERR_UPSTREAM_UNAVAILABLE', message: /no broker could be reached/ })
  t.same(p.view().brokers.map((b) => [b.state, b.dialFailures]), [['down', 1], ['down', 1]])
})
