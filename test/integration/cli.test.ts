// The CLI as a user runs it: `node bin/mqtt-guard.js ...` in child processes (compiled dist/).
// Usage and exit codes, check-config (builtin and module plugins, errors naming the key),
// start from flags and from MQTT_GUARD_* variables, graceful SIGTERM, the exposure check, a
// Mosquitto upstream, and Debian's mosquitto_pub/mosquitto_sub through the proxy.

import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { runCli, runToExit, type CliProcess } from '../helpers/cli-process.js'
import { client, closed, nextMessage, uniqueTopic } from '../helpers/e2e-mqtt.js'
import { startMosquitto } from '../helpers/mosquitto.js'
import { freePort } from '../helpers/ports.js'
import { cleanupAll } from '../helpers/processes.js'
import { startRedis } from '../helpers/redis.js'

t.teardown(cleanupAll)
// A hung await (e.g. a QoS 1 publish whose proxy died) fails its own test, not the file.
const LIMIT = { timeout: 20_000 }
// ~15 s on an idle machine, all of it spent starting Node processes; room for a busy CI box.
t.setTimeout(60_000)

async function tempDir (t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-cli-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

/** Starts the proxy; stops it in t.teardown; resolves with the bound port. */
async function started (t: Test, args: string[], env?: Record<string, string>): Promise<{ proc: CliProcess, port: number }> {
  const proc = runCli(['start', ...args], env === undefined ? {} : { env })
  t.teardown(async () => { await proc.stop() })
  return { proc, port: await proc.listening() }
}

/** One QoS 1 message through the proxy from a v4 client to itself. */
async function roundTrip (t: Test, port: number, name: string): Promise<void> {
  const c = await client(t, `mqtt://127.0.0.1:${port}`, { protocolVersion: 4, clientId: `cli-${name}` })
  const topic = uniqueTopic(name)
  await c.subscribeAsync(topic, { qos: 1 })
  const got = nextMessage(c, topic)
  await c.publishAsync(topic, `payload ${name}`, { qos: 1 })
  t.equal((await got).payload, `payload ${name}`, `${name}: round trip`)
}

t.test('usage and unknown commands', LIMIT, async (t) => {
  // Independent processes: run them at once, the file stays fast on a busy machine.
  const helps = [['--help'], ['start', '--help']]
  const [bad, flag, ...results] = await Promise.all([runToExit(['frobnicate']), runToExit(['start', '--no-such-flag']), ...helps.map(async (args) => await runToExit(args))])
  for (const [i, r] of results.entries()) {
    const args = (helps[i] ?? []).join(' ')
    t.equal(r.code, 0, `${args} exits 0`)
    t.match(r.stdout, /^Usage: mqtt-guard <command>/, `${args} prints usage`)
    t.match(r.stdout, /--listen HOST:PORT/)
    // The built-in plugins' commands, asked of their definitions, in the words they always had.
    t.ok(r.stdout.includes('\n  passwd FILE USER      add, change or delete a user in a Mosquitto password file\n' +
      '                        ([--password P] [--delete] [--scrypt] [--iterations N])\n'), `${args} lists passwd (plugins/auth)`)
    t.ok(r.stdout.includes('\n  acl-check --config FILE [--user U] [--client C] [--group G]... [--qos N] [--retain]\n' +
      '            publish|subscribe|receive TOPIC\n                        which ACL rule decides; exit 0 allow, 1 deny\n'), `${args} lists acl-check (plugins/acl)`)
  }
  t.equal(bad?.code, 2, 'unknown command exits 2')
  t.match(bad?.stderr, /unknown command "frobnicate"/)
  t.match(bad?.stderr, /Usage: mqtt-guard/)
  t.not(flag?.code, 0, 'unknown flag fails')
  t.match(flag?.stderr, /--no-such-flag/, 'and names the flag')
})

t.test('check-config', LIMIT, async (t) => {
  const dir = await tempDir(t)
  const write = async (name: string, text: string): Promise<string> => {
    const file = path.join(dir, name)
    await writeFile(file, text)
    return file
  }
  const nopeFile = await write('nope.yaml', 'plugins: [{ name: nope }]\n')
  const badFile = await write('bad.yaml', 'limits:\n  maxPacketSize: big\n')
  const [ok, nope, badKey, missing] = await Promise.all([
    runToExit(['check-config', 'config/default.yaml']),
    runToExit(['check-config', nopeFile]),
    runToExit(['check-config', badFile]),
    runToExit(['check-config', path.join(dir, 'absent.yaml')])
  ])
  t.equal(ok.code, 0, 'default.yaml: exit 0')
  t.match(ok.stdout, /^config\/default\.yaml: ok \(listen 127\.0\.0\.1:1884; upstream embedded; plugins none\)/)

  t.equal(nope.code, 1, 'unknown plugin: exit 1')
  t.match(nope.stderr, /plugins\[0\]: no plugin named "nope"/)
  t.match(nope.stderr, /GUARD_ERR_PLUGIN_LOAD/)

  t.equal(badKey.code, 78, 'invalid value: exit 78 (EX_CONFIG)')
  t.match(badKey.stderr, /^mqtt-guard: limits\.maxPacketSize: .*\(GUARD_ERR_CONFIG\)/)
  t.equal(badKey.stdout, '', 'nothing on stdout')

  t.equal(missing.code, 78, 'missing file: exit 78')
  t.match(missing.stderr, /cannot read config file .*ENOENT/)
})

// BUG: TLS files are only read when the upstream is created, so check-config says "ok" and
// start dies with a bare ENOENT (exit 1, no key named) for a CA file that does not exist.
t.test('check-config refuses an upstream TLS file that does not exist', LIMIT, async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'tls.yaml')
  await writeFile(file, 'upstream:\n  url: mqtts://127.0.0.1:8883\n  ca: ./missing-ca.pem\n')
  const r = await runToExit(['check-config', file])
  t.equal(r.code, 78, 'exit 78')
  t.match(r.stderr, /^mqtt-guard: upstream\.ca: .*missing-ca\.pem/, 'names upstream.ca and the file')
})

