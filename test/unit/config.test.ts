// Configuration: the shipped example files load, every invalid value is refused with an error
// that starts with the offending key, precedence is flags > env > file > defaults, relative
// paths resolve against the config file (and are checked), unions name the form that was meant,
// and an exposed listener needs auth or allowAnonymous.

import { mkdtemp, mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import type { Test } from 'tap'
import { buildConfig, DEFAULTS, envOverrides, loadConfig } from '../../src/config/config.js'
import { configErrorOf } from '../helpers/config-error.js'

const CONFIG_DIR = fileURLToPath(new URL('../../../config/', import.meta.url))


async function tempDir (t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-config-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

t.test('every example file in config/ loads', async (t) => {
  const files = (await readdir(CONFIG_DIR)).filter((f) => f.endsWith('.yaml')).sort()
  t.ok(files.includes('default.yaml') && files.includes('production.example.yaml'), `the shipped examples are among ${files.join(', ')}`)
  for (const file of files) {
    // docker.yaml takes its admin token from the environment, as docker-compose.yml gives it
    const config = loadConfig({ config: path.join(CONFIG_DIR, file) }, { adminToken: 'example-token-0123456789' })
    t.equal(config.configDir, CONFIG_DIR.replace(/\/$/, ''), `${file}: configDir is config/`)
    t.ok(config.listen.length > 0, `${file}: has a listener`)
  }
  const def = loadConfig({ config: path.join(CONFIG_DIR, 'default.yaml') })
  t.same(def.listen, [{ kind: 'mqtt', host: '127.0.0.1', port: 1884, url: 'mqtt://127.0.0.1:1884', path: undefined, tls: undefined, proxyProtocol: undefined }])
  t.same(def.upstream, { kind: 'embedded' })
  t.equal(def.redis, undefined)
  t.same(def.plugins, [])
  const prod = loadConfig({ config: path.join(CONFIG_DIR, 'production.example.yaml') })
  t.same(prod.listen.map((l) => `${l.host}:${l.port}`), ['0.0.0.0:1883'])
  t.match(prod.upstream, { kind: 'mqtt', host: '127.0.0.1', port: 1883, tls: undefined })
  t.same(prod.redis, { topology: 'standalone', url: 'redis://127.0.0.1:6379', keyPrefix: 'mqtt-guard:' })
  t.equal(prod.limits.maxConnections, 50000)
  t.equal(prod.allowAnonymous, true)
})

t.test('invalid configs name the key first', async (t) => {
  const cases: Array<[string, Record<string, unknown>, string, RegExp?]> = [
    ['listen not HOST:PORT', { listen: 'nonsense' }, 'listen: ', /HOST:PORT/],
    ['second listener invalid', { listen: ['127.0.0.1:1', 'x'] }, 'listen[1]: '],
    ['listen port out of range', { listen: '127.0.0.1:70000' }, 'listen: ', /out of range/],
    ['listen empty list', { listen: [] }, 'listen: '],
    ['upstream http', { upstream: 'http://x' }, 'upstream: ', /scheme/],
    ['upstream not a URL', { upstream: 'nowhere' }, 'upstream: '],
    // Without a host the socket would go to localhost.
    ['upstream without host', { upstream: 'mqtt://' }, 'upstream: '],
    ['upstream object with unknown key', { upstream: { url: 'mqtts://b:8883', cafile: 'x' } }, 'upstream.cafile: ', /unknown key/],
    ['maxPacketSize a string', { limits: { maxPacketSize: 'big' } }, 'limits.maxPacketSize: '],
    ['maxPacketSize too small', { limits: { maxPacketSize: 10 } }, 'limits.maxPacketSize: '],
    ['connectTimeoutMs fractional', { limits: { connectTimeoutMs: 1000.5 } }, 'limits.connectTimeoutMs: '],
    ['unknown key in limits', { limits: { maxSpeed: 1 } }, 'limits.maxSpeed: ', /unknown key/],
    ['unknown top-level key', { listn: '127.0.0.1:1' }, 'listn: ', /unknown key/],
    ['plugin entry empty', { plugins: [{}] }, 'plugins[0]: ', /exactly one of/],
    ['plugin with name and module', { plugins: [{ name: 'auth' }, { name: 'acl', module: './x.js' }] }, 'plugins[1]: '],
    ['plugin name not a folder name', { plugins: [{ name: '../evil' }] }, 'plugins[0].name: '],
    ['plugins not a list', { plugins: { name: 'auth' } }, 'plugins: '],
    ['log level unknown', { log: { level: 'loud' } }, 'log.level: '],
    ['redis http', { redis: 'http://x' }, 'redis: ', /redis:\/\//],
    ['redis object without url', { redis: { keyPrefix: 'p:' } }, 'redis: ', /names no Redis node/],
    ['allowAnonymous a string', { allowAnonymous: 'yes' }, 'allowAnonymous: ']
  ]
  for (const [name, raw, start, also] of cases) {
    let message: string
    try {
      message = configErrorOf(() => buildConfig(raw, {}))
    } catch (err) {
      t.fail(`${name}: ${(err as Error).message}`)
      continue
    }
    t.ok(message.startsWith(start), `${name}: "${message}" starts with "${start}"`)
    if (also !== undefined) t.match(message, also, `${name}: says what is wrong`)
  }
  t.ok(configErrorOf(() => buildConfig({}, { logLevel: 'loud' })).startsWith('log.level: '), 'a bad --log-level names log.level')
  t.ok(configErrorOf(() => buildConfig({}, { listen: 'x' })).startsWith('listen: '), 'a bad --listen names listen')
  t.ok(configErrorOf(() => buildConfig({}, { upstream: 'ftp://x' })).startsWith('upstream: '), 'a bad --upstream names upstream')
  t.ok(configErrorOf(() => buildConfig({}, { redis: 'x' })).startsWith('redis: '), 'a bad --redis names redis')
  t.match(configErrorOf(() => loadConfig({ config: '/nonexistent/guard.yaml' })), /cannot read config file .*ENOENT/)
})

t.test('a file that is not YAML is a config error', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'bad.yaml')
  await writeFile(file, 'listen: [unclosed\n')
  t.match(configErrorOf(() => loadConfig({ config: file })), /is not valid YAML/)
})

t.test('defaults apply when nothing is given', async (t) => {
  const config = buildConfig({}, {})
  t.same(config.listen, [{ kind: 'mqtt', host: '127.0.0.1', port: 1884, url: 'mqtt://127.0.0.1:1884', path: undefined, tls: undefined, proxyProtocol: undefined }])
  t.same(config.upstream, { kind: 'embedded' })
  t.equal(config.redis, undefined)
  t.equal(config.log.level, 'info')
  t.same(config.limits, DEFAULTS.limits)
  t.equal(config.allowAnonymous, false)
  t.equal(config.configFile, undefined)
  t.equal(config.configDir, process.cwd())
})

t.test('precedence: flags > env > file > defaults', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'guard.yaml')
  await writeFile(file, [
    'listen: 127.0.0.1:1001',
    'upstream: mqtt://file.example:1883',
    'redis: { url: "redis://file.example:6379", keyPrefix: "file:" }',
    'log: { level: warn }',
    'limits: { maxConnections: 7 }'
  ].join('\n') + '\n')

  const fileOnly = loadConfig({ config: file })
  t.same(fileOnly.listen.map((l) => l.port), [1001], 'file listen beats default')
  t.match(fileOnly.upstream, { kind: 'mqtt', host: 'file.example', port: 1883 })
  t.same(fileOnly.redis, { topology: 'standalone', url: 'redis://file.example:6379', keyPrefix: 'file:' })
  t.equal(fileOnly.log.level, 'warn')
  t.same(fileOnly.limits, { ...DEFAULTS.limits, maxConnections: 7 }, 'file limits merge over default limits')
  t.equal(fileOnly.configFile, file)
  t.equal(fileOnly.configDir, dir)

  const env = envOverrides({
    MQTT_GUARD_CONFIG: file,
    MQTT_GUARD_LISTEN: '127.0.0.1:2001,127.0.0.1:2002',
    MQTT_GUARD_UPSTREAM: 'mqtt://env.example:2883',
    MQTT_GUARD_REDIS: 'redis://env.example:6380',
    MQTT_GUARD_LOG_LEVEL: 'debug'
  })
  const fromEnv = loadConfig({}, env)
  t.same(fromEnv.listen.map((l) => l.port), [2001, 2002], 'env beats file (comma-separated)')
  t.match(fromEnv.upstream, { kind: 'mqtt', host: 'env.example', port: 2883 })
  t.same(fromEnv.redis, { topology: 'standalone', url: 'redis://env.example:6380', keyPrefix: 'mqtt-guard:' }, 'env redis (a URL) replaces the file\'s whole redis')
  t.equal(fromEnv.log.level, 'debug')
  t.equal(fromEnv.configFile, file, 'MQTT_GUARD_CONFIG names the file')

  const flags = { listen: '127.0.0.1:3001', upstream: 'embedded', redis: 'redis://flag.example:6381', logLevel: 'error' }
  const fromFlags = loadConfig(flags, env)
  t.same(fromFlags.listen.map((l) => l.port), [3001], 'flag beats env')
  t.same(fromFlags.upstream, { kind: 'embedded' })
  t.match(fromFlags.redis, { topology: 'standalone', url: 'redis://flag.example:6381' })
  t.equal(fromFlags.log.level, 'error')

  const partial = loadConfig({ listen: '127.0.0.1:3002' }, env)
  t.same(partial.listen.map((l) => l.port), [3002], 'flag listen')
  t.match(partial.upstream, { host: 'env.example' }, 'env upstream where no flag')
  t.equal(partial.log.level, 'debug', 'env level where no flag')

  const emptyEnv = loadConfig({}, envOverrides({ MQTT_GUARD_CONFIG: file, MQTT_GUARD_LISTEN: '', MQTT_GUARD_LOG_LEVEL: '' }))
  t.same(emptyEnv.listen.map((l) => l.port), [1001], 'an empty variable does not override the file')
  t.equal(emptyEnv.log.level, 'warn')

  const other = path.join(dir, 'other.yaml')
  await writeFile(other, 'listen: 127.0.0.1:4001\n')
  t.same(loadConfig({ config: other }, env).listen.map((l) => l.port), [2001, 2002], '--config picks the file, env still beats it')
  t.equal(loadConfig({ config: other }, env).configFile, other, '--config beats MQTT_GUARD_CONFIG')
})

