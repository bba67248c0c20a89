// zod schemas worded like every config error: what the key accepts, and what it got
// (`plugins[2].leaseMs: expected an integer >= 300, got "x"`). The core config and every
// plugin build their options from these, so one style reaches the user and the JSON Schema
// (config/mqtt-guard.schema.json) is made from the same schemas.

import { z } from 'zod'
import { configError, isGuardError, type GuardError } from '../errors.js'

/** How a value given in the config is quoted in a message. */
export function got (input: unknown): string {
  return input === undefined ? 'nothing' : JSON.stringify(input)
}

/** `expected WHAT, got INPUT`, for every issue of the schema it is given to. */
export function expected (what: string): { error: (issue: { input?: unknown }) => string } {
  return { error: (issue) => `expected ${what}, got ${got(issue.input)}` }
}

export function int (min = 1, max?: number): z.ZodInt {
  const what = `an integer >= ${min}${max === undefined ? '' : ` and <= ${max}`}`
  const schema = z.int(expected(what)).min(min)
  return max === undefined ? schema : schema.max(max)
}

export function bool (): z.ZodBoolean {
  return z.boolean(expected('true or false'))
}

export function oneOf<const T extends readonly [string, ...string[]]> (values: T): z.ZodEnum<{ [K in T[number]]: K }> {
  return z.enum(values, expected(`one of ${values.join(', ')}`))
}

export function text (what = 'a non-empty string'): z.ZodString {
  return z.string(expected(what)).min(1)
}

export function strings (): z.ZodArray<z.ZodString> {
  return z.array(z.string(expected('a string')), expected('a list of strings'))
}

/** An object that refuses keys it does not know: a typo must not fall back to a default. */
export function strictOptions<S extends z.ZodRawShape> (shape: S, what?: string): z.ZodObject<S, z.core.$strict> {
  const keys = Object.keys(shape).join(', ')
  return z.strictObject(shape, {
    error: (issue) => issue.code === 'unrecognized_keys' ? `unknown key (expected one of ${keys})` : `expected ${what ?? `an object { ${keys} }`}, got ${got(issue.input)}`
  })
}

/**
 * An object of integers merged over defaults (`bruteForce: { maxFailures: 3 }`): `true` gives
 * the defaults, `false` turns the feature off (undefined), and so does absence when `absent`
 * is 'off' (else absence gives the defaults). `min` per key, else 0.
 */
export function counts<T extends object> (defaults: T, min: Partial<Record<keyof T, number>> = {}, absent: 'defaults' | 'off' = 'defaults'): z.ZodType<T | undefined> {
  const lowest = min as Record<string, number | undefined>
  const shape = Object.fromEntries(Object.keys(defaults).map((k) => [k, int(lowest[k] ?? 0).optional()]))
  return z.union([z.boolean(), strictOptions(shape)], expected('true, false or an object')).optional()
    .transform((raw): T | undefined => {
      if (raw === false || (raw === undefined && absent === 'off')) return undefined
      const given = typeof raw === 'object' ? Object.entries(raw).filter(([, v]) => v !== undefined) : []
      return { ...defaults, ...Object.fromEntries(given) }
    })
}

type Issue = z.core.$ZodIssue

/**
 * A union's own message says which forms it takes; but when the value had the shape of one
 * form (an object, say) and failed inside it, that form's issue is the one that helps.
 */
function innermost (issue: Issue): Issue {
  if (issue.code !== 'invalid_union') return issue
  for (const branch of issue.errors) {
    const first = branch.find((i) => i.code === 'unrecognized_keys') ?? branch[0]
    if (first === undefined) continue
    const atRoot = first.path.length === 0 && (first.code === 'invalid_type' || first.code === 'invalid_value')
    if (!atRoot) return innermost({ ...first, path: [...issue.path, ...first.path] })
  }
  return issue
}

/** `plugins[1].policy: expected one of ...` from zod's first issue, the key joined from its path. */
export function zodToConfigError (error: z.ZodError, prefix: string): GuardError {
  const first = error.issues[0]
  if (first === undefined) return configError(prefix, 'invalid')
  const issue = innermost(first)
  let key = prefix
  for (const part of issue.path) key += typeof part === 'number' ? `[${part}]` : (key === '' ? String(part) : `.${String(part)}`)
  if (issue.code === 'unrecognized_keys') {
    // The unknown key is named itself; strictOptions' message lists the known ones.
    const unknown = issue.keys[0] ?? ''
    return configError(key === '' ? unknown : `${key}.${unknown}`, issue.message)
  }
  return configError(key, issue.message)
}

/** Parses with `schema`; errors are config errors keyed under `prefix` (`''`: the key alone). */
export function parseWith<T> (schema: z.ZodType<T>, raw: unknown, prefix = ''): T {
  const parsed = schema.safeParse(raw)
  if (!parsed.success) throw zodToConfigError(parsed.error, prefix)
  return parsed.data
}

/** `plugins[0]` and `passwordFile` → `plugins[0].passwordFile`; `rules` and `[2]` → `rules[2]`. */
export function joinKey (prefix: string, key: string): string {
  if (key === '') return prefix
  if (prefix === '') return key
  return key.startsWith('[') ? `${prefix}${key}` : `${prefix}.${key}`
}

/** `KEY: PROBLEM`, the form plugins/README.md asks of an Error thrown by a plugin's `validate`. */
const AUTHOR_KEY = /^([A-Za-z_][\w.[\]]*): (.*)$/s

/**
 * An error from checking a part of the config (a plugin's `validate` or `create`), as a config
 * error under that part's key: `passwordFile: …` from plugins[0] is `plugins[0].passwordFile: …`.
 * A config error carries its key apart from its problem (GuardError.setting), so it is moved
 * without reading its message. Only an Error a plugin of one's own threw has its key read from
 * the message, by the convention plugins/README.md promises its authors.
 */
export function underKey (prefix: string, err: unknown): GuardError {
  if (isGuardError(err) && err.setting !== undefined) return configError(joinKey(prefix, err.setting.key), err.setting.problem)
  const message = err instanceof Error ? err.message : String(err)
  const named = AUTHOR_KEY.exec(message)
  return named === null ? configError(prefix, message) : configError(joinKey(prefix, named[1] as string), named[2] as string)
}

/** `o` without its undefined fields, so that a spread does not overwrite a default with undefined. */
export function dropUndefined<T extends object> (o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T
}
