// The acl plugin's options: a zod schema (rules, groups, what a denied publish does; also the
// JSON Schema editors complete from), then the acl_file resolved against the config file's
// folder and checked. Errors start with the option's key (`rules[2].topic: ...`), the loader
// prefixes `plugins[i].`.

import { z } from 'zod'
import { configError } from '../../src/errors.js'
import { bool, expected, oneOf, parseWith, strictOptions, strings, text } from '../../src/config/zod.js'
import { inputFile } from '../../src/config/paths.js'
import type { OptionsContext } from '../../src/plugin/api.js'
import { ACTIONS, compileRule, type CompiledRule, type RuleSpec } from './rules.js'
import { httpAuthzOptions, type HttpAuthzOptions } from './http-authz.js'

export interface AclOptions {
  rules: RuleSpec[]
  /** Absolute once validated. */
  aclFile?: string | undefined
  groups: Record<string, string[]>
  onDeniedPublish: 'drop' | 'disconnect'
  /** An HTTP service asked what no local rule decides (http-authz.ts). */
  http?: HttpAuthzOptions | undefined
}

const actions = z.union([oneOf(ACTIONS), z.array(oneOf(ACTIONS)).min(1)], expected(`${ACTIONS.join(', ')} (or a list of them)`))
const qosLevel = z.literal([0, 1, 2], expected('0, 1 or 2'))
const qos = z.union([qosLevel, z.array(qosLevel).min(1)], expected('a list of 0, 1, 2'))
  .transform((q) => Array.isArray(q) ? q : [q])

const rule = strictOptions({
  allow: actions.optional(),
  deny: actions.optional(),
  topic: text('a topic pattern (string)'),
  users: strings().optional(),
  groups: strings().optional(),
  anonymous: z.literal(true, expected('true (omit it otherwise)')).optional(),
  clients: strings().optional(),
  qos: qos.optional(),
  retain: bool().optional()
}, 'a rule { allow|deny: ACTIONS, topic: PATTERN, ... }').superRefine((r, ctx) => {
  if ((r.allow === undefined) === (r.deny === undefined)) ctx.addIssue({ code: 'custom', message: 'give exactly one of "allow" or "deny"' })
})

export const aclOptions: z.ZodType<AclOptions> = strictOptions({
  rules: z.array(rule, expected('a list of rules')).optional(),
  aclFile: text('a file path').optional(),
  groups: z.record(z.string(), strings(), expected('a map of group name to a list of user names')).default({}),
  onDeniedPublish: oneOf(['drop', 'disconnect']).default('drop'),
  http: httpAuthzOptions.optional()
}).superRefine((o, ctx) => {
  // `rules: []` without an aclFile is a deliberate deny-all; neither key is a mistake.
  if (o.rules === undefined && o.aclFile === undefined && o.http === undefined) {
    ctx.addIssue({ code: 'custom', path: ['rules'], message: 'give rules, aclFile, http or several (without any everything would be denied)' })
  }
  for (const [i, spec] of (o.rules ?? []).entries()) {
    const unknown = spec.groups?.find((g) => o.groups[g] === undefined)
    if (unknown !== undefined) ctx.addIssue({ code: 'custom', path: ['rules', i, 'groups'], message: `unknown group "${unknown}" (define it under groups)` })
    // Compiling here reports a bad topic pattern at start, with the rule's key.
    try {
      compileRule(spec, `rules[${i}]`)
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['rules', i, 'topic'], message: (err as Error).message })
    }
  }
}).transform((o) => ({ ...o, rules: o.rules ?? [] }))

/** What the schema cannot see: the acl_file on disk. */
export function checkAclOptions (o: AclOptions, ctx: OptionsContext): AclOptions {
  return { ...o, aclFile: o.aclFile === undefined ? undefined : inputFile(ctx.configDir, o.aclFile, 'aclFile') }
}

export function validateOptions (raw: unknown, ctx: OptionsContext = { configDir: process.cwd(), redis: false }): AclOptions {
  return checkAclOptions(parseWith(aclOptions, raw), ctx)
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
