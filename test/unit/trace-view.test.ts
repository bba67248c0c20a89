// `mqtt-guard trace view`: formatLine as tables (paths, verdicts, reason names for MQTT 5 and
// 3.1.1, payload kinds, round trips, colours, alignment), and viewCommand on temporary files:
// lines that are not packets are skipped, --client filters, --follow prints what is appended,
// waits for the newline of a half-written line, and starts over when the file is truncated.

import t from 'tap'
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TraceLine } from '../../plugins/trace/format.js'
import { formatLine, viewCommand } from '../../plugins/trace/view.js'

const dir = await mkdtemp(join(tmpdir(), 'mqtt-guard-trace-view-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))

// 2023-11-14T22:13:20.123456Z
const BASE: TraceLine = {
  level: 30, time: 1_700_000_000_123, msg: 'packet', us: 1_700_000_000_123_456, trace: 'config', instance: 'i1',
  conn: 'c1', clientId: 'sensor-1', address: '127.0.0.1', port: 50_000, leg: 'client', dir: 'up',
  verdict: 'forwarded', type: 'publish', protocolVersion: 5, size: 64
}
const plain = { color: false }
const ESC = '\x1b['
// Column starts: time 15, client 20, path 13, type 11 wide, two spaces between.
const COLUMNS = { client: 17, path: 39, proxy: 45, type: 54, details: 67 }

function line (over: Partial<TraceLine>): TraceLine {
  return { ...BASE, ...over }
}

function details (over: Partial<TraceLine>): string {
  return formatLine(line(over), plain).slice(COLUMNS.details)
}

t.test('the time is UTC with microseconds, the client ID is padded or cut to 20', async (t) => {
  const text = formatLine(line({ id: 7, qos: 1, topic: 'a/b' }), plain)
  t.equal(text.slice(0, COLUMNS.client), '22:13:20.123456  ')
  t.equal(text.slice(COLUMNS.client, COLUMNS.path), 'sensor-1              ')
  const long = formatLine(line({ clientId: 'a-very-long-client-identifier-123' }), plain)
  t.equal(long.slice(COLUMNS.client, COLUMNS.path), 'a-very-long-client-…  ')
  t.equal(formatLine(line({ clientId: '' }), plain).slice(COLUMNS.client, COLUMNS.path).trim(), '(empty)')
  t.equal(formatLine(line({ us: 1_700_000_000_000_007 }), plain).slice(0, 15), '22:13:20.000007')
})

t.test('each leg and direction has its path, with the proxy in one column', async (t) => {
  const rows = [
    ['client', 'up', 'C ──▶ P      '],
    ['broker', 'up', '      P ──▶ B'],
    ['broker', 'down', '      P ◀── B'],
    ['client', 'down', 'C ◀── P      ']
  ] as const
  for (const [leg, dir, path] of rows) {
    const text = formatLine(line({ leg, dir }), plain)
    t.equal(text.slice(COLUMNS.path, COLUMNS.path + path.length), path, `${leg} ${dir}`)
  }
})

t.test('verdicts other than forwarded and sent are spelled out', async (t) => {
  const rows: Array<[Partial<TraceLine>, string]> = [
    [{ verdict: 'forwarded' }, '64 B'],
    [{ verdict: 'sent', leg: 'broker' }, '64 B'],
    [{ verdict: 'dropped', plugin: 'acl' }, '64 B DROPPED by acl'],
    [{ verdict: 'answered', plugin: 'dedupe' }, '64 B ANSWERED by dedupe'],
    [{ verdict: 'refused', plugin: 'auth', type: 'connect' }, '64 B REFUSED by auth'],
    [{ verdict: 'refused' }, '64 B REFUSED'],
    [{ verdict: 'proxy', type: 'puback', dir: 'down', plugin: 'dedupe' }, '64 B made by proxy (dedupe)'],
    [{ verdict: 'proxy', type: 'connack', dir: 'down' }, '64 B made by proxy']
  ]
  for (const [over, want] of rows) t.equal(details(over), want, JSON.stringify(over))
})

t.test('reason codes are named for MQTT 5 and 3.1.1', async (t) => {
  const rows: Array<[Partial<TraceLine>, string]> = [
    [{ type: 'puback', reasonCode: 0x10 }, '[reason 0x10 no matching subscribers]'],
    [{ type: 'puback', reasonCode: 0x87 }, '[reason 0x87 not authorized]'],
    [{ type: 'connack', reasonCode: 0 }, '[reason 0x00 success]'],
    [{ type: 'connack', reasonCode: 0x8a }, '[reason 0x8A banned]'],
    [{ type: 'connack', reasonCode: 0x86 }, '[reason 0x86 bad user name or password]'],
    [{ type: 'disconnect', reasonCode: 0x8e }, '[reason 0x8E session taken over]'],
    [{ type: 'disconnect', reasonCode: 0 }, '[reason 0x00 normal disconnection]'],
    [{ type: 'disconnect', reasonCode: 0x9f }, '[reason 0x9F connection rate exceeded]'],
    [{ type: 'puback', reasonCode: 0x7f }, '[reason 0x7F]'],
    [{ type: 'connack', reasonCode: 1, protocolVersion: 4 }, '[reason 0x01 unacceptable protocol version]'],
    [{ type: 'connack', reasonCode: 2, protocolVersion: 4 }, '[reason 0x02 identifier rejected]'],
    [{ type: 'connack', reasonCode: 4, protocolVersion: 3 }, '[reason 0x04 bad user name or password]'],
    [{ type: 'connack', reasonCode: 5, protocolVersion: 4 }, '[reason 0x05 not authorized]'],
    [{ type: 'suback', reasonCodes: [1, 0x80], protocolVersion: 4 }, '[reasons 0x01 granted qos 1, 0x80 failure]'],
    [{ type: 'suback', reasonCodes: [0, 0x87] }, '[reasons 0x00 granted qos 0, 0x87 not authorized]']
  ]
  for (const [over, want] of rows) t.equal(details({ size: undefined, ...over }), want, JSON.stringify(over))
})

t.test('details: packet ID, flags, topic, filters, CONNECT', async (t) => {
  t.equal(details({ id: 7, qos: 1, dup: true, retain: true, topic: 'a/b' }), '#7 q1 dup retain a/b 64 B')
  t.equal(details({ topic: 'a/b', topicAlias: 3, qos: 0 }), 'q0 a/b alias 3 64 B')
  t.equal(details({ type: 'pubrel', id: 9, qos: 1 }), '#9 64 B', 'the fixed QoS bits of PUBREL say nothing')
  t.equal(details({ type: 'subscribe', id: 2, filters: [{ topic: 'a/+', qos: 1 }, { topic: '#', qos: 0 }] }), '#2 a/+ q1, # q0 64 B')
  t.equal(details({ type: 'unsubscribe', id: 3, filters: [{ topic: 'a/+' }] }), '#3 a/+ 64 B')
  t.equal(details({ type: 'connect', username: 'alice', connect: { clean: true, keepalive: 60, hasPassword: true } }),
    'v5 clean keepalive 60 user alice password 64 B')
  t.equal(details({
    type: 'connect', protocolVersion: 4, connect: { clean: false, keepalive: 30, hasPassword: false, will: { topic: 'w', qos: 1, retain: true } }
  }), 'v3.1.1 resume keepalive 30 will w q1 retain 64 B')
})

t.test('payloads: text, long text, hex, hash', async (t) => {
  const long = 'x'.repeat(60)
  const rows: Array<[TraceLine['payload'], string]> = [
    [{ bytes: 5, text: 'hello' }, '"hello" (5 B)'],
    [{ bytes: 60, text: long }, `"${'x'.repeat(40)}"… (60 B)`],
    [{ bytes: 300, text: 'cut short', truncated: true }, '"cut short"… (300 B)'],
    [{ bytes: 2, text: 'a"\n' }, '"a\\"\\n" (2 B)'],
    [{ bytes: 3, hex: '00ff10' }, 'hex:00ff10 (3 B)'],
    [{ bytes: 40, hex: 'ab'.repeat(40) }, `hex:${'ab'.repeat(16)}… (40 B)`],
    [{ bytes: 1000, sha256: 'abcd1234'.repeat(8) }, 'sha256:abcd1234… (1000 B)'],
    [{ bytes: 0 }, '(0 B)']
  ]
  for (const [payload, want] of rows) t.equal(details({ topic: 't', payload }), `t ${want} 64 B`, want)
})

t.test('control characters from the network do not reach the terminal', async (t) => {
  const text = formatLine(line({ clientId: 'evil\x1b[2J', topic: 'a\x07', payload: { bytes: 3, text: '\x1b\x9b!' } }), plain)
  t.notOk(text.includes('\x1b'), 'no ESC')
  t.notOk(text.includes('\x9b'), 'no CSI')
  t.match(text, /evil\\x1b\[2J/)
  t.match(text, /a\\x07/)
})

t.test('round trips, slow ones yellow', async (t) => {
  t.equal(details({ type: 'puback', rttUs: 410 }), '64 B rtt 0.41 ms')
  t.equal(details({ type: 'connack', rttUs: 150_000 }), '64 B rtt 150.00 ms')
  t.match(formatLine(line({ rttUs: 150_000 }), { color: true }), `${ESC}33mrtt 150.00 ms${ESC}0m`)
  t.notMatch(formatLine(line({ rttUs: 99_000 }), { color: true }), `${ESC}33m`)
})

t.test('colours only when asked for', async (t) => {
  const lines = [
    line({ verdict: 'dropped', plugin: 'acl', rttUs: 200_000 }),
    line({ leg: 'broker', type: 'connack', dir: 'down', reasonCode: 0 }),
    line({ type: 'puback', reasonCode: 0x87, dir: 'down' })
  ]
  for (const l of lines) t.notOk(formatLine(l, plain).includes('\x1b'), `${l.type} plain`)
  const [dropped, connack, puback] = lines.map((l) => formatLine(l, { color: true }))
  t.ok(dropped?.startsWith(`${ESC}2m22:13:20.123456${ESC}0m`), 'dim time')
  t.match(dropped, `${ESC}36mC ──▶ P      ${ESC}0m`, 'cyan client leg')
  t.match(dropped, `${ESC}31mDROPPED by acl${ESC}0m`, 'red dropped')
  t.match(connack, `${ESC}35m      P ◀── B${ESC}0m`, 'magenta broker leg')
  t.match(connack, `${ESC}32m0x00 success${ESC}0m`, 'green successful CONNACK')
  t.match(puback, `${ESC}31m0x87 not authorized${ESC}0m`, 'red reason code >= 0x80')
  t.match(formatLine(line({ type: 'connack', reasonCode: 5, protocolVersion: 4 }), { color: true }), `${ESC}31m0x05 not authorized`)
  t.match(formatLine(line({ verdict: 'refused', plugin: 'auth' }), { color: true }), `${ESC}31mREFUSED by auth`)
})

t.test('lines of a set align: the proxy and the packet type in the same columns', async (t) => {
  const lines = [
    line({ type: 'connect', connect: { clean: true, keepalive: 60, hasPassword: false } }),
    line({ clientId: 'x', leg: 'broker', type: 'connack', dir: 'down', reasonCode: 0 }),
    line({ clientId: 'a-very-long-client-identifier-123', leg: 'broker', type: 'unsubscribe', filters: [{ topic: 'a' }] }),
    line({ clientId: 'ünïcødé-☃', dir: 'down', type: 'pingresp', size: 2 }),
    line({ type: 'publish', qos: 1, id: 65535, topic: 'a/b', verdict: 'dropped', plugin: 'acl' })
  ]
  for (const l of lines) {
    const text = formatLine(l, plain)
    t.equal(text[COLUMNS.proxy], 'P', `${l.type}: the proxy's column`)
    t.equal(text.slice(COLUMNS.type - 2, COLUMNS.type), '  ', `${l.type}: a gap before the type`)
    t.ok(text.slice(COLUMNS.type).startsWith(l.type.toUpperCase()), `${l.type}: the type's column`)
  }
})

function capture (): { out: () => string, err: () => string, io: { write: (s: string) => void, writeError: (s: string) => void } } {
  let out = ''
  let err = ''
  return { out: () => out, err: () => err, io: { write: (s) => { out += s }, writeError: (s) => { err += s } } }
}

const json = (over: Partial<TraceLine>): string => JSON.stringify(line(over))

t.test('viewCommand: packets only, one header, --client', async (t) => {
  const file = join(dir, 'mixed.log')
  await writeFile(file, [
    json({ clientId: 'sensor-1', type: 'connect', connect: { clean: true, keepalive: 60, hasPassword: false } }),
    'not json at all',
    JSON.stringify({ level: 30, time: 1, msg: 'listening', port: 1884 }),
    '',
    json({ clientId: 'other', topic: 'a/b', qos: 0 }),
    '[1, 2]',
    json({ clientId: 'sensor-2', topic: 'c/d', qos: 0 }) // no newline at the end
  ].join('\n'))

  const all = capture()
  t.equal(await viewCommand([file, '--no-color'], all.io), 0)
  const lines = all.out().trimEnd().split('\n')
  t.equal(lines.length, 4, 'a header and three packets')
  t.match(lines[0], /^TIME \(UTC\) {7}CLIENT {16}C {5}P {5}B {2}PACKET {7}DETAILS$/)
  t.match(lines[1], /sensor-1 .* CONNECT +v5 clean keepalive 60/)
  t.match(lines[3], /sensor-2 .* PUBLISH +q0 c\/d 64 B$/, 'the last line without a newline counts')
  t.equal(all.err(), '')

  const some = capture()
  t.equal(await viewCommand([file, '--no-color', '--client', 'sensor-?'], some.io), 0)
  t.same(some.out().trimEnd().split('\n').slice(1).map((l) => l.slice(COLUMNS.client, COLUMNS.path).trim()), ['sensor-1', 'sensor-2'])

  const none = capture()
  t.equal(await viewCommand([file, '--client', 'nobody*'], none.io), 0)
  t.equal(none.out(), '', 'no header without lines')
})

t.test('viewCommand: usage and unreadable files', async (t) => {
  const rows: Array<[string[], number, RegExp]> = [
    [[], 2, /expected one FILE\n\nUsage: mqtt-guard trace view/],
    [['a', 'b'], 2, /expected one FILE/],
    [['--bogus', 'a'], 2, /Unknown option '--bogus'/],
    [[join(dir, 'missing.log')], 1, /cannot read .*missing\.log: ENOENT/],
    [[dir], 1, /cannot read .*EISDIR/]
  ]
  for (const [args, code, err] of rows) {
    const c = capture()
    t.equal(await viewCommand(args, c.io), code, args.join(' '))
    t.match(c.err(), err)
    t.equal(c.out(), '')
  }
  const help = capture()
  t.equal(await viewCommand(['--help'], help.io), 0)
  t.match(help.out(), /^Usage: mqtt-guard trace view FILE/)
})

t.test('viewCommand --follow: appended lines, half-written lines, truncation', async (t) => {
  const file = join(dir, 'follow.log')
  const first = json({ id: 1, topic: 'first', qos: 1 })
  const second = json({ id: 2, topic: 'second', qos: 1 })
  await writeFile(file, `${first}\n${second.slice(0, 50)}`)

  let out = ''
  let waiting: { text: string, resolve: () => void } | undefined
  const printed = (text: string): Promise<void> => new Promise((resolve) => {
    if (out.includes(text)) resolve()
    else waiting = { text, resolve }
  })
  const write = (s: string): void => {
    out += s
    if (waiting !== undefined && out.includes(waiting.text)) waiting.resolve()
  }
  const controller = new AbortController()
  t.teardown(() => { controller.abort() })
  const done = viewCommand([file, '--follow', '--no-color'], { write, writeError: write, signal: controller.signal, pollMs: 5 })

  // The first read took the whole file, half of the second line included.
  await printed('#1 q1 first')
  t.notMatch(out, /second/, 'half a line waits for its newline')
  await appendFile(file, `${second.slice(50)}\n${json({ id: 3, topic: 'third', qos: 1 })}\n`)
  await printed('#3 q1 third')
  t.match(out, /#2 q1 second 64 B\n/, 'the two halves made one line')

  await writeFile(file, `${json({ id: 4, topic: 'after', qos: 1 })}\n`)
  await printed('#4 q1 after')

  controller.abort()
  t.equal(await done, 0)
  t.equal(out.split('\n').filter((l) => l.startsWith('TIME')).length, 1, 'one header')
  t.equal(out.trimEnd().split('\n').length, 5)
})
