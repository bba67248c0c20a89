// A rule's topic pattern with `%u` (user name) and `%c` (client ID) placeholders. A
// substitution may never widen a rule: when the value is missing, empty, or holds `+`, `#` or
// `/` (which would add a wildcard or a level), the pattern yields nothing and the rule does
// not match. So user `a/#` gets nothing from `users/%u/#`, instead of all of `users/a/...`.

import { filterProblem, levels } from './topic.js'

export interface Subject {
  /** undefined: anonymous (no user name in CONNECT). */
  readonly user: string | undefined
  readonly clientId: string
}

export interface Pattern {
  /** As written in the rule. */
  readonly text: string
  /** The levels for this subject, or null when a substitution is unsafe (the rule does not match). */
  resolve: (subject: Subject) => readonly string[] | null
}

const PLACEHOLDER = /%[uc]/g

/** A value that may stand in for `%u`/`%c`: present, non-empty, no wildcard or separator. */
export function safeValue (value: string | undefined): value is string {
  return value !== undefined && value !== '' && !/[+#/]/.test(value) && !value.includes('\u0000')
}

/**
 * `wholeLevel`: only a level that is exactly `%u` or `%c` is substituted (Mosquitto's
 * acl_file); otherwise placeholders are substituted anywhere in a level (`dev-%c/state`).
 */
export function compilePattern (text: string, wholeLevel = false): Pattern {
  const problem = filterProblem(text)
  if (problem !== undefined) throw new Error(problem)
  const parts = levels(text)
  const dynamic = parts.map((level) => wholeLevel ? level === '%u' || level === '%c' : /%[uc]/.test(level))
  if (!dynamic.includes(true)) return { text, resolve: () => parts }
  return {
    text,
    resolve: (subject) => {
      const out: string[] = []
      for (const [i, level] of parts.entries()) {
        if (dynamic[i] !== true) { out.push(level); continue }
        let unsafe = false
        const value = level.replace(PLACEHOLDER, (p) => {
          const v = p === '%u' ? subject.user : subject.clientId
          if (!safeValue(v)) { unsafe = true; return '' }
          return v
        })
        if (unsafe) return null
        out.push(value)
      }
      return out
    }
  }
}
