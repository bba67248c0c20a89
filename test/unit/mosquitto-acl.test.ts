// acl: Mosquitto acl_file fixtures read with Mosquitto 2's meaning (anonymous block before the
// first `user` line, pattern lines for everyone, deny lines first, read = subscribe + receive,
// write = publish, no match = deny), the file:line that decided, and refused files.

import t from 'tap'
import { parseMosquittoAcl } from '../../plugins/acl/mosquitto-acl.js'
import { AclPolicy, type Action } from '../../plugins/acl/rules.js'
import { compileRules } from '../../plugins/acl/options.js'

const FIXTURE = `# anonymous clients
topic read public/#
topic readwrite sandbox/+

user alice
topic readwrite alice/#
topic write telemetry/#
topic deny alice/secret/#
topic    read    spaced topic/x

user bob
topic bob/#
topic read $SYS/broker/clients/#

# everyone
pattern readwrite devices/%c/#
pattern read inbox/%u
pattern deny devices/%c/locked
`

const acl = parseMosquittoAcl(FIXTURE, 'acl.conf')
const policy = new AclPolicy(compileRules([]), {}, () => acl)

function decide (user: string | undefined, clientId: string, action: Action, topic: string): string {
  const d = policy.decide(policy.principal({ user, clientId }), { action, topic, qos: 0, retain: false })
  return `${d.allow ? 'allow' : 'deny'} ${d.rule}`
}

t.test('fixture decisions', async (t) => {
  const table: Array<[string | undefined, string, Action, string, string]> = [
    [undefined, 'anon', 'subscribe', 'public/#', 'allow acl.conf:2'],
    [undefined, 'anon', 'receive', 'public/news', 'allow acl.conf:2'],
    [undefined, 'anon', 'publish', 'public/news', 'deny default deny'],
    [undefined, 'anon', 'publish', 'sandbox/a', 'allow acl.conf:3'],
    [undefined, 'anon', 'subscribe', 'sandbox/#', 'deny default deny'],
    [undefined, 'anon', 'publish', 'alice/x', 'deny default deny'],
    ['alice', 'a1', 'publish', 'alice/x/y', 'allow acl.conf:6'],
    ['alice', 'a1', 'subscribe', 'alice/#', 'deny acl.conf:8'],
    ['alice', 'a1', 'publish', 'alice/secret/k', 'deny acl.conf:8'],
    ['alice', 'a1', 'receive', 'alice/secret', 'deny acl.conf:8'],
    ['alice', 'a1', 'publish', 'telemetry/t', 'allow acl.conf:7'],
    ['alice', 'a1', 'receive', 'telemetry/t', 'deny default deny'],
    ['alice', 'a1', 'subscribe', 'spaced topic/x', 'allow acl.conf:9'],
    ['alice', 'a1', 'subscribe', 'public/#', 'deny default deny'],
    ['bob', 'b1', 'publish', 'bob/1', 'allow acl.conf:12'],
    ['bob', 'b1', 'subscribe', 'bob/#', 'allow acl.conf:12'],
    ['bob', 'b1', 'subscribe', '$SYS/broker/clients/connected', 'allow acl.conf:13'],
    ['bob', 'b1', 'subscribe', '$SYS/#', 'deny default deny'],
    ['bob', 'b1', 'publish', '$SYS/broker/clients/x', 'deny default deny'],
    ['bob', 'dev7', 'publish', 'devices/dev7/temp', 'allow acl.conf:16'],
    ['bob', 'dev7', 'publish', 'devices/dev7/locked', 'deny acl.conf:18'],
    ['bob', 'dev7', 'publish', 'devices/dev8/temp', 'deny default deny'],
    ['carol', 'c', 'receive', 'inbox/carol', 'allow acl.conf:17'],
    ['carol', 'c', 'publish', 'inbox/carol', 'deny default deny'],
    [undefined, 'dev7', 'publish', 'devices/dev7/x', 'allow acl.conf:16'],
    [undefined, 'c', 'receive', 'inbox/%u', 'deny default deny'],
    // Dangerous names: Mosquitto refuses the pattern lines outright when one holds + or #.
    ['+', 'c', 'receive', 'inbox/+', 'deny acl.conf'],
    ['a/#', 'c', 'receive', 'inbox/a/#', 'deny acl.conf'],
    ['x', '#', 'publish', 'devices/#', 'deny acl.conf'],
    ['a/b', 'c', 'receive', 'inbox/a/b', 'deny default deny'],
    ['x', 'a/b', 'publish', 'devices/a/b/c', 'deny default deny'],
    ['', 'c', 'receive', 'inbox/', 'deny default deny']
  ]
  for (const [user, client, action, topic, want] of table) {
    t.equal(decide(user, client, action, topic), want, `${String(user)}/${client} ${action} ${topic}`)
  }
})

t.test('YAML rules decide before the acl_file', async (t) => {
  const both = new AclPolicy(compileRules([{ deny: 'publish', topic: 'bob/private' }]), {}, () => acl)
  const d = both.decide(both.principal({ user: 'bob', clientId: 'b' }), { action: 'publish', topic: 'bob/private', qos: 0, retain: false })
  t.same([d.allow, d.rule], [false, 'rules[0]'])
  const e = both.decide(both.principal({ user: 'bob', clientId: 'b' }), { action: 'publish', topic: 'bob/public', qos: 0, retain: false })
  t.same([e.allow, e.rule, e.text], [true, 'acl.conf:12', 'topic bob/#'])
})

t.test('the same user block twice is merged; CRLF and blank lines are fine', async (t) => {
  const a = parseMosquittoAcl('user u\r\ntopic read a\r\n\r\n   \r\nuser v\r\ntopic b\r\nuser u\r\ntopic write c\r\n', 'f')
  t.same(a.users.get('u')?.map((l) => l.line), [2, 8])
  t.same(a.users.get('v')?.map((l) => l.line), [6])
  t.equal(a.users.get(null), undefined)
})

t.test('bad files are refused with file:line', async (t) => {
  t.throws(() => parseMosquittoAcl('topic\n', 'f'), /^f:1: empty topic/)
  t.throws(() => parseMosquittoAcl('\ntopic sometimes a/b\n', 'f'), /^f:2: invalid access type "sometimes"/)
  t.throws(() => parseMosquittoAcl('user\n', 'f'), /^f:1: missing user name/)
  t.throws(() => parseMosquittoAcl('topics read a\n', 'f'), /^f:1: invalid line "topics read a"/)
  t.throws(() => parseMosquittoAcl('topic read a/#/b\n', 'f'), /^f:1: invalid topic/)
})
