// acl: topic relations (cover, overlap, match, $-topics, shared subscriptions), %u/%c
// substitution that can never widen a rule (injection through user name and client ID), the
// YAML rules' first-match decisions, the SUBACK merge, and option errors naming their key.

import t from 'tap'
import { covers, levels, overlaps, unshare } from '../../plugins/acl/topic.js'
import { compilePattern } from '../../plugins/acl/pattern.js'
import { AclPolicy, type Action } from '../../plugins/acl/rules.js'
import { compileRules, validateOptions } from '../../plugins/acl/options.js'
import { SubackMerger } from '../../plugins/acl/suback.js'
import { isGuardError } from '../../src/errors.js'

const cov = (p: string, f: string): boolean => covers(levels(p), levels(f))
const ovl = (p: string, f: string): boolean => overlaps(levels(p), levels(f))

t.test('covers: an allow rule must cover every topic the filter matches', async (t) => {
  const table: Array<[string, string, boolean]> = [
    ['a/b', 'a/b', true], ['a/b', 'a/#', false], ['a/b', 'a/+', false],
    ['a/#', 'a/+', true], ['+/+', 'a/+', true], ['a/+', '+/x', false],
    ['a/#', 'a', true], ['a/#', 'a/#', true], ['a/#', 'a/b/c/#', true], ['a/+', 'a', false],
    ['#', '#', true], ['#', '+/x', true], ['+', 'a/b', false], ['a/+/c', 'a/+/c', true],
    ['a/+/c', 'a/b/#', false], ['a', 'a/b', false], ['a/b', 'a', false], ['+/#', '#', false],
    // $-topics are not matched by a first-level wildcard [MQTT-4.7.2-1]
    ['#', '$SYS/x', false], ['+/x', '$SYS/x', false], ['#', '$SYS/#', false],
    ['$SYS/#', '$SYS/broker/load', true], ['$SYS/#', '#', false], ['#', '+', true]
  ]
  for (const [p, f, want] of table) t.equal(cov(p, f), want, `covers(${p}, ${f})`)
})

t.test('overlaps: a deny rule applies to any filter that could receive what it denies', async (t) => {
  const table: Array<[string, string, boolean]> = [
    ['secret/#', '#', true], ['secret/#', '+/x', true], ['secret/a', 'public/#', false],
    ['a', 'a/#', true], ['a/b', 'a', false], ['+/b', 'a/+', true], ['a/b/c', 'a/+', false],
    ['#', '$SYS/x', false], ['$SYS/#', '#', false], ['$SYS/#', '$SYS/+', true], ['+', '$x', false]
  ]
  for (const [p, f, want] of table) t.equal(ovl(p, f), want, `overlaps(${p}, ${f})`)
})

t.test('shared subscriptions are judged on their filter', async (t) => {
  t.equal(unshare('$share/g/a/#'), 'a/#')
  t.equal(unshare('a/#'), 'a/#')
  t.equal(unshare('$share/g'), null)
  t.equal(unshare('$share//a'), null)
  t.equal(unshare('$share/g/'), null)
  t.equal(unshare('$share/+/a'), null)
})

t.test('%u and %c: a user name or client ID can never widen a rule', async (t) => {
  const p = compilePattern('users/%u/#')
  t.same(p.resolve({ user: 'bob', clientId: 'c' }), ['users', 'bob', '#'])
  for (const user of ['a/#', '+', '#', 'a/b', '', undefined, 'x\u0000']) {
    t.equal(p.resolve({ user, clientId: 'c' }), null, `user ${JSON.stringify(user)} yields no pattern`)
  }
  const c = compilePattern('dev-%c/state')
  t.same(c.resolve({ user: undefined, clientId: 'k1' }), ['dev-k1', 'state'])
  t.equal(c.resolve({ user: undefined, clientId: '+' }), null)
  t.equal(c.resolve({ user: undefined, clientId: '' }), null)
  const whole = compilePattern('a/x%u/%u', true)
  t.same(whole.resolve({ user: 'bob', clientId: 'c' }), ['a', 'x%u', 'bob'], 'acl_file mode: whole levels only')
})

const policy = (rules: unknown[], groups: Record<string, string[]> = {}): AclPolicy => {
  const options = validateOptions({ rules, groups })
  return new AclPolicy(compileRules(options.rules), options.groups, () => undefined)
}

function decide (p: AclPolicy, user: string | undefined, clientId: string, action: Action, topic: string, qos = 0, retain = false): string {
  const d = p.decide(p.principal({ user, clientId }), { action, topic, qos, retain })
  return `${d.allow ? 'allow' : 'deny'} ${d.rule}`
}

