// Paths in a config as a user meets them: the proxy started (a child process) from another
// working directory resolves every relative path (password file, ACL file, trace destination,
// a `module:` plugin, listener certificates) against the config file's folder; a missing file
// or trace folder is a config error naming the key, from check-config and from start (exit
// 78, nothing created); check-config reads MQTT_GUARD_* variables as start does.

import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { stringify } from 'yaml'
import { runCli, runToExit } from '../helpers/cli-process.js'
import { tempDir } from '../helpers/auth-clients.js'
import { makePki } from '../helpers/certs.js'
import { client, nextMessage, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { pollUntil } from '../helpers/processes.js'
import { formatHash, hashPbkdf2 } from '../../plugins/auth/password-file.js'

const LIMIT = { timeout: 30_000 }
t.setTimeout(90_000)

const PASSWORD = 'pw-config-paths-alice'

async function exists (file: string): Promise<boolean> {
  return await stat(file).then(() => true, () => false)
}

/** `conf/guard.yaml` with `config`, in a temp dir; returns both folders. */
async function configIn (t: Test, config: Record<string, unknown>): Promise<{ root: string, conf: string, file: string }> {
  const root = await tempDir(t, 'mqtt-guard-paths-')
  const conf = path.join(root, 'conf')
  await mkdir(conf)
  const file = path.join(conf, 'guard.yaml')
  await writeFile(file, stringify(config))
  return { root, conf, file }
}

t.test('relative paths resolve against the config file\'s folder, not the working directory', LIMIT, async (t) => {
  const pki = await makePki(t)
  const server = await pki.server(['127.0.0.1'])
  const { root, conf, file } = await configIn(t, {
    listen: ['127.0.0.1:0', { url: 'mqtts://127.0.0.1:0', cert: './tls/server.pem', key: './tls/server.key' }],
    upstream: 'embedded',
    plugins: [
      { name: 'auth', passwordFile: './passwd' },
      { name: 'acl', aclFile: './acl' },
      { name: 'trace', destination: './trace.jsonl' },
      { module: './marker.mjs', note: 'loaded from conf/' }
    ]
  })
  await mkdir(path.join(conf, 'tls'))
  await copyFile(server.cert, path.join(conf, 'tls', 'server.pem'))
  await copyFile(server.key, path.join(conf, 'tls', 'server.key'))
  await writeFile(path.join(conf, 'passwd'), `alice:${formatHash(await hashPbkdf2(PASSWORD))}\n`)
  await writeFile(path.join(conf, 'acl'), 'user alice\ntopic readwrite e2e/allowed/#\n')
  await writeFile(path.join(conf, 'marker.mjs'), "export default { name: 'marker', create: (ctx) => { ctx.log.info({ note: ctx.options.note }, 'marker plugin ready'); return { name: 'marker' } } }\n")
  // The working directory is a sibling folder holding none of these files.
  const cwd = path.join(root, 'elsewhere')
  await mkdir(cwd)

  const proc = runCli(['start', '--config', file], { cwd })
  t.teardown(async () => { await proc.stop() })
  const line = await proc.waitFor((l) => l.msg === 'mqtt-guard listening', 15_000)
  const [plainPort, tlsPort] = (line.listen as string[]).map((l) => Number(l.slice(l.lastIndexOf(':') + 1)))
  t.match(await proc.waitFor((l) => l.msg === 'marker plugin ready'), { note: 'loaded from conf/' }, 'the module: plugin loaded from conf/')

  const login = { protocolVersion: 4 as const, username: 'alice', password: PASSWORD }
  const c = await client(t, `mqtt://127.0.0.1:${plainPort}`, { ...login, clientId: 'paths-plain' })
  t.pass('login works with conf/passwd')
  const allowed = uniqueTopic('allowed')
  // MQTT.js rejects a SUBACK with a failure in it; the codes are on the error's packet.
  const granted = await c.subscribeAsync([allowed, uniqueTopic('denied')], { qos: 1 }).then(
    (list) => list.map((g) => g.qos as number),
    (err: Error & { packet?: { granted: number[] } }) => { if (err.packet === undefined) throw err; return err.packet.granted })
  t.same(granted, [1, 0x80], 'conf/acl applies: the allowed filter granted, the other refused')
  const got = nextMessage(c, allowed)
  await c.publishAsync(allowed, 'through the acl', { qos: 1 })
  t.equal((await got).payload, 'through the acl')

  const ca = await readFile(pki.ca)
  const secure = await client(t, `mqtts://127.0.0.1:${tlsPort}`, { ...login, clientId: 'paths-tls', ca })
  t.ok(secure.connected, 'the TLS listener serves conf/tls/server.pem')

  const traceFile = path.join(conf, 'trace.jsonl')
  // The sink writes in batches: wait for the PUBLISH's own line, not for the first batch.
  const traced = await pollUntil('the PUBLISH traced in conf/trace.jsonl', 5000, async () => {
    const text = await readFile(traceFile, 'utf8').catch(() => '')
    return /"clientId":"paths-plain"[^\n]*"type":"publish"/.test(text) ? text : undefined
  })
  t.match(traced, /"type":"publish"/, 'the trace lands in the config folder')
  t.notOk(await exists(path.join(cwd, 'trace.jsonl')), 'and not in the working directory')
})

t.test('check-config refuses missing files and trace folders, naming the key', LIMIT, async (t) => {
  const { conf, file: ok } = await configIn(t, { plugins: [{ name: 'auth', passwordFile: './passwd' }, { name: 'trace', destination: './trace.jsonl' }] })
  await writeFile(path.join(conf, 'passwd'), '')
  const write = async (name: string, config: Record<string, unknown>): Promise<string> => {
    const file = path.join(conf, name)
    await writeFile(file, stringify(config))
    return file
  }
  const cases: Array<[string, string, RegExp]> = [
    ['passwordFile', await write('passwd.yaml', { plugins: [{ name: 'auth', passwordFile: './absent-passwd' }] }),
      /^mqtt-guard: plugins\[0\]\.passwordFile: file \S+\/conf\/absent-passwd does not exist \(GUARD_ERR_CONFIG\)/],
    ['aclFile', await write('acl.yaml', { plugins: [{ name: 'acl', rules: [], aclFile: 'absent-acl' }] }),
      /^mqtt-guard: plugins\[0\]\.aclFile: file \S+\/conf\/absent-acl does not exist/],
    ['trace folder', await write('trace.yaml', { plugins: [{ name: 'trace', destination: './no-such-folder/trace.jsonl' }] }),
      /^mqtt-guard: plugins\[0\]\.destination: folder \S+\/conf\/no-such-folder does not exist/],
    ['module file', await write('module.yaml', { plugins: [{ module: './absent.mjs' }] }),
      /^mqtt-guard: plugins\[0\]\.module: file \S+\/conf\/absent\.mjs does not exist/],
    ['listener key file', await write('tls.yaml', { listen: [{ url: 'mqtts://127.0.0.1:0', cert: './passwd', key: './absent.key' }] }),
      /^mqtt-guard: listen\[0\]\.key: file \S+\/conf\/absent\.key does not exist/]
  ]
  const [good, ...results] = await Promise.all([runToExit(['check-config', ok]), ...cases.map(async ([, file]) => await runToExit(['check-config', file]))])
  t.equal(good?.code, 0, `the same files present: ok (${good?.stderr ?? ''})`)
  for (const [i, [what, , message]] of cases.entries()) {
    t.equal(results[i]?.code, 78, `${what}: exit 78`)
    t.match(results[i]?.stderr, message, `${what}: names the key and the file`)
  }
  t.notOk(await exists(path.join(conf, 'no-such-folder')), 'the missing trace folder was not created')
})

t.test('check-config reads MQTT_GUARD_* variables as start does', LIMIT, async (t) => {
  const { file } = await configIn(t, { listen: '127.0.0.1:1884' })
  const [listen, redis, fromEnv, onlyEnvFile] = await Promise.all([
    runToExit(['check-config', file], { env: { MQTT_GUARD_LISTEN: 'nonsense' } }),
    runToExit(['check-config', file], { env: { MQTT_GUARD_REDIS: 'http://127.0.0.1:6379' } }),
    runToExit(['check-config', file], { env: { MQTT_GUARD_LISTEN: '127.0.0.1:4321', MQTT_GUARD_UPSTREAM: 'mqtt://127.0.0.1:1883' } }),
    runToExit(['check-config'], { env: { MQTT_GUARD_CONFIG: file } })
  ])
  t.equal(listen.code, 78, 'a bad MQTT_GUARD_LISTEN: exit 78')
  t.match(listen.stderr, /^mqtt-guard: listen: expected HOST:PORT, got "nonsense" \(GUARD_ERR_CONFIG\)/)
  t.equal(redis.code, 78, 'a bad MQTT_GUARD_REDIS: exit 78')
  t.match(redis.stderr, /^mqtt-guard: redis: /)
  t.equal(fromEnv.code, 0)
  t.match(fromEnv.stdout, /: ok \(listen 127\.0\.0\.1:4321; upstream mqtt:\/\/127\.0\.0\.1:1883;/, 'the variables beat the file')
  t.equal(onlyEnvFile.code, 0, `MQTT_GUARD_CONFIG names the file (${onlyEnvFile.stderr})`)
  t.match(onlyEnvFile.stdout, /: ok \(listen 127\.0\.0\.1:1884;/)
})

t.test('start exits 78 naming the key for bad plugin options and missing files', LIMIT, async (t) => {
  const { conf } = await configIn(t, {})
  const write = async (name: string, plugins: unknown[]): Promise<string> => {
    const file = path.join(conf, name)
    await writeFile(file, stringify({ listen: '127.0.0.1:0', plugins }))
    return file
  }
  const cases: Array<[string, unknown[], RegExp]> = [
    ['a bad option', [{ name: 'client-id', leaseMs: 'x' }], /^mqtt-guard: plugins\[0\]\.leaseMs: expected an integer >= 300, got "x" \(GUARD_ERR_CONFIG\)/],
    ['a missing password file', [{ name: 'auth', passwordFile: './absent' }], /^mqtt-guard: plugins\[0\]\.passwordFile: file \S+\/conf\/absent does not exist/],
    ['a trace folder that does not exist', [{ name: 'trace', destination: './logs/trace.jsonl' }], /^mqtt-guard: plugins\[0\]\.destination: folder \S+\/conf\/logs does not exist/],
    ['redisUsers without redis', [{ name: 'auth', redisUsers: true }], /^mqtt-guard: plugins\[0\]\.redisUsers: needs the top-level redis setting/]
  ]
  const files = await Promise.all(cases.map(async ([, plugins], i) => await write(`start-${i}.yaml`, plugins)))
  const results = await Promise.all(files.map(async (file) => await runToExit(['start', '--config', file])))
  for (const [i, [what, , message]] of cases.entries()) {
    t.equal(results[i]?.code, 78, `${what}: exit 78`)
    t.match(results[i]?.stderr, message, `${what}: names the key`)
    t.notMatch(results[i]?.stdout, /mqtt-guard listening/, `${what}: never listened`)
  }
  t.notOk(await exists(path.join(conf, 'logs')), 'the trace folder was not created')
})
