// A JWT's ACL claim in EMQX's formats, read into the neutral rules of `Identity.acl`
// (src/plugin/api.ts) that the acl plugin decides with:
//   EMQX 5.5+: [{ permission: allow|deny, action: publish|subscribe|all (pub, sub),
//                topic: FILTER | topics: [FILTER, ...], qos?: [0, 1, 2], retain?: bool }]
//              first match decides; no match: the acl plugin's own rules decide.
//   EMQX 4 / before 5.5: { pub: [FILTER], sub: [FILTER], all: [FILTER] }: allow lists;
//              no match: denied.
// Placeholders ${username} / ${clientid} (and %u / %c); `eq FILTER` is the filter itself. A
// claim this cannot honour whole (another field, placeholder or form) is refused, never half-read.

import type { TokenAcl, TokenAclRule } from '../../src/plugin/api.js'
import { filterProblem } from '../../src/wire/topic-filter.js'

type Action = TokenAclRule['actions'][number]

const ACTIONS: Record<string, readonly Action[]> = {
  publish: ['publish'],
  pub: ['publish'],
  // EMQX checks the SUBSCRIBE only; what a granted subscription delivers is received.
  subscribe: ['subscribe', 'receive'],
  sub: ['subscribe', 'receive'],
  all: ['publish', 'subscribe', 'receive']
}
const RULE_KEYS = new Set(['permission', 'action', 'topic', 'topics', 'qos', 'retain'])

/** EMQX's placeholders as acl's; a placeholder acl does not know is a problem. */
function topicOf (raw: unknown, where: string): TokenAclRule['topics'][number] {
  if (typeof raw !== 'string' || raw === '') throw new Error(`${where}: expected a topic filter string`)
  const exact = raw.startsWith('eq ')
  const filter = (exact ? raw.slice(3) : raw).replaceAll('${username}', '%u').replaceAll('${clientid}', '%c')
  const unknown = /\$\{[^}]*\}/.exec(filter)
  if (unknown !== null) throw new Error(`${where}: placeholder ${unknown[0]} is not supported (only \${username}, \${clientid})`)
  const problem = filterProblem(filter)
  if (problem !== undefined) throw new Error(`${where}: ${problem}`)
  return { filter, exact }
}

function ruleOf (raw: unknown, i: number): TokenAclRule {
  const where = `acl[${i}]`
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${where}: expected an object`)
  const r = raw as Record<string, unknown>
  const extra = Object.keys(r).find((k) => !RULE_KEYS.has(k))
  if (extra !== undefined) throw new Error(`${where}: field ${extra} is not supported (${[...RULE_KEYS].join(', ')})`)
  if (r['permission'] !== 'allow' && r['permission'] !== 'deny') throw new Error(`${where}.permission: expected allow or deny`)
  const actions = typeof r['action'] === 'string' ? ACTIONS[r['action']] : undefined
  if (actions === undefined) throw new Error(`${where}.action: expected publish, subscribe or all`)
  const list = r['topics'] !== undefined ? r['topics'] : r['topic'] !== undefined ? [r['topic']] : undefined
  if (!Array.isArray(list) || list.length === 0 || (r['topic'] !== undefined && r['topics'] !== undefined)) throw new Error(`${where}: expected topic or topics (one of them)`)
  const qos = r['qos']
  if (qos !== undefined && !(Array.isArray(qos) && qos.every((q) => q === 0 || q === 1 || q === 2))) throw new Error(`${where}.qos: expected a list of 0, 1, 2`)
  if (r['retain'] !== undefined && typeof r['retain'] !== 'boolean') throw new Error(`${where}.retain: expected true or false`)
  return {
    permission: r['permission'],
    actions,
    topics: list.map((t, j) => topicOf(t, `${where}.topics[${j}]`)),
    qos: qos as number[] | undefined,
    retain: r['retain'] as boolean | undefined
  }
}

function oldForm (claim: Record<string, unknown>): TokenAcl {
  const extra = Object.keys(claim).find((k) => k !== 'pub' && k !== 'sub' && k !== 'all')
  if (extra !== undefined) throw new Error(`acl.${extra}: not supported (pub, sub, all)`)
  const rules = (['pub', 'sub', 'all'] as const).filter((k) => claim[k] !== undefined).map((k): TokenAclRule => {
    const list = claim[k]
    if (!Array.isArray(list)) throw new Error(`acl.${k}: expected a list of topic filters`)
    return { permission: 'allow', actions: ACTIONS[k] as readonly Action[], topics: list.map((t, j) => topicOf(t, `acl.${k}[${j}]`)) }
  })
  return { rules, noMatch: 'deny' }
}

/** The claim's rules, or the problem with it (in words; the claim's values are not repeated). */
export function parseAclClaim (claim: unknown): TokenAcl | { problem: string } {
  try {
    if (Array.isArray(claim)) return { rules: claim.map(ruleOf), noMatch: 'next' }
    if (typeof claim === 'object' && claim !== null) return oldForm(claim as Record<string, unknown>)
    return { problem: 'expected a list of rules or { pub, sub, all }' }
  } catch (err) {
    return { problem: (err as Error).message }
  }
}
