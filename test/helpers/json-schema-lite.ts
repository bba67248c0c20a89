// A JSON Schema checker for the subset config/mqtt-guard.schema.json uses (type, const, enum,
// anyOf, not, properties, required, additionalProperties, items, min/max (and exclusiveMinimum), minLength,
// minItems, propertyNames/additionalProperties as a schema), so the tests can hold the
// published schema against the example configs without a validator dependency. A keyword it
// does not know is reported, so the subset cannot silently shrink what is checked.

export type Schema = Record<string, unknown>

const IGNORED = new Set(['$schema', 'title', 'description', 'default'])
const KNOWN = new Set(['type', 'const', 'enum', 'anyOf', 'not', 'properties', 'required', 'additionalProperties', 'items', 'minimum', 'exclusiveMinimum', 'maximum', 'minLength', 'minItems', 'propertyNames'])

function typeOf (value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'array'
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number'
  return typeof value
}

function typeMatches (wanted: string, value: unknown): boolean {
  const actual = typeOf(value)
  return wanted === actual || (wanted === 'number' && actual === 'integer')
}

function checkObject (schema: Schema, value: Record<string, unknown>, at: string): string[] {
  const problems: string[] = []
  const properties = (schema.properties ?? {}) as Record<string, Schema>
  for (const key of (schema.required ?? []) as string[]) {
    if (!(key in value)) problems.push(`${at}: missing required ${key}`)
  }
  for (const [key, v] of Object.entries(value)) {
    const sub = properties[key]
    if (sub !== undefined) problems.push(...check(sub, v, `${at}.${key}`))
    else if (schema.additionalProperties === false) problems.push(`${at}: unknown key ${key}`)
    else if (typeof schema.additionalProperties === 'object') problems.push(...check(schema.additionalProperties as Schema, v, `${at}.${key}`))
    if (schema.propertyNames !== undefined) problems.push(...check(schema.propertyNames as Schema, key, `${at}.${key} (name)`))
  }
  return problems
}

/** Problems of `value` against `schema`, each `path: what`; empty when it conforms. */
export function check (schema: Schema, value: unknown, at = '$'): string[] {
  const unknown = Object.keys(schema).filter((k) => !KNOWN.has(k) && !IGNORED.has(k))
  if (unknown.length > 0) return [`${at}: schema keyword(s) this checker does not know: ${unknown.join(', ')}`]
  if (schema.anyOf !== undefined) {
    const branches = (schema.anyOf as Schema[]).map((s) => check(s, value, at))
    if (!branches.some((b) => b.length === 0)) return [`${at}: matches none of ${branches.length} forms (${branches.map((b) => b[0]).join(' | ')})`]
  }
  if (schema.not !== undefined && check(schema.not as Schema, value, at).length === 0) return [`${at}: matches a form it must not`]
  if (typeof schema.type === 'string' && !typeMatches(schema.type, value)) return [`${at}: expected ${schema.type}, got ${typeOf(value)}`]
  if ('const' in schema && schema.const !== value) return [`${at}: expected ${JSON.stringify(schema.const)}`]
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) return [`${at}: expected one of ${schema.enum.join(', ')}`]
  const problems: string[] = []
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) problems.push(`${at}: below ${schema.minimum}`)
    if (typeof schema.exclusiveMinimum === 'number' && value <= schema.exclusiveMinimum) problems.push(`${at}: not above ${schema.exclusiveMinimum}`)
    if (typeof schema.maximum === 'number' && value > schema.maximum) problems.push(`${at}: above ${schema.maximum}`)
  }
  if (typeof value === 'string' && typeof schema.minLength === 'number' && value.length < schema.minLength) problems.push(`${at}: shorter than ${schema.minLength}`)
  if (Array.isArray(value)) {
    if (typeof schema.minItems === 'number' && value.length < schema.minItems) problems.push(`${at}: fewer than ${schema.minItems} items`)
    if (schema.items !== undefined) value.forEach((v, i) => { problems.push(...check(schema.items as Schema, v, `${at}[${i}]`)) })
  }
  if (typeOf(value) === 'object' && (schema.properties !== undefined || schema.required !== undefined || schema.additionalProperties !== undefined || schema.propertyNames !== undefined)) {
    problems.push(...checkObject(schema, value as Record<string, unknown>, at))
  }
  return problems
}