t.test('listen forms', async (t) => {
  const hosts = (listen: unknown): string[] => buildConfig({ listen }, {}).listen.map((l) => l.url)
  t.same(hosts('mqtt://127.0.0.1:1'), ['mqtt://127.0.0.1:1'])
  t.same(hosts('[::1]:2'), ['mqtt://[::1]:2'])
  t.same(hosts(['localhost:3', '127.0.0.2:4']), ['mqtt://localhost:3', 'mqtt://127.0.0.2:4'])
})

t.test('relative TLS paths resolve against the config file folder', async (t) => {
  const dir = await tempDir(t)
  const sub = path.join(dir, 'etc', 'guard')
  await mkdir(sub, { recursive: true })
  const file = path.join(sub, 'guard.yaml')
  await writeFile(file, [
    'upstream:',
    '  url: mqtts://broker.internal:8883',
    '  ca: ./ca.pem',
    '  cert: certs/proxy.pem',
    `  key: ${path.join(dir, 'proxy.key')}`,
    '  rejectUnauthorized: false'
  ].join('\n') + '\n')
  // The files must exist: a missing one is a config error naming upstream.ca/cert/key.
  await mkdir(path.join(sub, 'certs'))
  for (const f of [path.join(sub, 'ca.pem'), path.join(sub, 'certs', 'proxy.pem'), path.join(dir, 'proxy.key')]) await writeFile(f, 'x')
  // A relative path to the config file itself resolves against the working directory.
  const relative = path.relative(process.cwd(), file)
  for (const given of [file, relative]) {
    const config = loadConfig({ config: given })
    t.same(config.upstream, {
      kind: 'mqtt',
      url: 'mqtts://broker.internal:8883',
      host: 'broker.internal',
      port: 8883,
      tls: { ca: path.join(sub, 'ca.pem'), cert: path.join(sub, 'certs/proxy.pem'), key: path.join(dir, 'proxy.key'), rejectUnauthorized: false, servername: undefined }
    }, `config given as ${given}`)
  }
  const noPort = buildConfig({ upstream: 'mqtts://b.example' }, {})
  t.match(noPort.upstream, { port: 8883, tls: { rejectUnauthorized: true } }, 'mqtts defaults to 8883 and verifies')
  t.match(buildConfig({ upstream: 'mqtt://b.example' }, {}).upstream, { port: 1883, tls: undefined })
})

