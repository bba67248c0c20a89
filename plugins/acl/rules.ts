// The ACL's decisions. YAML `rules` are ordered and the first that matches decides; when none
// does, the Mosquitto acl_file (if any) decides with Mosquitto's own order; otherwise deny.
// An allow rule must cover the whole topic filter of a subscription; a deny rule applies as
// soon as it overlaps it (see topic.ts), so a deny can never be sidestepped by a wider filter.

import { covers, levels, overlaps, unshare } from './topic.js'
import { compilePattern, type Pattern, type Subject } from './pattern.js'
import type { MosquittoAcl } from './mosquitto-acl.js'
import { decideMosquitto } from './mosquitto-acl.js'
import type { Action, Decision, AclRequest, Effect } from './decision.js'

export { ACTIONS, type Action, type Effect, type AclRequest, type Decision } from './decision.js'

export interface RuleSpec {
  allow?: Action[] | Action
  deny?: Action[] | Action
  topic: string
  users?: string[]
  groups?: string[]
  anonymous?: boolean
  clients?: string[]
  qos?: number[]
  retain?: boolean
}

export interface CompiledRule {
  readonly id: string
  readonly effect: Effect
  readonly actions: ReadonlySet<Action>
  readonly pattern: Pattern
  readonly users: ReadonlySet<string> | undefined
  readonly groups: readonly string[] | undefined
  readonly anonymous: boolean
  readonly clients: ReadonlySet<string> | undefined
  readonly qos: ReadonlySet<number> | undefined
  readonly retain: boolean | undefined
  readonly text: string
}

/** Relation an effect needs between a rule's pattern and the requested topic or filter. */
export function applies (effect: Effect, pattern: readonly string[], wanted: readonly string[]): boolean {
  return effect === 'allow' ? covers(pattern, wanted) : overlaps(pattern, wanted)
}

export function compileRule (spec: RuleSpec, id: string): CompiledRule {
  const effect: Effect = spec.allow !== undefined ? 'allow' : 'deny'
  const raw = spec.allow ?? spec.deny ?? []
  const actions = new Set(Array.isArray(raw) ? raw : [raw])
  const set = <T>(list: T[] | undefined): Set<T> | undefined => list === undefined ? undefined : new Set(list)
  const who = [
    spec.users !== undefined ? `users ${spec.users.join(',')}` : '',
    spec.groups !== undefined ? `groups ${spec.groups.join(',')}` : '',
    spec.anonymous === true ? 'anonymous' : '',
    spec.clients !== undefined ? `clients ${spec.clients.join(',')}` : ''
  ].filter((s) => s !== '').join(' ')
  return {
    id,
    effect,
    actions,
    pattern: compilePattern(spec.topic),
    users: set(spec.users),
    groups: spec.groups,
    anonymous: spec.anonymous === true,
    clients: set(spec.clients),
    qos: set(spec.qos),
    retain: spec.retain,
    text: `${effect} ${[...actions].join(',')} ${spec.topic}${who === '' ? '' : ` for ${who}`}`
  }
}

export interface Principal extends Subject {
  readonly groups: ReadonlySet<string>
}

function concerns (rule: CompiledRule, who: Principal): boolean {
  if (rule.clients !== undefined && !rule.clients.has(who.clientId)) return false
  if (rule.users === undefined && rule.groups === undefined && !rule.anonymous) return true
  if (who.user === undefined) return rule.anonymous
  if (rule.users?.has(who.user) === true) return true
  return rule.groups?.some((g) => who.groups.has(g)) === true
}

function conditionsHold (rule: CompiledRule, req: AclRequest): boolean {
  if (rule.qos !== undefined && !rule.qos.has(req.qos)) return false
  if (rule.retain !== undefined) return req.action !== 'subscribe' && rule.retain === req.retain
  return true
}

export const DEFAULT_DENY: Decision = { allow: false, rule: 'default deny', text: 'no rule matched' }

export class AclPolicy {
  private readonly memberOf = new Map<string, Set<string>>()

  constructor (
    readonly rules: readonly CompiledRule[],
    groups: Readonly<Record<string, readonly string[]>>,
    private readonly aclFile: () => MosquittoAcl | undefined
  ) {
    for (const [group, users] of Object.entries(groups)) {
      for (const user of users) {
        let set = this.memberOf.get(user)
        if (set === undefined) this.memberOf.set(user, set = new Set())
        set.add(group)
      }
    }
  }

  principal (subject: Subject, extraGroups: readonly string[] = []): Principal {
    const groups = new Set(subject.user === undefined ? [] : this.memberOf.get(subject.user) ?? [])
    if (subject.user !== undefined) for (const g of extraGroups) groups.add(g)
    return { user: subject.user, clientId: subject.clientId, groups }
  }

  decide (who: Principal, req: AclRequest): Decision {
    const topic = req.action === 'subscribe' ? unshare(req.topic) : req.topic
    if (topic === null) return { allow: false, rule: 'default deny', text: 'malformed shared subscription' }
    const wanted = levels(topic)
    for (const rule of this.rules) {
      if (!rule.actions.has(req.action) || !concerns(rule, who) || !conditionsHold(rule, req)) continue
      const pattern = rule.pattern.resolve(who)
      if (pattern === null || !applies(rule.effect, pattern, wanted)) continue
      return { allow: rule.effect === 'allow', rule: rule.id, text: rule.text }
    }
    const file = this.aclFile()
    if (file !== undefined) return decideMosquitto(file, who, req.action, wanted)
    return DEFAULT_DENY
  }
}