t.test('YAML rules: ordered, first match wins, default deny', async (t) => {
  const p = policy([
    { deny: 'receive', topic: 'secret/#' },
    { allow: ['publish', 'subscribe', 'receive'], topic: 'users/%u/#' },
    { allow: ['subscribe', 'receive'], topic: '#', groups: ['ops'] },
    { allow: 'publish', topic: 'dev/%c/state', qos: [0, 1], retain: false },
    { allow: 'subscribe', topic: 'public/#', anonymous: true },
    { allow: 'publish', topic: 'cmd/#', users: ['admin'], clients: ['console'] },
    { deny: 'subscribe', topic: 'public/private' },
    { allow: 'subscribe', topic: 'public/+' }
  ], { ops: ['olga'] })
  const table: Array<[string | undefined, string, Action, string, number, boolean, string]> = [
    ['bob', 'c1', 'publish', 'users/bob/x', 0, false, 'allow rules[1]'],
    ['bob', 'c1', 'subscribe', 'users/bob/#', 0, false, 'allow rules[1]'],
    ['bob', 'c1', 'subscribe', 'users/#', 0, false, 'deny default deny'],
    ['bob', 'c1', 'publish', 'users/alice/x', 0, false, 'deny default deny'],
    ['a/#', 'c1', 'publish', 'users/a/x', 0, false, 'deny default deny'],
    ['+', 'c1', 'subscribe', 'users/+/#', 0, false, 'deny default deny'],
    ['#', 'c1', 'subscribe', 'users/#', 0, false, 'deny default deny'],
    ['a/b', 'c1', 'publish', 'users/a/b/x', 0, false, 'deny default deny'],
    ['', 'c1', 'publish', 'users//x', 0, false, 'deny default deny'],
    ['olga', 'c', 'subscribe', '#', 0, false, 'allow rules[2]'],
    ['olga', 'c', 'receive', 'secret/plans', 0, false, 'deny rules[0]'],
    ['olga', 'c', 'receive', 'weather/now', 0, false, 'allow rules[2]'],
    ['olga', 'c', 'subscribe', '$SYS/#', 0, false, 'deny default deny'],
    ['olga', 'c', 'receive', '$SYS/broker/load', 0, false, 'deny default deny'],
    ['x', 'k1', 'publish', 'dev/k1/state', 1, false, 'allow rules[3]'],
    ['x', 'k1', 'publish', 'dev/k1/state', 2, false, 'deny default deny'],
    ['x', 'k1', 'publish', 'dev/k1/state', 0, true, 'deny default deny'],
    ['x', '+', 'publish', 'dev/+/state', 0, false, 'deny default deny'],
    [undefined, 'k', 'subscribe', 'public/#', 0, false, 'allow rules[4]'],
    ['bob', 'k', 'subscribe', 'public/#', 0, false, 'deny rules[6]'],
    [undefined, 'k', 'subscribe', '$share/g/public/#', 0, false, 'allow rules[4]'],
    ['admin', 'console', 'publish', 'cmd/reboot', 0, false, 'allow rules[5]'],
    ['admin', 'laptop', 'publish', 'cmd/reboot', 0, false, 'deny default deny'],
    ['bob', 'k', 'subscribe', 'public/+', 0, false, 'deny rules[6]'],
    ['bob', 'k', 'subscribe', 'public/news', 0, false, 'allow rules[7]']
  ]
  for (const [user, client, action, topic, qos, retain, want] of table) {
    t.equal(decide(p, user, client, action, topic, qos, retain), want, `${String(user)}/${client} ${action} ${topic} q${qos}${retain ? ' r' : ''}`)
  }
})

t.test('--group style extra groups count only for named users', async (t) => {
  const p = policy([{ allow: 'publish', topic: 'x', groups: ['g'] }], { g: [] })
  t.equal(p.decide(p.principal({ user: 'u', clientId: 'c' }, ['g']), { action: 'publish', topic: 'x', qos: 0, retain: false }).allow, true)
  t.equal(p.decide(p.principal({ user: undefined, clientId: 'c' }, ['g']), { action: 'publish', topic: 'x', qos: 0, retain: false }).allow, false)
})

t.test('SUBACK merge keeps the client order', async (t) => {
  const m = new SubackMerger()
  m.remember(7, 3, [1], 0x87)
  t.same(m.merge({ cmd: 'suback', messageId: 7, granted: [1, 0] })?.granted, [1, 0x87, 0])
  t.equal(m.merge({ cmd: 'suback', messageId: 7, granted: [1] }), undefined, 'used once')
  m.remember(8, 3, [0, 2], 0x80)
  t.same(m.merge({ cmd: 'suback', messageId: 8, granted: [] })?.granted, [0x80, 0x80, 0x80], 'missing codes are failures')
})

t.test('option errors start with the key', async (t) => {
  const err = (raw: Record<string, unknown>): string => {
    try { validateOptions(raw) } catch (e) { if (isGuardError(e)) return e.message; throw e }
    return 'no error'
  }
  t.equal(err({}), 'rules: give rules, aclFile, http or several (without any everything would be denied)')
  t.match(err({ rules: [{ allow: 'publish', deny: 'publish', topic: 'a' }] }), /^rules\[0\]: give exactly one/)
  t.match(err({ rules: [{ allow: 'write', topic: 'a' }] }), /^rules\[0\]\.allow: expected publish, subscribe, receive/)
  t.match(err({ rules: [{ allow: 'publish', topic: 'a/#/b' }] }), /^rules\[0\]\.topic: "#" must be/)
  t.match(err({ rules: [{ allow: 'publish', topic: 'a', groups: ['nope'] }] }), /^rules\[0\]\.groups: unknown group "nope"/)
  t.match(err({ rules: [{ allow: 'publish', topic: 'a', qos: [3] }] }), /^rules\[0\]\.qos\[0\]: expected 0, 1 or 2, got 3/)
  t.match(err({ rules: [{ allow: 'publish', topic: 'a', colour: 1 }] }), /^rules\[0\]\.colour: unknown key/)
  t.match(err({ rules: [], onDeniedPublish: 'explode' }), /^onDeniedPublish: expected one of drop, disconnect/)
  t.match(err({ rules: [], groups: { g: 'bob' } }), /^groups\.g: expected a list of strings/)
  t.equal(validateOptions({ rules: [] }).onDeniedPublish, 'drop')
})
