// The configuration resolved once and handed down (issue 19 point 4): a plugin's options are
// validated once per start and once per reload; a reload replaces the config in force whole
// (the old value is never changed in place) and new connections are accepted under the new
// one; a file with a bad option is refused whole on SIGHUP, and nothing of it applies.

import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { buildConfig } from '../../src/config/config.js'
import { LIMIT_DEFAULTS } from '../../src/config/limits.js'
import { resolveConfig } from '../../src/plugin/loader.js'
import { startProxy } from '../helpers/proxy.js'
import { clientV, refusedCode } from '../helpers/e2e-mqtt.js'
import { runCli } from '../helpers/cli-process.js'
import { tempDir } from '../helpers/auth-clients.js'

interface Counted { validated: number, reconfigured: unknown[] }
const counted = (globalThis as unknown as { configOnce: Counted }).configOnce = { validated: 0, reconfigured: [] }

t.test('a plugin\'s options are validated once at start and once per reload, and reconfigure gets them validated', async (t) => {
  const dir = await tempDir(t, 'mqtt-guard-config-once-')
  const module = path.join(dir, 'counted.mjs')
  await writeFile(module, [
    'export default {',
    "  name: 'counted',",
    '  validate: (o) => { globalThis.configOnce.validated++; return { ...o, checked: true } },',
    "  create: () => ({ name: 'counted', reconfigure: (o) => { globalThis.configOnce.reconfigured.push(o) } })",
    '}'
  ].join('\n') + '\n')
  const proxy = await startProxy({ config: { plugins: [{ module, level: 1 }] } })
  t.teardown(proxy.stop)
  t.equal(counted.validated, 1, 'resolved once; loadPlugins does not validate again')
  await proxy.server.reload(await resolveConfig(buildConfig({ listen: '127.0.0.1:0', admin: false, plugins: [{ module, level: 2 }] }, {})))
  t.equal(counted.validated, 2, 'once more for the reload, by resolveConfig; the server does not validate')
  t.same(counted.reconfigured, [{ level: 2, checked: true }], 'reconfigure got the validated options')
  t.match(proxy.server.config.plugins[0], { options: { level: 2 }, validated: { level: 2, checked: true } }, 'the entry in force is the new one')
})

t.test('mqtt-guard start validates a plugin\'s options once, and SIGHUP once more', async (t) => {
  const dir = await tempDir(t, 'mqtt-guard-config-once-')
  const calls = path.join(dir, 'calls')
  await writeFile(calls, '')
  await writeFile(path.join(dir, 'counted.mjs'), [
    "import { appendFileSync } from 'node:fs'",
    'export default {',
    "  name: 'counted',",
    "  validate: (o) => { appendFileSync(o.calls, 'v\\n'); return o },",
    "  create: () => ({ name: 'counted', reconfigure: () => {} })",
    '}'
  ].join('\n') + '\n')
  const file = path.join(dir, 'guard.json')
  const write = async (level: number): Promise<void> => {
    await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', upstream: 'embedded', admin: false, plugins: [{ module: './counted.mjs', calls, level }] }))
  }
  await write(1)
  const proc = runCli(['start', '--config', file])
  t.teardown(async () => { await proc.stop() })
  await proc.listening()
  t.equal(await readFile(calls, 'utf8'), 'v\n', 'once at start (it was twice: the check before start, then the loader)')
  await write(2)
  proc.signal('SIGHUP')
  await proc.waitFor((l) => l.msg === 'plugin reconfigured')
  t.equal(await readFile(calls, 'utf8'), 'v\nv\n', 'once for the reload')
})

t.test('a reload replaces the config in force whole; connections accepted after it get its limits', async (t) => {
  const proxy = await startProxy()
  t.teardown(proxy.stop)
  const before = proxy.server.config
  await clientV(t, proxy.url, 4, { clientId: 'once-1' })
  const report = await proxy.server.reload(await resolveConfig(buildConfig({ listen: '127.0.0.1:0', admin: false, limits: { maxConnections: 1 } }, {})))
  t.same(report.changed.map((c) => [c.setting, c.reach]), [['limits.maxConnections', 'new connections']], 'the answer names the one change')
  const line = await proxy.logs.waitFor((l) => l.msg === 'reloaded')
  t.match(line.changed, [/^limits\.maxConnections: \d+ → 1 \(new connections\)$/], 'and so does the log')
  t.not(proxy.server.config, before, 'a new value')
  t.ok(Object.isFrozen(proxy.server.config) && Object.isFrozen(proxy.server.config.limits), 'frozen')
  t.equal(before.limits.maxConnections, LIMIT_DEFAULTS.maxConnections, 'the old value was not changed in place')
  t.equal(proxy.server.config.limits.maxConnections, 1)
  t.equal(proxy.server.config.listen, before.listen, 'an unchanged setting keeps its running value')
  t.equal(await refusedCode(t, proxy.url, 4, { clientId: 'once-2' }), 3, 'the next connection is accepted under the new limits')
})

t.test('SIGHUP with a bad option in the file applies nothing of it, and names the key', async (t) => {
  const dir = await tempDir(t, 'mqtt-guard-config-once-')
  const file = path.join(dir, 'guard.json')
  const write = async (dedupe: Record<string, unknown>, perAddress: number): Promise<void> => {
    await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', upstream: 'embedded', admin: false, limits: { maxConnectionsPerAddress: perAddress }, plugins: [{ name: 'dedupe', ...dedupe }] }))
  }
  await write({}, 1)
  const proc = runCli(['start', '--config', file])
  t.teardown(async () => { await proc.stop() })
  const url = `mqtt://127.0.0.1:${await proc.listening()}`
  await clientV(t, url, 4, { clientId: 'hup-1' })
  await write({ ttlMs: 'x' }, 2)
  proc.signal('SIGHUP')
  const refused = await proc.waitFor((l) => l.msg === 'config file not reloaded: the running settings stay in force')
  t.match(refused.err, /^plugins\[0\]\.ttlMs: expected an integer >= 1000, got "x"/)
  t.equal(await refusedCode(t, url, 4, { clientId: 'hup-2' }), 3, 'the limit in the same file was not applied either')
  await write({}, 2)
  proc.signal('SIGHUP')
  await proc.waitFor((l) => l.msg === 'reloaded')
  await clientV(t, url, 4, { clientId: 'hup-3' })
  t.pass('the fixed file applies')
})
