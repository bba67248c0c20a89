// The log module: long values cut with their size, the per-connection budget's rules (with a
// fake clock), a connection logger that binds who it is once, and a read of every log call in
// src/ and plugins/ for the field vocabulary.

import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { Writable } from 'node:stream'
import { createLogger, cut, cutFields, MAX_FIELD_CHARS } from '../../src/log/log.js'
import { BUDGET, LOG_BUDGET, LogBudget, SUMMARY_MSG, type Budgeted } from '../../src/log/budget.js'
import { ConnectionLog } from '../../src/proxy/connection-log.js'
import { LogSink, type LogLine } from '../helpers/log-sink.js'
import { ROOT } from '../helpers/cli-process.js'

/** Resolves once the sink has `n` lines (pino writes through a stream: wait for the event). */
async function lines (sink: LogSink, n: number): Promise<LogLine[]> {
  await sink.waitFor(() => sink.lines.length >= n)
  return sink.lines
}

t.test('cut: short values untouched (same object), long ones cut with their size in bytes', async (t) => {
  const short = { clientId: 'c1', topic: 'a/b' }
  t.equal(cutFields(short), short, 'nothing long: no copy')
  const id = 'é'.repeat(40_000) // 80 000 bytes in UTF-8
  const fields = { clientId: id, qos: 1 }
  const out = cutFields(fields)
  t.equal(out.clientId, `${'é'.repeat(MAX_FIELD_CHARS)}…`)
  t.match(out, { clientIdBytes: 80_000, qos: 1 })
  t.equal(fields.clientId, id, 'the caller\'s object is left alone')
  // An emoji (a surrogate pair) across the cut is not split.
  t.equal(cut(`${'a'.repeat(MAX_FIELD_CHARS - 1)}😀😀`), `${'a'.repeat(MAX_FIELD_CHARS - 1)}…`)

  const sink = new LogSink()
  sink.logger().info({ username: 'u'.repeat(65_535), topic: 't', key: `user:${'u'.repeat(300)}` }, 'long')
  const [line] = await lines(sink, 1)
  t.match(line, { username: `${'u'.repeat(MAX_FIELD_CHARS)}…`, usernameBytes: 65_535, topic: 't', keyBytes: 305 })
  t.equal(line?.topicBytes, undefined, 'no size for a value that was not cut')
})

function budgeted (sink: LogSink, budget: LogBudget): Budgeted {
  const log: Budgeted = sink.logger().child({ conn: 'x' })
  log[BUDGET] = budget
  return log
}

t.test('budget: N lines a window, then only the first of each kind; opened/closed always; one summary', async (t) => {
  let now = 1_000_000
  const budget = new LogBudget(() => now)
  const sink = new LogSink()
  const log = budgeted(sink, budget)
  log.info('connection opened')
  for (let i = 0; i < LOG_BUDGET.lines + 30; i++) log.info({ i }, 'acl denied')
  log.warn('auth refused') // another kind, past the budget: the first one still goes out
  log.warn('auth refused')
  log.child({ plugin: 'p' }).info('dedupe: duplicate removed') // a child of the connection's logger shares its budget
  log.info('connection closed')
  const all = await lines(sink, LOG_BUDGET.lines + 4)
  t.equal(all.filter((l) => l.msg === 'acl denied').length, LOG_BUDGET.lines)
  t.same(all.map((l) => l.msg).filter((m) => m !== 'acl denied'), ['connection opened', 'auth refused', 'dedupe: duplicate removed', 'connection closed'])

  now += LOG_BUDGET.windowMs // the next window: its first line comes after the last one's summary
  log.info({ i: -1 }, 'acl denied')
  const more = await lines(sink, LOG_BUDGET.lines + 6)
  t.match(more.slice(-2), [
    { msg: SUMMARY_MSG, level: 40, suppressed: 31, byMsg: { 'acl denied': 30, 'auth refused': 1 }, windowMs: LOG_BUDGET.windowMs },
    { msg: 'acl denied', i: -1 }
  ])
  t.equal(budget.flush(), undefined, 'nothing held back in the new window')
})

t.test('budget: the summary counts at most LOG_BUDGET.kinds kinds by name', async (t) => {
  const budget = new LogBudget(() => 0, { lines: 0, windowMs: 60_000, kinds: 2 })
  for (const msg of ['a', 'b', 'a', 'b', 'c', 'd', 'c']) budget.admit(msg)
  t.same(budget.flush(), { suppressed: 5, byMsg: { a: 1, b: 1, other: 3 }, windowMs: 60_000 })
})

