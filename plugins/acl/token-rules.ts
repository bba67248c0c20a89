// Rules a client's credential carries (`conn.identity.acl`: auth's JWT `aclClaim`), decided
// before the acl plugin's own rules. The first rule that matches decides; none matching leaves
// the decision to the plugin's rules (`noMatch: next`) or denies (`deny`, EMQX's old form).
// Topics match as acl's YAML rules do (an allow must cover a subscription's filter, a deny
// applies when it overlaps; %u and %c never widen a rule); an `exact` topic (EMQX's
// `eq FILTER`) matches only itself, for subscribe and publish.

import type { TokenAcl, TokenAclRule } from '../../src/plugin/api.js'
import { applies, type AclRequest, type Decision } from './rules.js'
import { compilePattern, type Pattern, type Subject } from './pattern.js'
import { levels, unshare } from './topic.js'

interface Compiled { rule: TokenAclRule, patterns: Array<{ pattern: Pattern, exact: boolean } | undefined> }

/** Compiled once per identity (a token's rules do not change while it is connected). */
const compiled = new WeakMap<TokenAcl, Compiled[]>()

function compile (acl: TokenAcl): Compiled[] {
  let out = compiled.get(acl)
  if (out !== undefined) return out
  out = acl.rules.map((rule) => ({
    rule,
    patterns: rule.topics.map((t) => {
      // auth checked the filters; one acl cannot read matches nothing rather than everything.
      try {
        return { pattern: compilePattern(t.filter), exact: t.exact }
      } catch {
        return undefined
      }
    })
  }))
  compiled.set(acl, out)
  return out
}

function conditionsHold (rule: TokenAclRule, req: AclRequest): boolean {
  if (rule.qos !== undefined && !rule.qos.includes(req.qos)) return false
  // EMQX: retain concerns publishing only.
  if (rule.retain !== undefined && req.action === 'publish') return rule.retain === req.retain
  return true
}

function matches (rule: TokenAclRule, p: { pattern: Pattern, exact: boolean }, who: Subject, req: AclRequest, wanted: readonly string[]): boolean {
  const resolved = p.pattern.resolve(who)
  if (resolved === null) return false
  if (p.exact && req.action !== 'receive') return resolved.join('/') === wanted.join('/')
  return applies(rule.permission, resolved, wanted)
}

const text = (rule: TokenAclRule): string => `token ${rule.permission} ${rule.actions.join(',')} ${rule.topics.map((t) => `${t.exact ? 'eq ' : ''}${t.filter}`).join(' ')}`

/** The token's decision, or undefined when its rules leave it to the plugin's own. */
export function decideByToken (acl: TokenAcl, who: Subject, req: AclRequest): Decision | undefined {
  const topic = req.action === 'subscribe' ? unshare(req.topic) : req.topic
  if (topic === null) return undefined
  const wanted = levels(topic)
  for (const [i, c] of compile(acl).entries()) {
    if (!c.rule.actions.includes(req.action) || !conditionsHold(c.rule, req)) continue
    if (!c.patterns.some((p) => p !== undefined && matches(c.rule, p, who, req, wanted))) continue
    return { allow: c.rule.permission === 'allow', rule: `token acl[${i}]`, text: text(c.rule) }
  }
  return acl.noMatch === 'deny' ? { allow: false, rule: 'token acl', text: 'no rule of the token matched (the token\'s { pub, sub, all } lists allow only what they name)' } : undefined
}
