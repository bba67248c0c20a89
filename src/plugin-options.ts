// Small validators for plugin options. Every error starts with the option's key; the plugin
// loader prefixes `plugins[i].`, so the user reads `plugins[2].leaseMs: expected ...`.

import { configError } from './errors.js'

export type RawOptions = Record<string, unknown>

export function isObject (v: unknown): v is RawOptions {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** Refuses keys the plugin does not know (a typo must not silently fall back to a default). */
export function knownKeys (raw: RawOptions, keys: readonly string[], prefix = ''): void {
  for (const key of Object.keys(raw)) {
    if (!keys.includes(key)) throw configError(`${prefix}${key}`, `unknown option (expected one of ${keys.join(', ')})`)
  }
}

export function bool (raw: RawOptions, key: string, fallback: boolean): boolean {
  const v = raw[key]
  if (v === undefined) return fallback
  if (typeof v !== 'boolean') throw configError(key, `expected true or false, got ${JSON.stringify(v)}`)
  return v
}

export function int (raw: RawOptions, key: string, fallback: number, min = 1, prefix = ''): number {
  const v = raw[key]
  if (v === undefined) return fallback
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw configError(`${prefix}${key}`, `expected an integer >= ${min}, got ${JSON.stringify(v)}`)
  return v
}

export function oneOf<T extends string> (raw: RawOptions, key: string, values: readonly T[], fallback: T): T {
  const v = raw[key]
  if (v === undefined) return fallback
  if (!(values as readonly unknown[]).includes(v)) throw configError(key, `expected one of ${values.join(', ')}, got ${JSON.stringify(v)}`)
  return v as T
}

/**
 * An object of integers merged over defaults (`{ maxFailures: 3 }`); `true` or absent gives the
 * defaults. `min` names the lowest value per key (default 0).
 */
export function numbers<T extends object> (key: string, raw: unknown, defaults: T, min: Partial<Record<keyof T, number>> = {}): T {
  if (raw === undefined || raw === true) return { ...defaults }
  if (!isObject(raw)) throw configError(key, 'expected true, false or an object')
  const out: Record<string, number> = { ...defaults as Record<string, number> }
  for (const [k, v] of Object.entries(raw)) {
    if (!(k in defaults)) throw configError(`${key}.${k}`, `unknown option (expected ${Object.keys(defaults).join(', ')})`)
    const lowest = (min as Record<string, number>)[k] ?? 0
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lowest) throw configError(`${key}.${k}`, `expected an integer >= ${lowest}, got ${JSON.stringify(v)}`)
    out[k] = v
  }
  return out as T
}
