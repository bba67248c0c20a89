// The README's test command on a fresh machine: a copy of the repository (its tracked files,
// nothing built, no node_modules) and a PATH without tshark and chromium. `npm test` must stop
// at once with the one command to type, before lint or any test runs; as root with apt-get it
// installs what is missing and goes on. apt-get is a stand-in here (it records its arguments
// and "installs" stubs), so the test changes nothing on the machine.

import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { ROOT } from '../helpers/cli-process.js'
import { tempDir } from '../helpers/auth-clients.js'

const STRIPPED = ['tshark', 'chromium', 'chromium-browser']

/** The working tree's tracked and untracked-but-not-ignored files, copied: a clean clone of it. */
function cleanCopy (to: string): void {
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' })
  for (const file of files.split('\0')) {
    if (file === '' || !existsSync(path.join(ROOT, file))) continue
    mkdirSync(path.dirname(path.join(to, file)), { recursive: true })
    copyFileSync(path.join(ROOT, file), path.join(to, file))
    chmodSync(path.join(to, file), statSync(path.join(ROOT, file)).mode)
  }
}

/** One folder of links to every program on PATH except the stripped ones. */
function strippedPath (dir: string): string {
  mkdirSync(dir, { recursive: true })
  for (const folder of (process.env.PATH ?? '').split(':')) {
    if (folder === '' || !existsSync(folder)) continue
    for (const name of readdirSync(folder)) {
      if (STRIPPED.includes(name) || existsSync(path.join(dir, name))) continue
      symlinkSync(path.join(folder, name), path.join(dir, name))
    }
  }
  return dir
}

interface Run { code: number | null, out: string }

async function npmTest (cwd: string, env: NodeJS.ProcessEnv): Promise<Run> {
  return await new Promise((resolve) => {
    execFile('npm', ['test'], { cwd, env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (typeof err.code === 'number' ? err.code : null), out: stdout + stderr })
    })
  })
}

const home = await tempDir(t, 'mqtt-guard-fresh-')
const clone = path.join(home, 'clone')
cleanCopy(clone)
const bin = strippedPath(path.join(home, 'bin'))
const env = { HOME: home, PATH: bin, npm_config_update_notifier: 'false', npm_config_cache: path.join(home, 'npm-cache') }

t.test('without the tools, npm test stops before lint with the command to type', async (t) => {
  const started = Date.now()
  const run = await npmTest(clone, { ...env, MQTT_GUARD_SETUP: 'check' })
  t.not(run.code, 0, 'the run fails')
  t.match(run.out, /not installed: tshark chromium\b/, 'names what is missing')
  t.match(run.out, /apt-get install -y --no-install-recommends tshark chromium\n/, 'and the one command that installs it')
  t.notMatch(run.out, /mqtt-guard@[^ ]+ test\n|eslint/, 'neither lint nor any test started')
  t.ok(Date.now() - started < 30_000, `stopped at once (${Date.now() - started} ms)`)
})

t.test('as root with apt-get, the missing packages are installed and the run goes on', async (t) => {
  const fake = path.join(home, 'fake-apt')
  mkdirSync(fake)
  const record = path.join(home, 'apt-get.log')
  // Records each call; "install" puts a stub of every stripped tool where PATH finds it.
  writeFileSync(path.join(fake, 'apt-get'), `#!/bin/sh\necho "$*" >> ${record}\ncase " $* " in *" install "*) for p in ${STRIPPED.join(' ')}; do printf '#!/bin/sh\\n' > ${fake}/$p; chmod +x ${fake}/$p; done;; esac\n`)
  writeFileSync(path.join(fake, 'debconf-set-selections'), '#!/bin/sh\ncat >/dev/null\n')
  chmodSync(path.join(fake, 'apt-get'), 0o755)
  chmodSync(path.join(fake, 'debconf-set-selections'), 0o755)
  const run = await npmTest(clone, { ...env, PATH: `${fake}:${bin}` })
  if (process.getuid?.() !== 0) {
    t.match(run.out, /sudo apt-get install -y --no-install-recommends tshark chromium/, 'not root: the command, with sudo')
    return
  }
  const calls = readFileSync(record, 'utf8').trim().split('\n')
  t.match(calls[0], /\bupdate\b/, 'apt-get update first')
  t.match(calls[1], /\binstall -y -qq --no-install-recommends tshark chromium$/, 'then installs exactly the missing packages')
  t.match(run.out, /installing tshark chromium[\s\S]*installed; continuing/, 'says so')
  t.match(run.out, /mqtt-guard@[^ ]+ test\n/, 'and the run goes on to lint and the tests (which fail here: this copy has no node_modules)')
})
