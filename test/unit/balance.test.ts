// Which broker of a pool a client goes to (issue 21), without sockets: weighted rendezvous
// hashing is deterministic and independent of the order the brokers are listed in, spreads
// 3000 client IDs within ±25 % of even and honours weights, removing a broker moves only its
// clients and adding one moves about 1/N, only to it; smooth weighted round-robin; least
// connections per unit of weight; and the preference order a new client gets (an empty client
// ID goes by least connections, down brokers are skipped).

import t from 'tap'
import { hash32, leastLoadedOrder, preferenceOrder, rendezvousOrder, RoundRobin, type BalanceTarget } from '../../src/upstream/balance.js'

const CLIENTS = Array.from({ length: 3000 }, (_, i) => `device-${i.toString(36)}-${(i * 7919) % 1000}`)
const A: BalanceTarget = { key: '10.0.0.1:1883', weight: 1 }
const B: BalanceTarget = { key: '10.0.0.2:1883', weight: 1 }
const C: BalanceTarget = { key: 'broker-c.example:1884', weight: 1 }
const D: BalanceTarget = { key: '10.0.0.4:1883', weight: 1 }

/** The broker key each client ID prefers, by rendezvous over `targets`. */
function winners (targets: readonly BalanceTarget[]): Map<string, string> {
  return new Map(CLIENTS.map((id) => [id, (targets[rendezvousOrder(targets, id)[0] as number] as BalanceTarget).key]))
}

function counts (assignment: Map<string, string>): Map<string, number> {
  const n = new Map<string, number>()
  for (const key of assignment.values()) n.set(key, (n.get(key) ?? 0) + 1)
  return n
}

/** The order of broker keys for a client (rendezvousOrder returns indices into `targets`). */
function keyOrder (targets: readonly BalanceTarget[], id: string): string[] {
  return rendezvousOrder(targets, id).map((i) => (targets[i] as BalanceTarget).key)
}

t.test('hash32 is a deterministic unsigned 32-bit hash', async (t) => {
  t.equal(hash32('device-1'), hash32('device-1'))
  t.not(hash32('device-1'), hash32('device-2'))
  for (const s of ['', 'a', 'é', '\u{1F600}', 'x'.repeat(1000)]) {
    const h = hash32(s)
    t.ok(Number.isInteger(h) && h >= 0 && h <= 0xffffffff, `hash32(${JSON.stringify(s.slice(0, 8))}) = ${h} is a uint32`)
  }
})

t.test('rendezvous: deterministic, every broker once, independent of the list order', async (t) => {
  const targets = [A, B, C]
  const shuffled = [C, A, B]
  let differ = 0
  for (const id of CLIENTS) {
    const order = rendezvousOrder(targets, id)
    if (JSON.stringify([...order].sort()) !== '[0,1,2]') differ++
    if (JSON.stringify(order) !== JSON.stringify(rendezvousOrder(targets, id))) differ++
    if (JSON.stringify(keyOrder(targets, id)) !== JSON.stringify(keyOrder(shuffled, id))) differ++
  }
  t.equal(differ, 0, 'every broker once, the same order twice, and the same brokers in the same order whatever the list order, for all 3000 IDs')
})

t.test('rendezvous: 3000 client IDs over 3 brokers spread within ±25 % of even', async (t) => {
  const n = counts(winners([A, B, C]))
  t.comment(`per broker: ${[...n].map(([k, v]) => `${k} ${v}`).join(', ')}`)
  for (const b of [A, B, C]) {
    const got = n.get(b.key) ?? 0
    t.ok(got >= 750 && got <= 1250, `${b.key}: ${got} of 3000 (expected 1000 ± 250)`)
  }
})

t.test('rendezvous: a broker of weight 2 gets about twice the clients', async (t) => {
  const heavy = { ...A, weight: 2 }
  const n = counts(winners([heavy, B, C]))
  t.comment(`weights 2,1,1: ${[...n].map(([k, v]) => `${k} ${v}`).join(', ')}`)
  const a = n.get(A.key) ?? 0
  const b = n.get(B.key) ?? 0
  const c = n.get(C.key) ?? 0
  t.ok(a >= 1125 && a <= 1875, `weight 2: ${a} of 3000 (expected 1500 ± 25 %)`)
  for (const [key, got] of [[B.key, b], [C.key, c]] as const) t.ok(got >= 562 && got <= 938, `weight 1 ${key}: ${got} (expected 750 ± 25 %)`)
  const ratio = a / ((b + c) / 2)
  t.ok(ratio >= 1.6 && ratio <= 2.4, `weight 2 : weight 1 is ${ratio.toFixed(2)} (about 2)`)
  // The same with the weights listed in another order: the score depends on key and weight only.
  const again = winners([C, heavy, B])
  t.same(again, winners([heavy, B, C]), 'weighted assignment independent of the list order')
})

t.test('rendezvous: removing a broker moves only its clients', async (t) => {
  const before = winners([A, B, C])
  const after = winners([A, C])
  let movedOthers = 0
  let movedFromB = 0
  let notToSecondChoice = 0
  for (const id of CLIENTS) {
    const was = before.get(id)
    const now = after.get(id)
    if (was === B.key) {
      movedFromB++
      // Its next broker in its own order, as the pool's failover sends it.
      if (now !== keyOrder([A, B, C], id)[1]) notToSecondChoice++
    } else if (now !== was) {
      movedOthers++
    }
  }
  t.equal(movedOthers, 0, 'no client of A or C moved')
  t.ok(movedFromB > 0, `${movedFromB} clients of B moved`)
  t.equal(notToSecondChoice, 0, 'each client of B went to its second choice')
})

