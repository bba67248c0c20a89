// The published JSON Schema (config/mqtt-guard.schema.json): the committed file is what the
// zod schemas generate today, every example config passes both it and the proxy's own
// validation, and the two agree on what they accept and refuse.

import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { parse as parseYaml } from 'yaml'
import { buildConfig, loadConfig, type GuardConfig } from '../../src/config/config.js'
import { builtinDefinitions, configJsonSchema, configJsonSchemaText, SCHEMA_FILE } from '../../src/cli/schema.js'
import { loadDefinition, validateOptions } from '../../src/plugin/loader.js'
import { isGuardError } from '../../src/errors.js'
import { check, type Schema } from '../helpers/json-schema-lite.js'

const CONFIG_DIR = fileURLToPath(new URL('../../../config/', import.meta.url))

/** The proxy's own verdict: core config, then every plugin's options (the zod path). */
async function proxyRefuses (raw: unknown): Promise<string | undefined> {
  try {
    const config: GuardConfig = buildConfig(raw, {})
    for (const entry of config.plugins) validateOptions(await loadDefinition(entry, config.configDir), entry)
    return undefined
  } catch (err) {
    if (isGuardError(err) && err.code === 'GUARD_ERR_CONFIG') return err.message
    throw err
  }
}

t.test('the committed schema is what the zod schemas generate', async (t) => {
  const committed = await readFile(SCHEMA_FILE, 'utf8')
  t.ok(committed === await configJsonSchemaText(), 'config/mqtt-guard.schema.json is up to date (else: npm run build && node dist/src/cli/schema.js)')
})

t.test('every built-in plugin publishes its options', async (t) => {
  const definitions = await builtinDefinitions()
  t.same(definitions.map((d) => d.name), ['acl', 'aedes-hooks', 'auth', 'client-id', 'dedupe', 'quota', 'trace'])
  for (const d of definitions) t.ok(d.options !== undefined, `${d.name} has an options schema`)
  const schema = await configJsonSchema() as { properties: { plugins: { items: { anyOf: Schema[] } } } }
  const names = schema.properties.plugins.items.anyOf.map((b) => (b.properties as Record<string, Schema> | undefined)?.name?.const ?? 'module')
  t.same(names, [...definitions.map((d) => d.name), 'module'], 'plugins[] items: one form per plugin, keyed by name, and module')
})

t.test('every example config names the schema and passes it and the proxy', async (t) => {
  const schema = await configJsonSchema()
  const files = (await readdir(CONFIG_DIR)).filter((f) => f.endsWith('.yaml')).sort()
  t.ok(files.length >= 3, `examples: ${files.join(', ')}`)
  for (const file of files) {
    const text = await readFile(path.join(CONFIG_DIR, file), 'utf8')
    t.ok(text.startsWith('# yaml-language-server: $schema=./mqtt-guard.schema.json\n'), `${file}: first line points editors at the schema`)
    t.same(check(schema, parseYaml(text)), [], `${file}: conforms to the JSON Schema`)
    // docker.yaml takes its admin token from the environment, as docker-compose.yml gives it
    const config = loadConfig({ config: path.join(CONFIG_DIR, file) }, { adminToken: 'example-token-0123456789' })
    for (const entry of config.plugins) validateOptions(await loadDefinition(entry, config.configDir), entry)
    t.pass(`${file}: loads, and its ${config.plugins.length} plugins' options are valid`)
  }
})

t.test('the schema and the proxy agree', async (t) => {
  const schema = await configJsonSchema()
  const accepted: unknown[] = [
    {},
    { listen: ['127.0.0.1:1', { url: 'ws://127.0.0.1:2/mqtt' }], limits: { maxPacketSize: 64 }, log: { level: 'debug' } },
    { plugins: [{ name: 'client-id', policy: 'reject-new', flapping: { by: ['address'] } }, { name: 'dedupe', window: 'off' }, { name: 'trace', filters: { types: ['publish'] } }] },
    { plugins: [{ name: 'acl', rules: [{ allow: ['publish', 'subscribe'], topic: 'a/#', qos: [0, 1] }] }, { name: 'auth', allowAnonymous: true, bruteForce: false }] },
    { plugins: [{ name: 'quota', perClient: { messagesPerSecond: 50, bytesPerSecond: 65536, burstSeconds: 2 }, perUser: { messagesPerSecond: 0.5, burstSeconds: 4, connections: 10 }, onExceeded: 'delay', maxDelayMs: 5000 }] },
    { redis: 'redis://127.0.0.1:6379' },
    { redis: { url: 'rediss://127.0.0.1:6380', username: 'guard', password: 'pw', keyPrefix: 'g:' } },
    { redis: { sentinels: ['127.0.0.1:26379', '127.0.0.1:26380'], name: 'mymaster' } },
    { redis: { sentinels: ['127.0.0.1:26379'], name: 'mymaster', sentinelUsername: 'watcher', sentinelPassword: 'pw' } },
    { redis: { cluster: ['127.0.0.1:7000'], tls: { rejectUnauthorized: false } } }
  ]
  const refused: unknown[] = [
    { listn: '127.0.0.1:1' },
    { limits: { maxPacketSize: 'big' } },
    { limits: { maxPacketSize: 10 } },
    { log: { level: 'loud' } },
    { plugins: [{ name: 'client-id', leaseMs: 10 }] },
    { plugins: [{ name: 'client-id', policy: 'first-wins' }] },
    { plugins: [{ name: 'client-id', flapping: { by: ['ip'] } }] },
    { plugins: [{ name: 'dedupe', ttl: 1 }] },
    { plugins: [{ name: 'trace', payload: 'all' }] },
    { plugins: [{ name: 'trace', filters: { types: ['nope'] } }] },
    { plugins: [{ name: 'acl', rules: [{ allow: 'write', topic: 'a' }] }] },
    { plugins: [{ name: 'auth', allowAnonymous: 'yes' }] },
    { plugins: [{ name: 'aedes-hooks' }] },
    { plugins: [{ name: 'quota', perClient: { messagesPerSecond: 'x' } }] },
    { plugins: [{ name: 'quota', perClient: { messagesPerSecond: 1 }, onExceeded: 'slow' }] },
    { plugins: [{ name: 'quota', perUser: { conections: 1 } }] },
    { redis: { url: 'redis://h:1', cluster: ['h:7000'] } },
    { redis: { sentinels: ['h:26379'] } },
    { redis: { name: 'mymaster' } },
    { redis: { keyPrefix: 'p:' } },
    { redis: { cluster: [] } },
    { redis: { url: 'redis://h:1', name: 'm' } },
    { redis: { cluster: ['h:7000'], tls: { cafile: 'x' } } },
    { redis: { url: 'redis://h:1', sentinelPassword: 'pw' } },
    { redis: { cluster: ['h:7000'], sentinelUsername: 'u' } }
  ]
  for (const raw of accepted) {
    t.same(check(schema, raw), [], `schema accepts ${JSON.stringify(raw)}`)
    t.equal(await proxyRefuses(raw), undefined, `proxy accepts ${JSON.stringify(raw)}`)
  }
  for (const raw of refused) {
    t.not(check(schema, raw).length, 0, `schema refuses ${JSON.stringify(raw)}`)
    t.type(await proxyRefuses(raw), 'string', `proxy refuses ${JSON.stringify(raw)}`)
  }
  // Not a config error for the proxy (no such folder: GUARD_ERR_PLUGIN_LOAD), but the schema knows the names.
  t.not(check(schema, { plugins: [{ name: 'nope' }] }).length, 0, 'schema refuses an unknown plugin name')
})