t.test('a non-loopback listener needs auth or allowAnonymous', async (t) => {
  for (const listen of ['0.0.0.0:1883', ':1883', '[::]:1883', ['127.0.0.1:1', '10.1.2.3:1883']]) {
    const message = configErrorOf(() => buildConfig({ listen }, {}))
    t.ok(message.startsWith('listen: '), `${JSON.stringify(listen)}: names listen`)
    t.match(message, /allowAnonymous/, `${JSON.stringify(listen)}: mentions allowAnonymous`)
  }
  t.ok(configErrorOf(() => buildConfig({}, { listen: '0.0.0.0:1883' })).startsWith('listen: '), 'also from a flag')
  t.same(buildConfig({ listen: '0.0.0.0:1883', allowAnonymous: true }, {}).listen.map((l) => l.host), ['0.0.0.0'])
  t.same(buildConfig({ listen: '0.0.0.0:1883', plugins: [{ name: 'auth', passwordFile: 'x' }] }, {}).plugins,
    [{ key: 'plugins[0]', name: 'auth', module: undefined, options: { passwordFile: 'x' }, context: { configDir: process.cwd(), redis: false } }], 'auth plugin is enough; options kept')
  for (const listen of ['127.0.0.1:1', '127.8.9.10:1', 'localhost:1', '[::1]:1']) {
    t.doesNotThrow(() => buildConfig({ listen }, {}), `${listen} is loopback`)
  }
})

