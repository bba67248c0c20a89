import t from 'tap'
import type { IConnectPacket } from 'mqtt-packet'
import { evictOldest, limitsPlugin } from '../../src/proxy/limits.js'
import type { LimitSettings } from '../../src/config/limits.js'
import type { ConnectionInfo, HookResult } from '../../src/plugin/api.js'
import { createLogger } from '../../src/log/log.js'

const settings: LimitSettings = { maxConnectionsPerAddress: 0, maxConnectsPerSecondPerAddress: 1, maxKeepaliveSeconds: 0, maxPublishesPerSecond: 0 }
const connect: IConnectPacket = { cmd: 'connect', clientId: 'c', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60 }
const log = createLogger('silent')

function connFrom (address: string): ConnectionInfo {
  return { id: address, address, port: 1, listener: 'mqtt://127.0.0.1:0', openedAt: 0, clientId: 'c', username: undefined, protocolVersion: 4, log, close: () => {} }
}

function refused (result: HookResult): boolean {
  return typeof result === 'object' && result !== null && 'action' in result && result.action === 'reject'
}

t.test('evictOldest trims a Map to its newest entries', async (t) => {
  const map = new Map([['a', 1], ['b', 2], ['c', 3], ['d', 4]])
  evictOldest(map, 2)
  t.same([...map.keys()], ['c', 'd'])
  evictOldest(map, 5)
  t.same([...map.keys()], ['c', 'd'], 'nothing to trim')
})

t.test('a sweep of source addresses does not reset the connect rate of an address in use', async (t) => {
  // Three addresses tracked at most. The old table was cleared whole when it filled, so the
  // fourth new address gave every address a fresh bucket.
  const plugin = limitsPlugin(() => settings, 3)
  const hook = (address: string): HookResult => plugin.in?.connect?.(connFrom(address), connect) as HookResult
  t.notOk(refused(hook('10.0.0.1')), 'first connect of the second')
  t.ok(refused(hook('10.0.0.1')), 'second connect in the same second is refused')
  for (let i = 0; i < 50; i++) {
    t.notOk(refused(hook(`10.1.0.${i}`)), `sweep address ${i} is new`)
    // the busy address keeps connecting, so it stays among the most recently used
    if (i % 2 === 1) t.ok(refused(hook('10.0.0.1')), `still limited after ${i + 1} other addresses`)
  }
})

t.test('the least recently used address is the one forgotten', async (t) => {
  const plugin = limitsPlugin(() => settings, 2)
  const hook = (address: string): HookResult => plugin.in?.connect?.(connFrom(address), connect) as HookResult
  hook('a')
  hook('b')
  hook('a') // refused, and now the most recently used
  hook('c') // evicts b
  t.ok(refused(hook('a')), 'a still tracked')
  t.notOk(refused(hook('b')), 'b was forgotten: a fresh bucket')
})
