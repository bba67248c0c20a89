// The configuration resolved once (issue 19 point 4): one frozen value whose plugin entries
// carry their validated options; a config error is put under a plugin's key from the key it
// carries, not from its message; every limits object has the same keys in the same order.

import t from 'tap'
import { buildConfig } from '../../src/config/config.js'
import { LIMIT_DEFAULTS, changedLimits, resolveLimits } from '../../src/config/limits.js'
import { underKey } from '../../src/config/zod.js'
import { configError } from '../../src/errors.js'
import { resolveConfig } from '../../src/plugin/loader.js'

t.test('resolveConfig validates each plugin entry and freezes the whole', async (t) => {
  const config = await resolveConfig(buildConfig({ plugins: [{ name: 'dedupe', ttlMs: 2000 }, { name: 'client-id', idPattern: 'dev-[0-9]+' }] }, {}))
  const [dedupe, clientId] = config.plugins
  t.match(dedupe, { key: 'plugins[0]', name: 'dedupe', options: { ttlMs: 2000 }, validated: { ttlMs: 2000, maxEntries: 200_000 } })
  t.equal(dedupe?.definition.name, 'dedupe', 'the entry carries its definition')
  for (const [what, value] of Object.entries({ config, limits: config.limits, plugins: config.plugins, entry: dedupe, validated: dedupe?.validated, listen: config.listen, listener: config.listen[0] })) {
    t.ok(Object.isFrozen(value), `${what} is frozen`)
  }
  t.throws(() => { (config.limits as { maxConnections: number }).maxConnections = 1 }, TypeError, 'a limit cannot be changed in place')
  t.notOk(Object.isFrozen(dedupe?.definition), 'the definition is its module\'s, left alone')
  t.ok((clientId?.validated as { idPattern: RegExp }).idPattern.test('dev-12'), 'a compiled option (RegExp) still works')
})

t.test('resolveConfig names the key of a bad option, and refuses an exposed listener without auth', async (t) => {
  await t.rejects(resolveConfig(buildConfig({ plugins: [{ name: 'client-id', leaseMs: 'x' }] }, {})),
    { code: 'GUARD_ERR_CONFIG', message: 'plugins[0].leaseMs: expected an integer >= 300, got "x"' })
  await t.rejects(resolveConfig(buildConfig({ plugins: [{ name: 'trace', destination: '/nonexistent-folder/t.jsonl' }] }, {})),
    { code: 'GUARD_ERR_CONFIG', message: /^plugins\[0\]\.destination: folder \/nonexistent-folder does not exist/ })
  await t.rejects(resolveConfig(buildConfig({ listen: '0.0.0.0:1883', plugins: [{ name: 'dedupe' }] }, {})), { code: 'GUARD_ERR_CONFIG', message: /^listen: / })
})

t.test('a config error goes under a plugin key by the key it carries, not by its message', async (t) => {
  const err = configError('rules[2].topic', 'bad: really')
  t.same(err.setting, { key: 'rules[2].topic', problem: 'bad: really' })
  const moved = underKey('plugins[0]', err)
  t.equal(moved.message, 'plugins[0].rules[2].topic: bad: really')
  t.same(moved.setting, { key: 'plugins[0].rules[2].topic', problem: 'bad: really' })
  t.equal(underKey('plugins[0]', configError('[1]', 'x')).message, 'plugins[0][1]: x')
  t.equal(underKey('plugins[0]', configError('', 'x')).message, 'plugins[0]: x')
  // A plugin of one's own may throw a plain Error named as plugins/README.md says.
  t.equal(underKey('plugins[0]', new Error('level: expected a number')).message, 'plugins[0].level: expected a number')
  t.equal(underKey('plugins[0]', new Error('cannot open x: ENOENT')).message, 'plugins[0]: cannot open x: ENOENT')
})

t.test('limits: every key, in one order, over the defaults, frozen', async (t) => {
  const defaults = resolveLimits(undefined)
  const given = resolveLimits({ maxConnections: 7, maxPacketSize: 4096 })
  t.same(defaults, LIMIT_DEFAULTS)
  t.same(Object.keys(given), Object.keys(LIMIT_DEFAULTS), 'one shape for every config')
  t.match(given, { maxConnections: 7, maxPacketSize: 4096, maxQueuedPackets: LIMIT_DEFAULTS.maxQueuedPackets })
  t.ok(Object.isFrozen(given))
  t.same(changedLimits(defaults, given), ['maxPacketSize', 'maxConnections'])
  t.same(buildConfig({ limits: { maxConnections: 7 } }, {}).limits, { ...LIMIT_DEFAULTS, maxConnections: 7 })
})