t.test('a missing upstream TLS file is a config error naming the key', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'guard.yaml')
  await writeFile(file, 'upstream:\n  url: mqtts://broker:8883\n  ca: ./missing-ca.pem\n')
  t.throws(() => loadConfig({ config: file }), { code: 'GUARD_ERR_CONFIG', message: /^upstream\.ca: file .*missing-ca\.pem does not exist/ })
})

t.test('path options resolve against the config folder and are checked', async (t) => {
  const { inputFile, outputFile, isFilePath } = await import('../../src/config/paths.js')
  const dir = await tempDir(t)
  await mkdir(path.join(dir, 'sub'))
  await writeFile(path.join(dir, 'sub', 'f'), 'x')
  t.equal(inputFile(dir, './sub/f', 'k'), path.join(dir, 'sub', 'f'))
  t.equal(inputFile('/elsewhere', path.join(dir, 'sub', 'f'), 'k'), path.join(dir, 'sub', 'f'), 'an absolute path stays')
  t.match(configErrorOf(() => inputFile(dir, 'nope', 'a.b')), /^a\.b: file \S+\/nope does not exist$/)
  t.match(configErrorOf(() => inputFile(dir, 'sub', 'a.b')), /^a\.b: \S+\/sub is a folder, expected a file$/)
  t.equal(outputFile(dir, 'sub/new.jsonl', 'd'), path.join(dir, 'sub', 'new.jsonl'), 'a new file in an existing folder')
  t.equal(outputFile(dir, 'sub/f', 'd'), path.join(dir, 'sub', 'f'), 'an existing file')
  t.match(configErrorOf(() => outputFile(dir, 'missing/t.jsonl', 'd')), /^d: folder \S+\/missing does not exist/)
  t.match(configErrorOf(() => outputFile(dir, 'sub/f/t.jsonl', 'd')), /^d: \S+\/sub\/f is not a folder$/)
  t.match(configErrorOf(() => outputFile(dir, 'sub', 'd')), /^d: \S+\/sub is a folder, expected a file$/)
  t.same(['./x', '../x', '/x', 'pkg', '@scope/pkg'].map(isFilePath), [true, true, true, false, false])
})

