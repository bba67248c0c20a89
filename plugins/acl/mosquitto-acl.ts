// Mosquitto's acl_file, read and judged the way Mosquitto 2 does (src/security_default.c):
//   user NAME                                — following `topic` lines are NAME's;
//   topic [read|write|readwrite|deny] TOPIC  — before any `user` line: anonymous clients;
//   pattern [read|write|readwrite|deny] TOPIC — every client, `%u`/`%c` as a whole level;
//   `#` comments, blank lines. No access word means readwrite.
// A check walks the client's own `topic` lines, then the `pattern` lines; in each list `deny`
// lines come first (a matching deny refuses), then the first matching line that grants the
// access allows; nothing → deny. When pattern lines exist, a user name or client ID holding
// `+` or `#` is refused outright, as Mosquitto does. read = subscribe + receive, write = publish.

import { covers, filterProblem, overlaps } from './topic.js'
import { compilePattern, type Pattern, type Subject } from './pattern.js'
import type { Action, Decision } from './decision.js'

const READ = 1
const WRITE = 2
const ACCESS: Record<string, number> = { read: READ, write: WRITE, readwrite: READ | WRITE, deny: 0 }

export interface AclLine {
  readonly line: number
  /** 0 = deny, else READ | WRITE bits. */
  readonly access: number
  readonly pattern: Pattern
  readonly text: string
}

export interface MosquittoAcl {
  readonly file: string
  /** Per user name; the key null holds the lines for anonymous clients. Deny lines first. */
  readonly users: ReadonlyMap<string | null, readonly AclLine[]>
  /** `pattern` lines, deny lines first. */
  readonly patterns: readonly AclLine[]
}

function denyFirst (lines: AclLine[]): AclLine[] {
  return [...lines.filter((l) => l.access === 0), ...lines.filter((l) => l.access !== 0)]
}

/** Parses an acl_file; throws `FILE:LINE: problem` on the first bad line (Mosquitto refuses it too). */
export function parseMosquittoAcl (text: string, file: string): MosquittoAcl {
  const users = new Map<string | null, AclLine[]>()
  const patterns: AclLine[] = []
  let user: string | null = null
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim()
    const at = `${file}:${i + 1}`
    if (line === '' || line.startsWith('#')) continue
    const [keyword = '', ...restWords] = line.split(/[ \t]+/)
    const rest = line.slice(keyword.length).trim()
    if (keyword === 'user') {
      if (rest === '') throw new Error(`${at}: missing user name`)
      user = rest
      continue
    }
    if (keyword !== 'topic' && keyword !== 'pattern') throw new Error(`${at}: invalid line "${line}"`)
    if (restWords.length === 0) throw new Error(`${at}: empty topic`)
    let access = READ | WRITE
    let topic = rest
    if (restWords.length > 1) {
      const word = restWords[0] as string
      const bits = ACCESS[word]
      if (bits === undefined) throw new Error(`${at}: invalid access type "${word}" (read, write, readwrite or deny)`)
      access = bits
      topic = rest.slice(word.length).trim()
    }
    const problem = filterProblem(topic)
    if (problem !== undefined) throw new Error(`${at}: invalid topic: ${problem}`)
    const entry: AclLine = { line: i + 1, access, pattern: compilePattern(topic, true), text: line }
    if (keyword === 'pattern') {
      patterns.push(entry)
    } else {
      let list = users.get(user)
      if (list === undefined) users.set(user, list = [])
      list.push(entry)
    }
  }
  for (const [key, list] of users) users.set(key, denyFirst(list))
  return { file, users, patterns: denyFirst(patterns) }
}

function judge (acl: MosquittoAcl, lines: readonly AclLine[], subject: Subject, bit: number, wanted: readonly string[]): Decision | undefined {
  for (const entry of lines) {
    const pattern = entry.pattern.resolve(subject)
    if (pattern === null) continue
    const deny = entry.access === 0
    // A deny line refuses as soon as it overlaps; a grant must cover the whole filter.
    if (!(deny ? overlaps(pattern, wanted) : covers(pattern, wanted))) continue
    if (deny) return { allow: false, rule: `${acl.file}:${entry.line}`, text: entry.text }
    if ((entry.access & bit) !== 0) return { allow: true, rule: `${acl.file}:${entry.line}`, text: entry.text }
  }
  return undefined
}

export function decideMosquitto (acl: MosquittoAcl, subject: Subject, action: Action, wanted: readonly string[]): Decision {
  const bit = action === 'publish' ? WRITE : READ
  const own = acl.users.get(subject.user ?? null) ?? []
  const byUser = judge(acl, own, subject, bit, wanted)
  if (byUser !== undefined) return byUser
  if (acl.patterns.length > 0 && (/[+#]/.test(subject.user ?? '') || /[+#]/.test(subject.clientId))) {
    return { allow: false, rule: `${acl.file}`, text: 'pattern lines refuse a user name or client ID containing + or #' }
  }
  const byPattern = judge(acl, acl.patterns, subject, bit, wanted)
  if (byPattern !== undefined) return byPattern
  return { allow: false, rule: 'default deny', text: `no line of ${acl.file} matched` }
}
