// The one pino root logger. Children carry the connection and plugin; lines are structured
// fields only. Secrets are redacted by path as a second line of defence: code never logs them.
//
// One name per thing, everywhere (docs/design.md, "Logs"): `conn`, `address`, `clientId`,
// `username` are bound once by the connection's child and never repeated by a call; `plugin`,
// `topic` (a PUBLISH or will topic), `filter` (a subscription filter), `reason` (a stable
// code), `detail` (free text), `err`.

import pino, { type Logger, type DestinationStream } from 'pino'
import { budgetHook } from './budget.js'

export const REDACT_PATHS = [
  'password', '*.password', 'packet.password', 'sentinelPassword', '*.sentinelPassword', 'authenticationData', '*.authenticationData',
  'properties.authenticationData', 'headers.authorization'
]

/**
 * A JSON Web Token's shape: three base64url parts, the first two JSON objects (`{"` is `eyJ`);
 * the signature may be empty (alg none). A client may send one as its user name (auth's
 * `jwt.from: username`): logs, traces and messages must treat such a user name as a secret.
 */
const JWT_SHAPE = /^eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$/

export function looksLikeJwt (value: string | undefined): value is string {
  return value !== undefined && JWT_SHAPE.test(value)
}

/**
 * Fields whose value a client chooses (up to 64 KiB each in MQTT) or that quote one. A line
 * carries at most MAX_FIELD_CHARS of each, and then `<field>Bytes` with the whole value's
 * size in UTF-8 bytes, as on the wire: a 64 KiB client ID costs a line 256 characters.
 */
export const CUT_FIELDS = ['clientId', 'username', 'topic', 'filter', 'key', 'detail'] as const
export const MAX_FIELD_CHARS = 256

/** The value as a log line may carry it: whole, or its first MAX_FIELD_CHARS and '…'. */
export function cut (value: string): string {
  if (value.length <= MAX_FIELD_CHARS) return value
  // Never end on half a surrogate pair: the line must stay valid UTF-8.
  const code = value.charCodeAt(MAX_FIELD_CHARS - 1)
  const end = code >= 0xd800 && code <= 0xdbff ? MAX_FIELD_CHARS - 1 : MAX_FIELD_CHARS
  return `${value.slice(0, end)}…`
}

/**
 * `fields` with each CUT_FIELDS string cut and its size beside it. Returns `fields` itself
 * when nothing is long (the usual case: no copy).
 */
export function cutFields<T extends object> (fields: T): T {
  let out: Record<string, unknown> | undefined
  for (const key of CUT_FIELDS) {
    const value = (fields as Record<string, unknown>)[key]
    if (typeof value !== 'string' || value.length <= MAX_FIELD_CHARS) continue
    out ??= { ...fields } as Record<string, unknown>
    out[key] = cut(value)
    out[`${key}Bytes`] = Buffer.byteLength(value, 'utf8')
  }
  return (out ?? fields) as T
}

export function createLogger (level: string, destination?: DestinationStream, base?: Record<string, unknown>): Logger {
  return pino({
    level,
    base: { pid: process.pid, ...base },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Runs only for lines that are written: a call's own fields. Bindings are cut where they
    // are made (ConnectionLog), since pino does not pass them through here.
    formatters: { log: cutFields },
    // A connection's lines count against its budget (log-budget.ts); other loggers have none.
    hooks: { logMethod: budgetHook }
  }, destination ?? pino.destination({ dest: 1, sync: false }))
}

/** Long-lived children (the plugins') that follow their root's level when a reload changes it. */
const followers = new WeakMap<Logger, Set<WeakRef<Logger>>>()

/** `child`, made to follow `root`'s level from now on (setLevel). */
export function following (root: Logger, child: Logger): Logger {
  let set = followers.get(root)
  if (set === undefined) followers.set(root, set = new Set())
  set.add(new WeakRef(child))
  return child
}

/**
 * A reload's new log level: the root's, its followers' and (through ConnectionLog, which
 * compares at each line) every connection's.
 */
export function setLevel (root: Logger, level: string): void {
  root.level = level
  const set = followers.get(root)
  for (const ref of set ?? []) {
    const child = ref.deref()
    if (child === undefined) set?.delete(ref)
    else child.level = level
  }
}