t.test('a union names the form the value had the shape of', async (t) => {
  t.equal(configErrorOf(() => buildConfig({ redis: { url: 'redis://x:1', keyPrefx: 'p' } }, {})), 'redis.keyPrefx: unknown key (expected one of url, sentinels, name, cluster, username, password, passwordFile, sentinelUsername, sentinelPassword, sentinelPasswordFile, tls, keyPrefix)')
  t.equal(configErrorOf(() => buildConfig({ listen: [{ url: 'mqtt://127.0.0.1:1', proxyProtocol: 'yes' }] }, {})), 'listen[0].proxyProtocol: expected true or false, got "yes"')
  t.match(configErrorOf(() => buildConfig({ upstream: 5 }, {})), /^upstream: expected embedded, mqtt:\/\/HOST:PORT, .* got 5$/, 'no form fits: the union lists them')
})

t.test('redis: a URL, a Sentinel set or a Cluster, one form at a time', async (t) => {
  const forms = 'redis takes one of redis://HOST:PORT, { url }, { sentinels: [HOST:PORT, ...], name } or { cluster: [HOST:PORT, ...] }'
  t.same(buildConfig({ redis: 'rediss://h:6380' }, {}).redis, { topology: 'standalone', url: 'rediss://h:6380', keyPrefix: 'mqtt-guard:' }, 'a plain URL, as before')
  t.same(buildConfig({ redis: { sentinels: ['127.0.0.1:26379', '[::1]:26380'], name: 'mymaster', username: 'guard', password: 'pw' } }, {}).redis,
    { topology: 'sentinel', sentinels: [{ host: '127.0.0.1', port: 26379 }, { host: '::1', port: 26380 }], name: 'mymaster', username: 'guard', password: 'pw', keyPrefix: 'mqtt-guard:' })
  t.same(buildConfig({ redis: { cluster: ['10.0.0.1:7000'], keyPrefix: 'g:' } }, {}).redis, { topology: 'cluster', nodes: [{ host: '10.0.0.1', port: 7000 }], keyPrefix: 'g:' })
  t.same(buildConfig({ redis: { sentinels: ['h:26379'], name: 'm', password: 'data', sentinelUsername: 'watcher', sentinelPassword: 'watch' } }, {}).redis,
    { topology: 'sentinel', sentinels: [{ host: 'h', port: 26379 }], name: 'm', password: 'data', sentinelUsername: 'watcher', sentinelPassword: 'watch', keyPrefix: 'mqtt-guard:' }, 'the Sentinels\' own credentials beside the data nodes\'')
  // The refusals: the key, what is wrong, and every accepted form.
  const refused: Array<[string, unknown, string]> = [
    ['url and cluster', { url: 'redis://h:1', cluster: ['h:7000'] }, `redis.cluster: given with redis.url: give one form only; ${forms}`],
    ['sentinels and cluster', { sentinels: ['h:26379'], name: 'm', cluster: ['h:7000'] }, `redis.cluster: given with redis.sentinels: give one form only; ${forms}`],
    ['no node at all', { username: 'guard' }, `redis: names no Redis node; ${forms}`],
    ['an empty cluster', { cluster: [] }, `redis.cluster: names no seed node: give at least one HOST:PORT; ${forms}`],
    ['an empty Sentinel list', { sentinels: [], name: 'm' }, `redis.sentinels: names no Sentinel: give at least one HOST:PORT; ${forms}`],
    ['sentinels without name', { sentinels: ['h:26379'] }, `redis.name: the Sentinel form needs the master name; ${forms}`],
    ['name without sentinels', { name: 'm' }, `redis.sentinels: redis.name needs the Sentinels that know it; ${forms}`],
    ['name with url', { url: 'redis://h:1', name: 'm' }, `redis.name: only the Sentinel form takes a master name, not the url form; ${forms}`],
    ['a seed that is no HOST:PORT', { cluster: ['h:7000', 'h'] }, 'redis.cluster[1]: expected HOST:PORT, got "h"'],
    ['a seed without host', { cluster: [':7000'] }, 'redis.cluster[0]: expected HOST:PORT, got ":7000"'],
    ['braces in keyPrefix on a Cluster', { cluster: ['h:7000'], keyPrefix: '{guard}:' }, 'redis.keyPrefix: "{guard}:" has a { or }: on a Cluster it would become every key\'s hash tag and put all keys in one slot; remove the braces'],
    ['password and passwordFile', { url: 'redis://h:1', password: 'a', passwordFile: './p' }, 'redis.passwordFile: give redis.password or redis.passwordFile, not both'],
    ['Sentinel password with url', { url: 'redis://h:1', sentinelPassword: 'a' }, `redis.sentinelPassword: only the Sentinel form takes Sentinel credentials, not the url form; ${forms}`],
    ['Sentinel user with cluster', { cluster: ['h:7000'], sentinelUsername: 'u' }, `redis.sentinelUsername: only the Sentinel form takes Sentinel credentials, not the cluster form; ${forms}`],
    ['Sentinel password file with url', { url: 'redis://h:1', sentinelPasswordFile: './p' }, `redis.sentinelPasswordFile: only the Sentinel form takes Sentinel credentials, not the url form; ${forms}`],
    ['sentinelPassword and sentinelPasswordFile', { sentinels: ['h:26379'], name: 'm', sentinelPassword: 'a', sentinelPasswordFile: './p' }, 'redis.sentinelPasswordFile: give redis.sentinelPassword or redis.sentinelPasswordFile, not both'],
    ['an empty Sentinel user', { sentinels: ['h:26379'], name: 'm', sentinelUsername: '' }, 'redis.sentinelUsername: expected a user name, got ""'],
    ['url of another scheme', { url: 'http://h:1' }, 'redis.url: expected redis://HOST:PORT or rediss://HOST:PORT, got "http://h:1"'],
    ['a cluster that is a string', { cluster: 'h:7000' }, 'redis.cluster: expected a list of Cluster seed nodes (HOST:PORT), got "h:7000"']
  ]
  for (const [name, redis, message] of refused) t.equal(configErrorOf(() => buildConfig({ redis }, {})), message, name)
  t.equal(buildConfig({ redis: { url: 'redis://h:1', keyPrefix: '{guard}:' } }, {}).redis?.keyPrefix, '{guard}:', 'braces are a choice on a single server')
  t.match(configErrorOf(() => buildConfig({}, { redis: 'h:6379' })), /^redis: expected redis:\/\/HOST:PORT or rediss:\/\/HOST:PORT, got "h:6379"$/, '--redis takes a URL')
})