t.test('check-config loads a module plugin relative to the config file', LIMIT, async (t) => {
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'package.json'), '{ "type": "module" }\n')
  await writeFile(path.join(dir, 'my-plugin.js'), [
    'export default {',
    "  name: 'mine',",
    "  validate: (o) => { if (typeof o.level !== 'number') throw new Error('level: expected a number'); return o },",
    "  create: () => ({ name: 'mine' })",
    '}'
  ].join('\n') + '\n')
  const good = path.join(dir, 'good.yaml')
  await writeFile(good, "plugins:\n  - { module: './my-plugin.js', level: 3 }\n")
  const bad = path.join(dir, 'bad.yaml')
  await writeFile(bad, "plugins:\n  - { module: './my-plugin.js', level: high }\n")

  // The working directory is the repository, not the config folder.
  const [ok, refused] = await Promise.all([runToExit(['check-config', good]), runToExit(['check-config', bad])])
  t.equal(ok.code, 0, `valid options: exit 0 (${ok.stderr})`)
  t.match(ok.stdout, /: ok \(.*plugins \.\/my-plugin\.js\)/)
  t.equal(refused.code, 78, 'invalid options: exit 78')
  t.match(refused.stderr, /^mqtt-guard: plugins\[0\]\.level: expected a number \(GUARD_ERR_CONFIG\)/)
})

t.test('start from flags; SIGTERM exits 0 within 5 s and closes clients', LIMIT, async (t) => {
  const wanted = await freePort()
  const { proc, port } = await started(t, ['--listen', `127.0.0.1:${wanted}`, '--upstream', 'embedded'])
  t.equal(port, wanted, 'listens where --listen says')
  const line = await proc.waitFor((l) => l.msg === 'mqtt-guard listening')
  t.same(line.listen, [`127.0.0.1:${wanted}`])
  t.equal(line.upstream, 'embedded')

  const c = await client(t, `mqtt://127.0.0.1:${port}`, { protocolVersion: 4, clientId: 'cli-sigterm' })
  const topic = uniqueTopic('sigterm')
  await c.subscribeAsync(topic, { qos: 1 })
  const got = nextMessage(c, topic)
  await c.publishAsync(topic, 'before shutdown', { qos: 1 })
  t.equal((await got).payload, 'before shutdown')

  const v5 = await client(t, `mqtt://127.0.0.1:${port}`, { protocolVersion: 5, clientId: 'cli-sigterm-v5' })
  const disconnect = new Promise<number | undefined>((resolve) => { v5.once('disconnect', (p) => { resolve(p.reasonCode) }) })

  const sawClose = closed(c)
  const t0 = Date.now()
  proc.signal('SIGTERM')
  const exit = await proc.exited
  const elapsed = Date.now() - t0
  t.same(exit, { code: 0, signal: null }, 'exit code 0')
  t.ok(elapsed < 5000, `exited in ${elapsed} ms`)
  await sawClose
  t.pass('client saw its connection close')
  t.equal(await disconnect, 0x8b, 'MQTT 5 client got DISCONNECT 0x8B (server shutting down)')
  t.ok(proc.lines.some((l) => l.msg === 'mqtt-guard stopped'), 'logged "mqtt-guard stopped"')
})

