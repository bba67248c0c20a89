import t from 'tap'
import type { IPublishPacket, Packet } from 'mqtt-packet'
import { PluginHost, type Outcome } from '../../src/plugin/host.js'
import { GuardError } from '../../src/errors.js'
import { FRAME_TYPE } from '../../src/wire/codec.js'
import type { ConnectionInfo, PacketEvent, Plugin } from '../../src/plugin/api.js'
import { createLogger } from '../../src/log/log.js'

const conn: ConnectionInfo = {
  id: 'test', address: '127.0.0.1', port: 1, listener: 'mqtt://127.0.0.1:0', openedAt: 0,
  clientId: 'c', username: undefined, protocolVersion: 4, log: createLogger('silent'), close: () => {}
}
const publish = (topic: string): IPublishPacket => ({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 1, dup: false, retain: false, messageId: 1 })
const PUBLISH = FRAME_TYPE.publish

t.test('no hooks: continue, synchronously, and nothing wants the packet', async (t) => {
  const host = new PluginHost([{ name: 'empty' }])
  t.equal(host.wants('in', PUBLISH), false)
  const outcome = host.run('in', conn, publish('a'), PUBLISH)
  t.notOk(outcome instanceof Promise)
  t.equal((outcome as Outcome).verdict.action, 'continue')
})

t.test('hooks run in order; a replaced packet reaches the next; the first refusal ends the chain', async (t) => {
  const calls: string[] = []
  const host = new PluginHost([
    { name: 'one', in: { publish: (_c, p) => { calls.push(`one:${p.topic}`); return { action: 'continue', packet: { ...p, topic: 'b' } } } } },
    { name: 'two', in: { publish: (_c, p) => { calls.push(`two:${p.topic}`); return { action: 'drop', reason: 'test' } } } },
    { name: 'three', in: { publish: () => { calls.push('three') } } }
  ])
  t.equal(host.wants('in', PUBLISH), true)
  t.equal(host.wants('out', PUBLISH), false)
  const outcome = host.run('in', conn, publish('a'), PUBLISH) as Outcome
  t.same(calls, ['one:a', 'two:b'])
  t.equal(outcome.verdict.action, 'drop')
  t.equal(outcome.plugin, 'two')
  t.equal(outcome.changed, true)
  t.equal((outcome.packet as IPublishPacket).topic, 'b')
})

t.test('a hook returning the same packet object is not a change', async (t) => {
  const host = new PluginHost([{ name: 'same', in: { publish: (_c, p) => ({ action: 'continue', packet: p }) } }])
  const outcome = host.run('in', conn, publish('a'), PUBLISH) as Outcome
  t.equal(outcome.changed, false)
})

t.test('sync hooks stay synchronous; the chain becomes async only at an async hook', async (t) => {
  const order: string[] = []
  const host = new PluginHost([
    { name: 'sync', in: { publish: () => { order.push('sync') } } },
    { name: 'async', in: { publish: async () => { await new Promise((resolve) => setImmediate(resolve)); order.push('async'); return { action: 'answer', packets: [{ cmd: 'puback', messageId: 1 }] } } } },
    { name: 'never', in: { publish: () => { order.push('never') } } }
  ])
  const result = host.run('in', conn, publish('a'), PUBLISH)
  t.ok(result instanceof Promise)
  t.same(order, ['sync'])
  const outcome = await result
  t.same(order, ['sync', 'async'])
  t.equal(outcome.verdict.action, 'answer')
  t.equal(outcome.plugin, 'async')
})

t.test('an async hook that continues lets later hooks run', async (t) => {
  const host = new PluginHost([
    { name: 'a', in: { publish: async (_c, p) => ({ action: 'continue', packet: { ...p, payload: Buffer.from('changed') } }) } },
    { name: 'b', in: { publish: (_c, p) => (p.payload.toString() === 'changed' ? { action: 'reject', code: 'GUARD_ERR_NOT_AUTHORIZED' } : undefined) } }
  ])
  const outcome = await host.run('in', conn, publish('a'), PUBLISH)
  t.equal(outcome.verdict.action, 'reject')
  t.equal(outcome.plugin, 'b')
})

