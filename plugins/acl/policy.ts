// The acl plugin's policy from its validated options: shared by the hooks and by the
// `acl-check` command, which must decide exactly as a running proxy would.

import path from 'node:path'
import { AclPolicy } from './rules.js'
import type { MosquittoAcl } from './mosquitto-acl.js'
import { compileRules, type AclOptions } from './options.js'

/** The policy for validated options; `aclFile` yields the file's current rules (watched or read once). */
export function buildPolicy (options: AclOptions, aclFile: () => MosquittoAcl | undefined): AclPolicy {
  return new AclPolicy(compileRules(options.rules), options.groups, aclFile)
}

/** Validated options hold it absolute already; resolving again keeps callers that pass raw ones right. */
export function resolveAclFile (options: AclOptions, configDir: string): string | undefined {
  return options.aclFile === undefined ? undefined : path.resolve(configDir, options.aclFile)
}