t.test('start from MQTT_GUARD_* variables; flags beat them', LIMIT, async (t) => {
  const [envPort, ignoredPort, flagPort] = await Promise.all([freePort(), freePort(), freePort()])
  // The second proxy's variables point at a useless listener and an unreachable broker: its
  // flags must win. Both start at once.
  const [fromEnv, fromFlags] = await Promise.all([
    started(t, [], { MQTT_GUARD_LISTEN: `127.0.0.1:${envPort}`, MQTT_GUARD_UPSTREAM: 'embedded' }),
    started(t, ['--listen', `127.0.0.1:${flagPort}`, '--upstream', 'embedded'],
      { MQTT_GUARD_LISTEN: `127.0.0.1:${ignoredPort}`, MQTT_GUARD_UPSTREAM: 'mqtt://127.0.0.1:1', MQTT_GUARD_LOG_LEVEL: 'debug' })
  ])
  t.equal(fromEnv.port, envPort, 'MQTT_GUARD_LISTEN')
  await roundTrip(t, envPort, 'env')
  const exit = await fromEnv.proc.stop()
  t.same(exit, { code: 0, signal: null }, 'env-started proxy exits 0 on SIGTERM')

  t.equal(fromFlags.port, flagPort, '--listen beats MQTT_GUARD_LISTEN')
  const line = await fromFlags.proc.waitFor((l) => l.msg === 'mqtt-guard listening')
  t.same(line.listen, [`127.0.0.1:${flagPort}`], 'only the flag listener')
  t.equal(line.upstream, 'embedded', '--upstream beats MQTT_GUARD_UPSTREAM')
  await roundTrip(t, flagPort, 'flags')
  t.ok(fromFlags.proc.lines.some((l) => l.level === 20), 'MQTT_GUARD_LOG_LEVEL=debug applies where no flag is given')
})

t.test('a non-loopback listener without auth refuses to start', LIMIT, async (t) => {
  const port = await freePort()
  const r = await runToExit(['start', '--listen', `0.0.0.0:${port}`, '--upstream', 'embedded'])
  t.equal(r.code, 78, 'exit 78')
  t.match(r.stderr, /^mqtt-guard: listen: 0\.0\.0\.0:\d+ is not a loopback address.*allowAnonymous/)
  t.notMatch(r.stdout, /mqtt-guard listening/, 'never listened')
})

// BUG: GuardServer.start() opens the Redis client before loading plugins; when a plugin's
// create() throws, nothing disconnects it and the process never exits.
t.test('a plugin that fails to start ends the process, also with Redis configured', LIMIT, async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'package.json'), '{ "type": "module" }\n')
  await writeFile(path.join(dir, 'broken.js'), "export default { name: 'broken', create: () => { throw new Error('cannot open password file') } }\n")
  const file = path.join(dir, 'guard.yaml')
  await writeFile(file, `redis: ${redis.url}\nplugins:\n  - module: ./broken.js\n`)
  const r = await runToExit(['start', '--config', file, '--listen', '127.0.0.1:0'], { timeoutMs: 8000 })
  t.equal(r.signal, null, 'exited by itself (not killed after 8 s)')
  t.equal(r.code, 1, 'exit 1')
  t.match(r.stderr, /cannot open password file/)
  t.notMatch(r.stdout, /mqtt-guard listening/)
})