t.test('a throwing hook is a GUARD_ERR_PLUGIN refusal naming the plugin; a thrown GuardError keeps its code', async (t) => {
  const host = new PluginHost([{ name: 'broken', in: { publish: () => { throw new Error('boom') } } }])
  const outcome = host.run('in', conn, publish('a'), PUBLISH) as Outcome
  t.equal(outcome.verdict.action, 'reject')
  t.equal(outcome.plugin, 'broken')
  if (outcome.verdict.action === 'reject') {
    t.equal(outcome.verdict.code, 'GUARD_ERR_PLUGIN')
    t.match(outcome.verdict.reason, /broken/)
  }
  const refusing = new PluginHost([{ name: 'refuse', in: { subscribe: async () => { throw new GuardError('GUARD_ERR_NOT_AUTHORIZED', 'no') } } }])
  const sub: Packet = { cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a', qos: 0 }] }
  const refused = await refusing.run('in', conn, sub, FRAME_TYPE.subscribe)
  t.equal(refused.verdict.action === 'reject' && refused.verdict.code, 'GUARD_ERR_NOT_AUTHORIZED')
})

t.test('observers make every packet wanted, see the outcome, and cannot break the path', async (t) => {
  const events: PacketEvent[] = []
  const plugins: Plugin[] = [
    { name: 'throws', observe: () => { throw new Error('observer bug') } },
    { name: 'records', observe: (e) => { events.push(e) } }
  ]
  const host = new PluginHost(plugins)
  t.equal(host.wants('out', FRAME_TYPE.pingresp), true)
  host.observe({ conn, direction: 'in', packet: publish('a'), size: 10, verdict: 'continue', plugin: undefined })
  t.equal(events.length, 1)
})

t.test('close runs plugins in reverse order; onClose errors are contained', async (t) => {
  const order: string[] = []
  const host = new PluginHost([
    { name: 'a', close: () => { order.push('a') }, onClose: () => { throw new Error('x') } },
    { name: 'b', close: async () => { order.push('b') } }
  ])
  host.onClose(conn, { reason: 'client-closed', detail: undefined, clientIdleMs: 0 })
  await host.close()
  t.same(order, ['b', 'a'])
})

t.test('broker → client hooks run in reverse config order (layers)', async (t) => {
  const order: string[] = []
  const host = new PluginHost([
    { name: 'outer', in: { publish: () => { order.push('in:outer') } }, out: { publish: () => { order.push('out:outer') } } },
    { name: 'inner', in: { publish: () => { order.push('in:inner') } }, out: { publish: () => { order.push('out:inner') } } }
  ])
  host.run('in', conn, publish('a'), PUBLISH)
  host.run('out', conn, publish('a'), PUBLISH)
  t.same(order, ['in:outer', 'in:inner', 'out:inner', 'out:outer'])
})

t.test('an unknown hook name is an error at registration, naming the plugin, the name and what is accepted', async (t) => {
  const loadError = (plugin: object): GuardError => {
    try {
      new PluginHost([plugin as Plugin])
    } catch (err) {
      if (err instanceof GuardError) return err
      throw err
    }
    throw new Error('expected an error')
  }
  const misspelt = loadError({ name: 'typo', in: { publsh: () => undefined } })
  t.equal(misspelt.code, 'GUARD_ERR_PLUGIN_LOAD')
  t.equal(misspelt.plugin, 'typo')
  t.match(misspelt.message, /^plugin typo: unknown hook in\.publsh \(accepted: connect, connack, publish, .*auth\)$/)
  t.match(loadError({ name: 'top', onclose: () => {} }).message, /^plugin top: unknown hook onclose \(accepted: name, admin, .*onClose, .*overview, close\)$/)
  t.match(loadError({ name: 'nofn', out: { puback: 'yes' } }).message, /^plugin nofn: hook out\.puback is not a function$/)
  t.doesNotThrow(() => new PluginHost([{ name: 'fine', in: { publish: undefined }, out: {} }]), 'an undefined hook is allowed (conditional spreads leave them)')
})

t.test('plugins add their figures to the overview; a throwing one adds nothing', async (t) => {
  const host = new PluginHost([
    { name: 'counts', overview: () => ({ duplicatesRemoved: { in: 2, out: 3 } }) },
    { name: 'broken', overview: () => { throw new Error('no') } }
  ])
  t.same(host.overview(), { duplicatesRemoved: { in: 2, out: 3 } })
  t.same(new PluginHost([]).overview(), {})
})