t.test('redis: passwordFile and TLS files resolve against the config folder', async (t) => {
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'redis.pass'), 'secret\n')
  await writeFile(path.join(dir, 'ca.pem'), 'x')
  const file = path.join(dir, 'guard.yaml')
  await writeFile(file, 'redis:\n  sentinels: ["h:26379"]\n  name: m\n  passwordFile: ./redis.pass\n  tls: { ca: ./ca.pem }\n')
  t.same(loadConfig({ config: file }).redis, {
    topology: 'sentinel', sentinels: [{ host: 'h', port: 26379 }], name: 'm', keyPrefix: 'mqtt-guard:',
    passwordFile: path.join(dir, 'redis.pass'), tls: { ca: path.join(dir, 'ca.pem'), rejectUnauthorized: true }
  })
  await writeFile(file, 'redis:\n  sentinels: ["h:26379"]\n  name: m\n  sentinelPasswordFile: ./redis.pass\n')
  t.same(loadConfig({ config: file }).redis, { topology: 'sentinel', sentinels: [{ host: 'h', port: 26379 }], name: 'm', keyPrefix: 'mqtt-guard:', sentinelPasswordFile: path.join(dir, 'redis.pass') })
  await writeFile(file, 'redis:\n  sentinels: ["h:26379"]\n  name: m\n  sentinelPasswordFile: ./nope\n')
  t.match(configErrorOf(() => loadConfig({ config: file })), /^redis\.sentinelPasswordFile: file \S+\/nope does not exist$/)
  await writeFile(file, 'redis:\n  cluster: ["h:7000"]\n  passwordFile: ./nope\n')
  t.match(configErrorOf(() => loadConfig({ config: file })), /^redis\.passwordFile: file \S+\/nope does not exist$/)
  await writeFile(file, 'redis:\n  url: redis://h:1\n  tls: { ca: ./nope.pem }\n')
  t.match(configErrorOf(() => loadConfig({ config: file })), /^redis\.tls\.ca: file \S+\/nope\.pem does not exist$/)
})