t.test('rendezvous: adding a 4th broker moves about 1/4, only to it', async (t) => {
  const before = winners([A, B, C])
  const after = winners([A, B, C, D])
  let moved = 0
  let movedElsewhere = 0
  for (const id of CLIENTS) {
    if (before.get(id) === after.get(id)) continue
    moved++
    if (after.get(id) !== D.key) movedElsewhere++
  }
  const share = moved / CLIENTS.length
  t.comment(`adding a 4th broker moved ${moved} of ${CLIENTS.length} (${(100 * share).toFixed(1)} %)`)
  t.ok(share >= 0.15 && share <= 0.35, `${(100 * share).toFixed(1)} % moved (expected about 25 %)`)
  t.equal(movedElsewhere, 0, 'every client that moved went to the new broker')
})

t.test('round-robin: smooth weighted, a broker of weight 2 twice in 4 picks, not in a row', async (t) => {
  const targets = [{ ...A, weight: 2 }, B, C]
  const rr = new RoundRobin(targets)
  const picks = Array.from({ length: 4 }, () => rr.next([0, 1, 2]))
  for (const p of picks) t.same([...p].sort(), [0, 1, 2], 'each pick orders every eligible broker once')
  const firsts = picks.map((p) => p[0])
  t.comment(`first 4 picks: ${firsts.join(', ')}`)
  t.equal(firsts.filter((i) => i === 0).length, 2, 'weight 2: two of 4 picks')
  t.equal(firsts.filter((i) => i === 1).length, 1, 'weight 1: one of 4')
  t.equal(firsts.filter((i) => i === 2).length, 1, 'weight 1: one of 4')
  t.notOk(firsts.some((i, k) => i === 0 && firsts[k + 1] === 0), 'the weight-2 broker is not picked twice in a row')
  // Over many picks the shares are exact.
  const many = new RoundRobin(targets)
  const n = [0, 0, 0]
  for (let k = 0; k < 400; k++) { const i = many.next([0, 1, 2])[0] as number; n[i] = (n[i] ?? 0) + 1 }
  t.same(n, [200, 100, 100], '400 picks: 200, 100, 100')
})

t.test('round-robin: only eligible brokers are picked', async (t) => {
  const rr = new RoundRobin([A, B, C])
  const firsts: number[] = []
  for (let k = 0; k < 6; k++) {
    const order = rr.next([1, 2])
    t.same([...order].sort(), [1, 2], 'the order holds the eligible brokers only')
    firsts.push(order[0] as number)
  }
  t.same(firsts.filter((i) => i === 1).length, 3, 'the two eligible brokers alternate')
  t.same(rr.next([]), [], 'none eligible: an empty order')
})

t.test('least connections: per unit of weight, ties in list order', async (t) => {
  const loads = [5, 2, 2]
  t.same(leastLoadedOrder([A, B, C], (i) => loads[i] ?? 0), [1, 2, 0])
  const weighted = [{ ...A, weight: 2 }, B, C]
  const loads2 = [4, 3, 1] // per weight: 2, 3, 1
  t.same(leastLoadedOrder(weighted, (i) => loads2[i] ?? 0), [2, 0, 1])
  t.same(leastLoadedOrder([A, B, C], () => 0), [0, 1, 2], 'all equal: list order')
})

t.test('preference order: an empty client ID goes by least connections; down brokers are skipped', async (t) => {
  const targets = [A, B, C]
  const rr = new RoundRobin(targets)
  const allUp = (): boolean => true
  const loads = [7, 1, 4]
  const load = (i: number): number => loads[i] ?? 0
  t.same(preferenceOrder('client-id', targets, '', allUp, load, rr), [1, 2, 0], 'client-id, empty client ID: least connections')
  const loads2 = [0, 9, 4]
  t.same(preferenceOrder('client-id', targets, '', allUp, (i) => loads2[i] ?? 0, rr), [0, 2, 1], '... and it follows the loads')
  for (const id of CLIENTS.slice(0, 200)) {
    const full = rendezvousOrder(targets, id)
    if (JSON.stringify(preferenceOrder('client-id', targets, id, allUp, load, rr)) !== JSON.stringify(full)) {
      t.fail(`client-id ${id}: not its rendezvous order`)
      break
    }
    const downFirst = full[0] as number
    const without = preferenceOrder('client-id', targets, id, (i) => i !== downFirst, load, rr)
    if (JSON.stringify(without) !== JSON.stringify(full.slice(1))) {
      t.fail(`client-id ${id}: its broker down, expected ${JSON.stringify(full.slice(1))}, got ${JSON.stringify(without)}`)
      break
    }
  }
  t.pass('client-id: the rendezvous order; its first broker down, the rest of that order')
  const bDown = (i: number): boolean => i !== 1
  t.same(preferenceOrder('least-connections', targets, 'x', bDown, load, rr), [2, 0], 'least-connections skips the down broker')
  t.same(preferenceOrder('client-id', targets, '', bDown, load, rr), [2, 0], 'empty client ID skips the down broker')
  t.same(preferenceOrder('first', targets, 'x', allUp, load, rr), [0, 1, 2], 'first: list order')
  t.same(preferenceOrder('first', targets, 'x', (i) => i !== 0, load, rr), [1, 2], 'first: the first broker down, the next')
  const picks = Array.from({ length: 4 }, () => preferenceOrder('round-robin', targets, 'x', bDown, load, rr))
  t.ok(picks.every((p) => p.length === 2 && !p.includes(1)), 'round-robin skips the down broker')
  t.same(new Set(picks.map((p) => p[0])), new Set([0, 2]), 'round-robin alternates between the brokers up')
  for (const balance of ['client-id', 'round-robin', 'least-connections', 'first'] as const) {
    t.same(preferenceOrder(balance, targets, 'x', () => false, load, rr), [], `${balance}: all down, an empty order`)
  }
})