t.test('start --upstream mqtt:// relays to Mosquitto', LIMIT, async (t) => {
  const broker = await startMosquitto()
  t.teardown(broker.stop)
  const { port } = await started(t, ['--listen', '127.0.0.1:0', '--upstream', broker.url])
  const proxied = await client(t, `mqtt://127.0.0.1:${port}`, { protocolVersion: 4, clientId: 'cli-via-proxy' })
  const direct = await client(t, broker.url, { protocolVersion: 5, clientId: 'cli-direct' })
  const up = uniqueTopic('up')
  const down = uniqueTopic('down')
  await direct.subscribeAsync(up, { qos: 1 })
  await proxied.subscribeAsync(down, { qos: 1 })
  const atBroker = nextMessage(direct, up)
  await proxied.publishAsync(up, 'through the proxy', { qos: 1 })
  t.equal((await atBroker).payload, 'through the proxy', 'proxied publish reaches a direct Mosquitto subscriber')
  const atClient = nextMessage(proxied, down)
  await direct.publishAsync(down, 'from mosquitto', { qos: 1 })
  t.equal((await atClient).payload, 'from mosquitto', 'Mosquitto delivers to the proxied subscriber')
  t.match(broker.log(), /New client connected from .* as cli-via-proxy/, 'Mosquitto saw the client\'s own ID')
})

/** Runs a Debian mosquitto client tool; killed by PID in t.teardown if still running. */
function tool (t: Test, command: string, args: string[]): { stdout: () => string, exited: Promise<number | null>, untilOutput: (re: RegExp) => Promise<void> } {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const waiters: Array<() => void> = []
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString('utf8'); for (const w of waiters) w() })
  child.stderr.on('data', (chunk: Buffer) => { out += chunk.toString('utf8') })
  const exited = new Promise<number | null>((resolve) => { child.once('close', (code) => { resolve(code) }) })
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
    await exited
  })
  const untilOutput = (re: RegExp): Promise<void> => new Promise((resolve, reject) => {
    const check = (): void => { if (re.test(out)) resolve() }
    waiters.push(check)
    check()
    void exited.then(() => { if (!re.test(out)) reject(new Error(`${command} exited without ${String(re)}: ${out}`)) })
  })
  return { stdout: () => out, exited, untilOutput }
}

t.test('mosquitto_pub and mosquitto_sub (3.1.1 and 5) through the proxy', LIMIT, async (t) => {
  const { port } = await started(t, ['--listen', '127.0.0.1:0', '--upstream', 'embedded'])
  for (const version of ['311', '5']) {
    const topic = uniqueTopic(`tools-${version}`)
    const payload = `hello from mosquitto_pub -V ${version}`
    const common = ['-h', '127.0.0.1', '-p', String(port), '-V', version, '-t', topic, '-q', '1']
    // stdbuf: mosquitto_sub's stdout into a pipe is block-buffered, and the SUBACK line is the
    // event that says the subscription is in place before anything is published.
    const sub = tool(t, 'stdbuf', ['-oL', 'mosquitto_sub', ...common, '-C', '1', '-W', '5', '-d'])
    await sub.untilOutput(/Subscribed \(mid: \d+\): 1/)
    const pub = tool(t, 'mosquitto_pub', [...common, '-m', payload])
    t.equal(await pub.exited, 0, `-V ${version}: mosquitto_pub exits 0`)
    t.equal(await sub.exited, 0, `-V ${version}: mosquitto_sub exits 0 after one message`)
    const lines = sub.stdout().split('\n')
    t.ok(lines.includes(payload), `-V ${version}: mosquitto_sub printed the payload`)
    t.match(sub.stdout(), new RegExp(`received PUBLISH \\(d0, q1, r0, m\\d+, '${topic}'`), `-V ${version}: delivered at QoS 1`)
  }
})

t.test('a rejection nobody handled is logged, and the proxy keeps serving', LIMIT, async (t) => {
  const dir = await tempDir(t)
  // A plugin with the bug some libraries have: a promise whose rejection nobody catches.
  await writeFile(path.join(dir, 'careless.mjs'), [
    'export default { name: "careless", create: () => ({ name: "careless", in: { connect: () => {',
    '  Promise.reject(new Error("dropped on the floor"))',
    '} } }) }'
  ].join('\n'))
  await writeFile(path.join(dir, 'guard.yaml'), 'plugins:\n  - module: ./careless.mjs\n')
  const { proc, port } = await started(t, ['--config', path.join(dir, 'guard.yaml'), '--upstream', 'embedded'])
  await client(t, `mqtt://127.0.0.1:${port}`, { protocolVersion: 4, clientId: 'first' })
  const line = await proc.waitFor((l) => l.msg === 'unhandled promise rejection in a library; the proxy keeps running')
  t.match((line.err as { message?: string }).message, 'dropped on the floor')
  await client(t, `mqtt://127.0.0.1:${port}`, { protocolVersion: 4, clientId: 'second' })
  t.ok(proc.running, 'still running, still admitting clients')
})
