// Mosquitto password files as Debian's mosquitto_passwd writes them ($6$ and $7$), our
// $scrypt$ format, the brute-force counter, and the passwd command's file edits.

import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import {
  formatHash, hashPbkdf2, hashScrypt, parseHash, parsePasswordFile, verifyPassword, type PasswordHash
} from '../../plugins/auth/password-file.js'
import { BruteForce } from '../../plugins/auth/brute-force.js'
import { validateOptions } from '../../plugins/auth/options.js'
import { editLines, passwdCommand } from '../../plugins/auth/passwd.js'

const run = promisify(execFile)
const MOSQUITTO_PASSWD = process.env['MOSQUITTO_PASSWD_BIN'] ?? 'mosquitto_passwd'

const dir = await mkdtemp(join(tmpdir(), 'mqtt-guard-pwfile-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))

async function mosquittoFile (name: string, hashArgs: string[], users: Record<string, string>): Promise<string> {
  const file = join(dir, name)
  let first = true
  for (const [user, password] of Object.entries(users)) {
    await run(MOSQUITTO_PASSWD, [...hashArgs, ...(first ? ['-c'] : []), '-b', file, user, password])
    first = false
  }
  return file
}

function userHash (file: { users: Map<string, PasswordHash> }, user: string): PasswordHash {
  const hash = file.users.get(user)
  if (hash === undefined) throw new Error(`no user ${user}`)
  return hash
}

for (const [kind, args] of [['7', []], ['6', ['-H', 'sha512']]] as const) {
  t.test(`mosquitto_passwd ${kind === '7' ? 'default ($7$ PBKDF2-SHA512)' : '-H sha512 ($6$)'} file verifies`, async (t) => {
    const file = await mosquittoFile(`mosq${kind}`, [...args], { alice: 'wonder land', bob: 'p@ss:w$rd', 'carol.x': 'ünïcödé' })
    const text = await readFile(file, 'utf8')
    t.match(text, new RegExp(`^alice:\\$${kind}\\$`, 'm'))
    const parsed = parsePasswordFile(text, file)
    t.same([...parsed.users.keys()], ['alice', 'bob', 'carol.x'])
    t.equal(userHash(parsed, 'alice').kind, kind)
    t.equal(await verifyPassword(userHash(parsed, 'alice'), 'wonder land'), true)
    t.equal(await verifyPassword(userHash(parsed, 'bob'), 'p@ss:w$rd'), true)
    t.equal(await verifyPassword(userHash(parsed, 'carol.x'), 'ünïcödé'), true)
    t.equal(await verifyPassword(userHash(parsed, 'alice'), 'wonder lanD'), false)
    t.equal(await verifyPassword(userHash(parsed, 'alice'), ''), false)
    t.equal(await verifyPassword(userHash(parsed, 'bob'), 'wonder land'), false)
    t.equal(parsed.dummy.kind, kind, 'dummy hash has the kind most users have')
    t.equal(await verifyPassword(parsed.dummy, 'wonder land'), false)
    // Our formatter writes back exactly what mosquitto_passwd wrote.
    t.equal(formatHash(userHash(parsed, 'alice')), text.split('\n')[0]?.slice('alice:'.length))
  })
}

t.test('$7$ iterations come from the file', async (t) => {
  const hash = await hashPbkdf2('s3cret', 1000)
  const text = formatHash(hash)
  t.match(text, /^\$7\$1000\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$/)
  t.equal(await verifyPassword(parseHash(text), 's3cret'), true)
  const other = text.replace('$7$1000$', '$7$999$')
  t.equal(await verifyPassword(parseHash(other), 's3cret'), false)
})

t.test('$scrypt$ round trip', async (t) => {
  const hash = await hashScrypt('s3cret', { N: 1024, r: 8, p: 1 })
  const text = formatHash(hash)
  t.match(text, /^\$scrypt\$1024\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/)
  t.equal(await verifyPassword(parseHash(text), 's3cret'), true)
  t.equal(await verifyPassword(parseHash(text), 's3cres'), false)
  const defaults = formatHash(await hashScrypt('x'))
  t.match(defaults, /^\$scrypt\$16384\$8\$1\$/)
})

t.test('comments, blank lines, CRLF and blanks are Mosquitto-style', async (t) => {
  const alice = formatHash(await hashPbkdf2('a'))
  const parsed = parsePasswordFile(`# users\n\n  alice  : ${alice} \r\n#bob:${alice}\n`)
  t.same([...parsed.users.keys()], ['alice'])
  t.equal(await verifyPassword(userHash(parsed, 'alice'), 'a'), true)
})

t.test('broken files are rejected with file and line', async (t) => {
  const good = formatHash(await hashPbkdf2('a'))
  const cases: Array<[string, RegExp]> = [
    [`alice:${good}\nbob\n`, /^f:2: no ":"/],
    [`alice:${good}\n:${good}\n`, /^f:2: empty user name/],
    [`alice:\n`, /^f:1: user "alice" has no password hash/],
    [`alice:plaintext\n`, /^f:1: user "alice": hash does not start with "\$"/],
    [`alice:$5$abc$def\n`, /^f:1: user "alice": unknown hash type "\$5\$"/],
    [`alice:$7$x$abc$def\n`, /iterations is not a number/],
    [`alice:$7$101$ab!c$def\n`, /salt is not base64/],
    [`alice:$scrypt$1000$8$1$abc$def\n`, /N 1000 is not a power of two/],
    [`alice:$7$101$c2FsdHNhbHRzYWx0$${Buffer.alloc(57).toString('base64')}\n`, /hash has 57 bytes, expected 64/],
    [`alice:$6$c2FsdA==$aGFzaA==\n`, /hash has 4 bytes, expected 64/],
    [`alice:${good}\nalice:${good}\n`, /^f:2: user "alice" is defined twice/]
  ]
  for (const [text, message] of cases) t.throws(() => parsePasswordFile(text, 'f'), message, JSON.stringify(text))
})

t.test('brute force: blocks after maxFailures within the window, then expires', async (t) => {
  let now = 1000
  const bf = new BruteForce({ maxFailures: 3, windowMs: 100, blockMs: 500, maxKeys: 10 }, () => now)
  const keys = ['address:1.2.3.4', 'user:bob']
  t.same(bf.failed(keys).blocked, [])
  t.same(bf.failed(keys).blocked, [])
  now += 150 // window over: counting starts again
  t.same(bf.failed(keys).blocked, [])
  t.same(bf.failed(keys).blocked, [])
  t.equal(bf.blocked(keys), undefined)
  t.same(bf.failed(keys).blocked, [{ key: 'address:1.2.3.4', failures: 3, until: 1650 }, { key: 'user:bob', failures: 3, until: 1650 }])
  t.same(bf.blocked(['user:bob']), { key: 'user:bob', until: 1650 })
  t.same(bf.blocked(['address:9.9.9.9', 'user:bob']), { key: 'user:bob', until: 1650 })
  bf.succeeded('user:bob') // does not lift a block
  t.same(bf.blocked(['user:bob']), { key: 'user:bob', until: 1650 })
  now = 1650
  t.equal(bf.blocked(keys), undefined)
  for (let i = 0; i < 20; i++) bf.failed([`user:random${i}`])
  t.ok(bf.size <= 10, 'bounded')
})

t.test('options: defaults and errors name the key', async (t) => {
  await writeFile(join(dir, 'p'), '')
  // A relative passwordFile resolves against the config's folder and must exist there.
  const ctx = { configDir: dir, redis: true }
  t.same(validateOptions({ passwordFile: 'p' }, ctx), {
    passwordFile: join(dir, 'p'), allowAnonymous: false, upstreamCredentials: 'passthrough',
    bruteForce: { maxFailures: 5, windowMs: 60000, blockMs: 300000, maxKeys: 100000 }, watch: true, redisTimeoutMs: 1000, certificateUser: 'off'
  })
  t.throws(() => validateOptions({ passwordFile: 'absent' }, ctx), { code: 'GUARD_ERR_CONFIG', message: `passwordFile: file ${join(dir, 'absent')} does not exist` })
  t.same(validateOptions({ redisUsers: { cacheMs: 0 }, bruteForce: false, upstreamCredentials: { username: 'proxy', password: 'x' } }, ctx).redisUsers, { cacheMs: 0 })
  t.throws(() => validateOptions({ redisUsers: true }, { configDir: dir, redis: false }), /^redisUsers: needs the top-level redis setting/)
  t.throws(() => validateOptions({ passwordFile: 'p', redisTimeoutMs: 0 }, ctx), /^redisTimeoutMs: expected an integer >= 1, got 0/)
  t.throws(() => validateOptions({ redisUsers: { timeoutMs: 5 } }, ctx), /^redisUsers.timeoutMs: unknown key \(expected one of cacheMs\)/)
  t.throws(() => validateOptions({}, ctx), /^passwordFile: required unless/)
  t.throws(() => validateOptions({ passwordFile: 'p', upstreamCredentials: 'drop' }, ctx), /^upstreamCredentials: expected one of passthrough, strip, or \{ username, password \}, got "drop"/)
  t.throws(() => validateOptions({ passwordFile: 'p', upstreamCredentials: { username: '' } }, ctx), /^upstreamCredentials.username:/)
  t.throws(() => validateOptions({ passwordFile: 'p', bruteForce: { maxFailures: 0 } }, ctx), /^bruteForce.maxFailures: expected an integer >= 1/)
  t.throws(() => validateOptions({ passwordFile: 'p', allowAnonymous: 'yes' }, ctx), /^allowAnonymous: expected true or false, got "yes"/)
  t.throws(() => validateOptions({ passwordFile: 'p', pasword: 'x' }, ctx), /^pasword: unknown key \(expected one of passwordFile, /)
})

t.test('editLines keeps other lines and comments, replaces in place', async (t) => {
  const lines = ['# head', 'alice:$7$1$a$b', '', 'bob:$6$a$b', '# tail']
  t.same(editLines(lines, 'bob', 'bob:NEW'), { lines: ['# head', 'alice:$7$1$a$b', '', 'bob:NEW', '# tail'], found: true })
  t.same(editLines(lines, 'carol', 'carol:NEW').lines, [...lines, 'carol:NEW'])
  t.same(editLines(lines, 'alice', undefined), { lines: ['# head', '', 'bob:$6$a$b', '# tail'], found: true })
  t.same(editLines(lines, '#', undefined).found, false)
})

t.test('passwd command: creates, changes, deletes; Mosquitto-compatible $7$', async (t) => {
  const file = join(dir, 'cmd-passwd')
  t.equal(await passwdCommand([file, 'alice', '--password', 'first']), 0)
  t.equal((await stat(file)).mode & 0o077, 0, 'new file is private')
  await writeFile(file, `# managed by hand\n${await readFile(file, 'utf8')}`)
  t.equal(await passwdCommand([file, 'bob', '--password', 'b0b', '--scrypt']), 0)
  t.equal(await passwdCommand([file, 'alice', '--password', 'second']), 0)
  let text = await readFile(file, 'utf8')
  t.match(text, /^# managed by hand\nalice:\$7\$101\$[^\n]+\nbob:\$scrypt\$16384\$8\$1\$[^\n]+\n$/)
  let parsed = parsePasswordFile(text)
  t.equal(await verifyPassword(userHash(parsed, 'alice'), 'second'), true)
  t.equal(await verifyPassword(userHash(parsed, 'alice'), 'first'), false)
  t.equal(await verifyPassword(userHash(parsed, 'bob'), 'b0b'), true)
  t.equal(await passwdCommand([file, 'alice', '--delete']), 0)
  t.equal(await passwdCommand([file, 'alice', '--delete']), 1, 'deleting a missing user fails')
  text = await readFile(file, 'utf8')
  parsed = parsePasswordFile(text)
  t.same([...parsed.users.keys()], ['bob'])
  t.equal(await passwdCommand([file, 'a:b', '--password', 'x']), 2, 'user name with ":" refused')
  t.equal(await passwdCommand([file]), 2)
  t.equal(await readFile(file, 'utf8'), text, 'refused commands leave the file alone')
})
