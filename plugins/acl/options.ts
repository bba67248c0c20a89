// The acl plugin's options, validated; every error starts with the option's key
// (`rules[2].topic: ...`), the loader prefixes `plugins[i].`.

import { configError } from '../../src/errors.js'
import { ACTIONS, compileRule, type Action, type CompiledRule, type RuleSpec } from './rules.js'

export interface AclOptions {
  rules: RuleSpec[]
  aclFile: string | undefined
  groups: Record<string, string[]>
  onDeniedPublish: 'drop' | 'disconnect'
}

const RULE_KEYS = new Set(['allow', 'deny', 'topic', 'users', 'groups', 'anonymous', 'clients', 'qos', 'retain'])

function stringList (value: unknown, key: string): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw configError(key, 'expected a list of strings')
  return value as string[]
}

function actions (value: unknown, key: string): Action[] {
  const list = Array.isArray(value) ? value : [value]
  if (list.length === 0) throw configError(key, 'expected at least one action')
  for (const a of list) {
    if (!(ACTIONS as readonly unknown[]).includes(a)) throw configError(key, `expected ${ACTIONS.join(', ')} (or a list of them), got ${JSON.stringify(a)}`)
  }
  return list as Action[]
}

function ruleSpec (raw: unknown, key: string, groups: Record<string, string[]>): RuleSpec {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw configError(key, 'expected a rule { allow|deny: ACTIONS, topic: PATTERN, ... }')
  const r = raw as Record<string, unknown>
  for (const k of Object.keys(r)) if (!RULE_KEYS.has(k)) throw configError(`${key}.${k}`, 'unknown key')
  if ((r.allow === undefined) === (r.deny === undefined)) throw configError(key, 'give exactly one of "allow" or "deny"')
  const spec: RuleSpec = { topic: '' }
  if (r.allow !== undefined) spec.allow = actions(r.allow, `${key}.allow`)
  if (r.deny !== undefined) spec.deny = actions(r.deny, `${key}.deny`)
  if (typeof r.topic !== 'string') throw configError(`${key}.topic`, 'expected a topic pattern (string)')
  spec.topic = r.topic
  if (r.users !== undefined) spec.users = stringList(r.users, `${key}.users`)
  if (r.clients !== undefined) spec.clients = stringList(r.clients, `${key}.clients`)
  if (r.groups !== undefined) {
    spec.groups = stringList(r.groups, `${key}.groups`)
    const unknown = spec.groups.find((g) => groups[g] === undefined)
    if (unknown !== undefined) throw configError(`${key}.groups`, `unknown group "${unknown}" (define it under groups)`)
  }
  if (r.anonymous !== undefined) {
    if (r.anonymous !== true) throw configError(`${key}.anonymous`, 'expected true (omit it otherwise)')
    spec.anonymous = true
  }
  if (r.qos !== undefined) {
    const qos = Array.isArray(r.qos) ? r.qos : [r.qos]
    if (qos.length === 0 || qos.some((q) => q !== 0 && q !== 1 && q !== 2)) throw configError(`${key}.qos`, 'expected a list of 0, 1, 2')
    spec.qos = qos as number[]
  }
  if (r.retain !== undefined) {
    if (typeof r.retain !== 'boolean') throw configError(`${key}.retain`, 'expected true or false')
    spec.retain = r.retain
  }
  return spec
}

function groupsOption (raw: unknown): Record<string, string[]> {
  if (raw === undefined) return {}
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw configError('groups', 'expected a map of group name to a list of user names')
  const out: Record<string, string[]> = {}
  for (const [name, users] of Object.entries(raw)) out[name] = stringList(users, `groups.${name}`)
  return out
}

export function validateOptions (raw: Record<string, unknown>): AclOptions {
  for (const k of Object.keys(raw)) {
    if (!['rules', 'aclFile', 'groups', 'onDeniedPublish'].includes(k)) throw configError(k, 'unknown key')
  }
  const groups = groupsOption(raw.groups)
  if (raw.rules !== undefined && !Array.isArray(raw.rules)) throw configError('rules', 'expected a list of rules')
  const rules = (raw.rules as unknown[] | undefined ?? []).map((r, i) => ruleSpec(r, `rules[${i}]`, groups))
  // Compiling here reports bad topic patterns at start, with the rule's key.
  rules.forEach((spec, i) => { compileRules([spec], i) })
  if (raw.aclFile !== undefined && (typeof raw.aclFile !== 'string' || raw.aclFile === '')) throw configError('aclFile', 'expected a file path')
  if (raw.rules === undefined && raw.aclFile === undefined) throw configError('rules', 'give rules, aclFile or both (without either everything would be denied)')
  const onDeniedPublish = raw.onDeniedPublish ?? 'drop'
  if (onDeniedPublish !== 'drop' && onDeniedPublish !== 'disconnect') throw configError('onDeniedPublish', 'expected one of drop, disconnect')
  return { rules, aclFile: raw.aclFile as string | undefined, groups, onDeniedPublish }
}

export function compileRules (specs: readonly RuleSpec[], offset = 0): CompiledRule[] {
  return specs.map((spec, i) => {
    const id = `rules[${i + offset}]`
    try {
      return compileRule(spec, id)
    } catch (err) {
      throw configError(`${id}.topic`, (err as Error).message)
    }
  })
}
