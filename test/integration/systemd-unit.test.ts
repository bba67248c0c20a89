// deploy/systemd/mqtt-guard.service: `systemd-analyze verify` accepts it without a warning,
// and it says what the proxy needs: sandboxed, no capabilities, descriptors for
// limits.maxConnections, a stop timeout past the drain, SIGHUP to reload, no restart on 78.

import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildConfig } from '../../src/config/config.js'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const UNIT = readFileSync(path.join(ROOT, 'deploy/systemd/mqtt-guard.service'), 'utf8')
const ANALYZE = '/usr/bin/systemd-analyze'

/** The unit's settings (last one wins, as in systemd; an empty value is kept). */
const settings = new Map([...UNIT.matchAll(/^([A-Za-z]+)=(.*)$/gm)].map((m) => [m[1] as string, m[2] as string]))

t.test('systemd-analyze verify: no error, no warning', { skip: existsSync(ANALYZE) ? false : `${ANALYZE} not found (Debian's systemd package brings it)` }, async (t) => {
  // verify checks that ExecStart's program exists. The unit names the install path
  // (/usr/bin/node, /opt/mqtt-guard); the copy runs this Node and this checkout instead,
  // and only that line differs.
  const exec = `ExecStart=${process.execPath} ${path.join(ROOT, 'bin/mqtt-guard.js')} `
  const copy = UNIT.replace(/^ExecStart=\/usr\/bin\/node \/opt\/mqtt-guard\/bin\/mqtt-guard\.js /m, exec)
  t.not(copy, UNIT, 'ExecStart replaced')
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-unit-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'mqtt-guard.service')
  await writeFile(file, copy)
  const { code, out } = await new Promise<{ code: number, out: string }>((resolve) => {
    execFile(ANALYZE, ['verify', file], (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, out: `${stdout}${stderr}` })
    })
  })
  t.equal(code, 0, 'exit 0')
  // Unknown keys and bad values are only warnings ("ignoring"), with exit 0: none allowed.
  t.equal(out.trim(), '', 'nothing printed')
})

t.test('the sandbox and the limits', async (t) => {
  for (const [key, value] of [['DynamicUser', 'yes'], ['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes'], ['NoNewPrivileges', 'yes'],
    ['CapabilityBoundingSet', ''], ['ConfigurationDirectory', 'mqtt-guard'], ['StateDirectory', 'mqtt-guard'], ['Restart', 'on-failure'],
    ['RestartPreventExitStatus', '78'], ['ExecReload', '/bin/kill -HUP $MAINPID']] as const) {
    t.equal(settings.get(key), value, `${key}=${value}`)
  }
  t.match(UNIT, /^#AmbientCapabilities=CAP_NET_BIND_SERVICE$/m, 'the capability for a port below 1024, commented')
  t.notOk(settings.has('AmbientCapabilities'), 'and not granted')
  const defaults = buildConfig({}, {}).limits
  const nofile = Number(settings.get('LimitNOFILE'))
  t.ok(nofile >= 2 * defaults.maxConnections + 1024, `LimitNOFILE ${nofile}: two per connection for maxConnections ${defaults.maxConnections}, plus headroom`)
  const stopMs = Number(/^(\d+)s$/.exec(settings.get('TimeoutStopSec') ?? '')?.[1]) * 1000
  t.ok(stopMs > defaults.drainTimeoutMs, `TimeoutStopSec ${stopMs} ms > drainTimeoutMs ${defaults.drainTimeoutMs} ms`)
})
