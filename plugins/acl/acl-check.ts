// The acl plugin's command, `mqtt-guard acl-check --config FILE --user U --client C [--group G] [--qos N] [--retain]
//  publish|subscribe|receive TOPIC`: what the acl plugin of that config decides, and which
// rule decided. Exit 0 allow, 1 deny, 2 usage error, 78 config error (as `start`), 3 when the
// rules cannot be read: never 1, which a script takes for "deny".

import { readFileSync } from 'node:fs'
import { loadConfig } from '../../src/config/config.js'
import { isGuardError } from '../../src/errors.js'
import { EXIT, parseCommand, usageError, type Command, type PluginCommand, type PluginDefinition } from '../../src/plugin/api.js'
import { resolvePlugin } from '../../src/plugin/loader.js'
import { aclOptions, checkAclOptions, type AclOptions } from './options.js'
import { buildPolicy, resolveAclFile } from './policy.js'
import { parseMosquittoAcl } from './mosquitto-acl.js'
import { ACTIONS, type Action } from './rules.js'
import { filterProblem, topicNameProblem } from './topic.js'

const USAGE = `Usage: mqtt-guard acl-check --config FILE [--user U] [--client C] [--group G]... [--qos 0|1|2] [--retain] publish|subscribe|receive TOPIC

Prints "allow" or "deny" and the rule that decided (rules[i], FILE:LINE or default deny).
Without --user the client is anonymous. --group adds U to a group for this check.
  -h, --help   this text
Exit status: 0 allow, 1 deny, 2 usage error, 3 the rules cannot be read, 78 config error.
`

const COMMAND: Command = { name: 'mqtt-guard acl-check', usage: USAGE }
/** Neither allow nor deny: the question could not be answered. */
const UNDECIDED = 3

const OPTIONS = {
  config: { type: 'string' },
  user: { type: 'string' },
  client: { type: 'string' },
  group: { type: 'string', multiple: true },
  qos: { type: 'string' },
  retain: { type: 'boolean' }
} as const

const usage = (problem: string): number => usageError(COMMAND, problem)

export async function aclCheckCommand (args: string[]): Promise<number> {
  const parsed = parseCommand(args, COMMAND, OPTIONS)
  if (typeof parsed === 'number') return parsed
  const { values, positionals } = parsed
  if (values.config === undefined) return usage('--config FILE is required')
  const [action, topic, ...extra] = positionals
  if (action === undefined || topic === undefined || extra.length > 0) return usage('expected ACTION TOPIC')
  if (!(ACTIONS as readonly string[]).includes(action)) return usage(`unknown action "${action}" (publish, subscribe or receive)`)
  const problem = action === 'subscribe' ? filterProblem(topic) : topicNameProblem(topic)
  if (problem !== undefined) return usage(problem)
  const qos = Number(values.qos ?? '0')
  if (![0, 1, 2].includes(qos)) return usage('--qos must be 0, 1 or 2')
  try {
    const config = loadConfig({ config: values.config })
    const entry = config.plugins.find((p) => p.name === 'acl')
    if (entry === undefined) {
      process.stderr.write(`mqtt-guard acl-check: plugins: ${values.config} has no acl plugin (plugins: [{ name: acl, ... }])\n`)
      return EXIT.config
    }
    // Resolved as `start` resolves each entry (src/plugin/loader.ts), with the plugin's own
    // schema and checks: the same errors, keyed alike. Only this entry: the answer comes before
    // anything is awaited, and the other plugins' modules are not needed for it.
    const definition: PluginDefinition<AclOptions> = { name: 'acl', options: aclOptions, validate: checkAclOptions, create: () => ({ name: 'acl' }) }
    const options = resolvePlugin(entry, definition as PluginDefinition).validated as AclOptions
    const file = resolveAclFile(options, config.configDir)
    const aclFile = file === undefined ? undefined : parseMosquittoAcl(readFileSync(file, 'utf8'), file)
    const policy = buildPolicy(options, () => aclFile)
    const who = policy.principal({ user: values.user, clientId: values.client ?? '' }, values.group ?? [])
    const decision = policy.decide(who, { action: action as Action, topic, qos, retain: values.retain === true })
    process.stdout.write(`${decision.allow ? 'allow' : 'deny'} ${decision.rule}: ${decision.text}\n`)
    return decision.allow ? 0 : 1
  } catch (err) {
    process.stderr.write(`mqtt-guard acl-check: ${isGuardError(err) ? `${err.message} (${err.code})` : (err as Error).message}\n`)
    return isGuardError(err) && err.code === 'GUARD_ERR_CONFIG' ? EXIT.config : UNDECIDED
  }
}

export const aclCheck: PluginCommand = {
  synopsis: '--config FILE [--user U] [--client C] [--group G]... [--qos N] [--retain]\npublish|subscribe|receive TOPIC',
  summary: 'which ACL rule decides; exit 0 allow, 1 deny',
  run: aclCheckCommand
}
