// The face for plugin authors: package.json publishes src/plugin/api.ts as `mqtt-guard/plugin`
// (with its declarations); the example in plugins/README.md is test/fixtures/prefix-only.ts
// verbatim, compiled with the rest (so it type-checks against the face) and loaded here from a
// folder outside the tree that has mqtt-guard in its node_modules, as a user's project would.
// A misspelt hook or definition key stops the start, naming the plugin and what is accepted.
// Whether a plugin authenticates is its definition's to say, not a name the core knows.

import { copyFile, mkdir, readFile, symlink, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import mqtt from 'mqtt'
import { once, type EventEmitter } from 'node:events'
import { startProxy } from '../helpers/proxy.js'
import { tempDir } from '../helpers/auth-clients.js'
import { buildConfig } from '../../src/config/config.js'
import { resolveConfig } from '../../src/plugin/loader.js'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const FIXTURE = path.join(ROOT, 'test/fixtures/prefix-only.ts')

/** A project folder outside the tree: node_modules/mqtt-guard is this repository, zod its own. */
async function project (t: Parameters<typeof tempDir>[0]): Promise<string> {
  const dir = await tempDir(t, 'mqtt-guard-face-')
  await mkdir(path.join(dir, 'node_modules'))
  await symlink(ROOT, path.join(dir, 'node_modules/mqtt-guard'), 'dir')
  await symlink(path.join(ROOT, 'node_modules/zod'), path.join(dir, 'node_modules/zod'), 'dir')
  await writeFile(path.join(dir, 'package.json'), '{ "type": "module" }\n')
  return dir
}

t.test('plugins/README.md shows the example plugin verbatim', async (t) => {
  const readme = await readFile(path.join(ROOT, 'plugins/README.md'), 'utf8')
  const block = /```ts\n(\/\/ prefix-only:[\s\S]*?)```/.exec(readme)?.[1]
  t.equal(block, await readFile(FIXTURE, 'utf8'))
})

t.test('package.json publishes mqtt-guard/plugin with its declarations', async (t) => {
  const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, { types: string, default: string }>, bin: Record<string, string> }
  const face = pkg.exports['./plugin']
  t.same(face, { types: './dist/src/plugin/api.d.ts', default: './dist/src/plugin/api.js' })
  t.match(await readFile(path.join(ROOT, face?.types ?? ''), 'utf8'), /export declare function definePlugin/)
  t.same(Object.keys(pkg.exports), ['./plugin', './package.json'], 'nothing else: the rest is internal')
  t.equal(pkg.bin['mqtt-guard'], 'bin/mqtt-guard.js')
  const dir = await project(t)
  t.equal(createRequire(path.join(dir, 'index.js')).resolve('mqtt-guard/plugin'), path.join(ROOT, 'dist/src/plugin/api.js'))
})

t.test('the example, loaded from outside the tree, refuses a publish outside its prefix', async (t) => {
  const dir = await project(t)
  const plugin = path.join(dir, 'prefix-only.js')
  await copyFile(path.join(ROOT, 'dist/test/fixtures/prefix-only.js'), plugin)
  const proxy = await startProxy({ config: { plugins: [{ module: plugin, topicPrefix: 'fleet/' }] } })
  t.teardown(() => proxy.stop())
  t.ok(proxy.logs.find((l) => l.msg === 'prefix-only ready' && l.topicPrefix === 'fleet/'), 'created with its options')
  const client = mqtt.connect(proxy.url, { protocolVersion: 5, reconnectPeriod: 0, username: 'una' })
  t.teardown(() => { client.end(true) })
  await once(client as unknown as EventEmitter, 'connect')
  await client.publishAsync('fleet/1', 'x', { qos: 1 })
  const refused = await client.publishAsync('elsewhere/1', 'x', { qos: 1 }).then(() => undefined, (err: Error & { code?: number }) => err.code)
  t.equal(refused, 0x87, 'PUBACK 0x87 outside the prefix')
  await t.rejects(startProxy({ config: { plugins: [{ module: plugin }] } }), /^plugins\[0\]\.topicPrefix: /, 'its options are checked by its schema')
})

t.test('a misspelt hook or definition key stops the start, naming the plugin and what is accepted', async (t) => {
  const dir = await project(t)
  await writeFile(path.join(dir, 'typo.js'), [
    "import { definePlugin } from 'mqtt-guard/plugin'",
    "export default definePlugin({ name: 'typo', create: () => ({ name: 'typo', in: { publsh: () => undefined } }) })",
    ''
  ].join('\n'))
  await writeFile(path.join(dir, 'key.js'), "export default { name: 'key', validte: (o) => o, create: () => ({ name: 'key' }) }\n")
  await t.rejects(startProxy({ config: { plugins: [{ module: path.join(dir, 'typo.js') }] } }),
    { code: 'GUARD_ERR_PLUGIN_LOAD', message: /^plugins\[0\]: plugin typo: unknown hook in\.publsh \(accepted: connect, connack, publish, .*\)$/ })
  await t.rejects(startProxy({ config: { plugins: [{ module: path.join(dir, 'key.js') }] } }),
    { code: 'GUARD_ERR_PLUGIN_LOAD', message: /^plugins\[0\]: plugin key: unknown key validte in its definition \(accepted: name, options, validate, create, authenticates, commands, primary\)$/ })
})

t.test('an exposed listener needs a plugin whose definition says it authenticates', async (t) => {
  const exposed = (plugins: unknown[]): ReturnType<typeof buildConfig> => buildConfig({ listen: '0.0.0.0:1883', plugins }, {})
  const acl = { name: 'acl', rules: [] }
  await t.rejects(resolveConfig(exposed([acl])), { code: 'GUARD_ERR_CONFIG', message: /^listen: 0\.0\.0\.0:1883 is not a loopback address .*allowAnonymous/ }, 'acl does not authenticate')
  await t.resolves(resolveConfig(exposed([{ name: 'auth', allowAnonymous: true }, acl])), 'auth does (authenticates: true)')
  const dir = await project(t)
  await writeFile(path.join(dir, 'gate.js'), "export default { name: 'gate', authenticates: true, create: () => ({ name: 'gate' }) }\n")
  await t.resolves(resolveConfig(exposed([{ module: path.join(dir, 'gate.js') }])), 'so does a plugin of your own that says so')
})