t.test('budget: lines of a disabled level never reach it (nothing logged, nothing paid)', async (t) => {
  const budget = new LogBudget(() => 0, { lines: 0, windowMs: 60_000, kinds: 0 })
  const log: Budgeted = new LogSink().logger('warn').child({ conn: 'x' })
  log[BUDGET] = budget
  for (let i = 0; i < 1000; i++) log.info({ topic: 't' }, 'acl denied')
  t.equal(budget.flush(), undefined)
})

t.test('connection logger: who it is bound once, cut, rebound on change', async (t) => {
  const sink = new LogSink()
  const who = { conn: '1', address: '127.0.0.1', clientId: 'c'.repeat(65_535), username: undefined as string | undefined }
  const logs = new ConnectionLog(sink.logger(), () => who)
  t.equal(logs.log, logs.log, 'one child until rebound')
  logs.log.info({ plugin: 'acl' }, 'acl denied')
  who.username = 'alice'
  logs.rebind()
  logs.log.info('after')
  const [first, second] = await lines(sink, 2)
  t.match(first, { conn: '1', address: '127.0.0.1', clientId: `${'c'.repeat(MAX_FIELD_CHARS)}…`, clientIdBytes: 65_535, plugin: 'acl' })
  t.equal(first?.username, undefined)
  t.equal(second?.username, 'alice')
})

t.test('a plugin line on the connection\'s logger has each key once in the JSON text', async (t) => {
  // JSON.parse keeps the last of two equal keys: count them in the text pino wrote.
  const text: string[] = []
  const raw = new Writable({ write (chunk: Buffer, _enc, done) { text.push(chunk.toString()); done() } })
  const logs = new ConnectionLog(createLogger('info', raw), () => ({ conn: '1', address: '127.0.0.1', clientId: 'c1', username: 'alice' }))
  logs.log.info({ plugin: 'acl', action: 'publish', topic: 't', qos: 0, rule: 'default deny', ruleText: 'default deny' }, 'acl denied')
  await new Promise((resolve) => setImmediate(resolve))
  const line = text.join('')
  for (const key of ['conn', 'address', 'clientId', 'username', 'plugin', 'topic']) {
    t.equal(line.split(`"${key}":`).length - 1, 1, `${key} once`)
  }
})

// ---- every log call in src/ and plugins/ -------------------------------------------------

const LEVEL_CALL = /\b(?:log|logger)\.(?:trace|debug|info|warn|error|fatal)\(/g

function sources (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts'))
    .map((e) => path.join(e.parentPath, e.name))
}

/** Each log call's argument text, from `(` to its matching `)`. */
function logCalls (text: string): string[] {
  const calls: string[] = []
  for (const match of text.matchAll(LEVEL_CALL)) {
    let depth = 0
    const start = match.index + match[0].length - 1
    for (let i = start; i < text.length; i++) {
      if (text[i] === '(') depth++
      else if (text[i] === ')' && --depth === 0) {
        calls.push(text.slice(start + 1, i))
        break
      }
    }
  }
  return calls
}

t.test('every log call: one name per thing, no msg built from data, no repeat of what the connection binds', async (t) => {
  const files = [...sources(path.join(ROOT, 'src')), ...sources(path.join(ROOT, 'plugins'))]
  let count = 0
  for (const file of files) {
    const name = path.relative(ROOT, file)
    for (const call of logCalls(readFileSync(file, 'utf8'))) {
      count++
      t.notMatch(call, /\buser:/, `${name}: the user name is \`username\`: ${call.slice(0, 80)}`)
      t.notMatch(call, /\b(?:why|cid|client|ip|remote):/, `${name}: a field outside the vocabulary: ${call.slice(0, 80)}`)
      t.notMatch(call, /`[^`]*\$\{[^`]*`\s*$/, `${name}: msg is a constant: ${call.slice(0, 80)}`)
    }
    // The connection's logger (conn.log in plugins, this.log in the Connection) binds these.
    const own = name === path.join('src', 'connection.ts') ? /\b(?:conn\.log|this\.log)(?:\.\w+|\[\w+\])\((\{[^}]*\})/g : /\bconn\.log\.\w+\((\{[^}]*\})/g
    for (const m of readFileSync(file, 'utf8').matchAll(own)) {
      t.notMatch(m[1], /\b(?:conn|address|clientId|username):/, `${name}: bound by the connection's logger: ${m[1]?.slice(0, 80)}`)
    }
  }
  t.ok(count > 50, `${count} log calls read`)
})
