// Password hashes and password files in Mosquitto's format, as `mosquitto_passwd` writes them:
//   user:$6$<salt b64>$<hash b64>                 hash = SHA-512(password ‖ salt)        (Mosquitto ≤ 1.6)
//   user:$7$<iterations>$<salt b64>$<hash b64>    hash = PBKDF2-HMAC-SHA512(password, salt, iterations, 64)
// plus a format of our own (Mosquitto does not read it):
//   user:$scrypt$<N>$<r>$<p>$<salt b64>$<hash b64>  hash = scrypt(password, salt, 64, { N, r, p })
// Salts are raw bytes, base64-encoded (12 bytes for Mosquitto's). Lines starting with `#` and
// blank lines are comments. All comparisons are constant-time.

import { createHash, pbkdf2, randomBytes, scrypt, timingSafeEqual } from 'node:crypto'

export type PasswordHash =
  | { kind: '6', salt: Buffer, hash: Buffer }
  | { kind: '7', iterations: number, salt: Buffer, hash: Buffer }
  | { kind: 'scrypt', N: number, r: number, p: number, salt: Buffer, hash: Buffer }

/** Mosquitto 2's `mosquitto_passwd` default (PW_DEFAULT_ITERATIONS). */
export const MOSQUITTO_ITERATIONS = 101
export const SCRYPT_DEFAULTS = { N: 16384, r: 8, p: 1 } as const
const SALT_BYTES = 12
const HASH_BYTES = 64

const B64 = /^[A-Za-z0-9+/]+={0,2}$/

function b64 (text: string | undefined, what: string, min = 1, max = 1024): Buffer {
  if (text === undefined || !B64.test(text)) throw new Error(`${what} is not base64`)
  const bytes = Buffer.from(text, 'base64')
  if (bytes.length < min || bytes.length > max) throw new Error(`${what} has ${bytes.length} bytes, expected ${min === max ? min : `${min}..${max}`}`)
  return bytes
}

function int (text: string | undefined, what: string, min: number, max: number): number {
  if (text === undefined || !/^\d+$/.test(text)) throw new Error(`${what} is not a number`)
  const n = Number(text)
  if (n < min || n > max) throw new Error(`${what} ${n} out of range ${min}..${max}`)
  return n
}

/** Parses `$6$...`, `$7$...` or `$scrypt$...`; throws with the reason otherwise. */
export function parseHash (text: string): PasswordHash {
  const parts = text.split('$')
  if (parts[0] !== '') throw new Error('hash does not start with "$" (plaintext passwords are not accepted)')
  switch (parts[1]) {
    case '6':
      if (parts.length !== 4) throw new Error('$6$ hash needs $6$salt$hash')
      return { kind: '6', salt: b64(parts[2], 'salt'), hash: b64(parts[3], 'hash', HASH_BYTES, HASH_BYTES) }
    case '7':
      if (parts.length !== 5) throw new Error('$7$ hash needs $7$iterations$salt$hash')
      return { kind: '7', iterations: int(parts[2], 'iterations', 1, 10_000_000), salt: b64(parts[3], 'salt'), hash: b64(parts[4], 'hash', HASH_BYTES, HASH_BYTES) }
    case 'scrypt': {
      if (parts.length !== 7) throw new Error('$scrypt$ hash needs $scrypt$N$r$p$salt$hash')
      const N = int(parts[2], 'N', 2, 1 << 20)
      if ((N & (N - 1)) !== 0) throw new Error(`N ${N} is not a power of two`)
      return { kind: 'scrypt', N, r: int(parts[3], 'r', 1, 64), p: int(parts[4], 'p', 1, 16), salt: b64(parts[5], 'salt'), hash: b64(parts[6], 'hash', 16, 1024) }
    }
    default:
      throw new Error(`unknown hash type "$${parts[1] ?? ''}$" (expected $6$, $7$ or $scrypt$)`)
  }
}

export function formatHash (h: PasswordHash): string {
  const salt = h.salt.toString('base64')
  const hash = h.hash.toString('base64')
  switch (h.kind) {
    case '6': return `$6$${salt}$${hash}`
    case '7': return `$7$${h.iterations}$${salt}$${hash}`
    case 'scrypt': return `$scrypt$${h.N}$${h.r}$${h.p}$${salt}$${hash}`
  }
}

async function derive (h: PasswordHash, password: Buffer): Promise<Buffer> {
  const length = h.hash.length === 0 ? HASH_BYTES : h.hash.length
  switch (h.kind) {
    case '6':
      return createHash('sha512').update(password).update(h.salt).digest()
    case '7':
      return await new Promise((resolve, reject) => {
        pbkdf2(password, h.salt, h.iterations, length, 'sha512', (err, key) => { if (err !== null) reject(err); else resolve(key) })
      })
    case 'scrypt':
      return await new Promise((resolve, reject) => {
        scrypt(password, h.salt, length, { N: h.N, r: h.r, p: h.p, maxmem: 256 * h.N * h.r + (1 << 20) }, (err, key) => { if (err !== null) reject(err); else resolve(key) })
      })
  }
}

/** True when `password` matches; the comparison is constant-time (crypto.timingSafeEqual). */
export async function verifyPassword (h: PasswordHash, password: Buffer | string): Promise<boolean> {
  const derived = await derive(h, Buffer.isBuffer(password) ? password : Buffer.from(password, 'utf8'))
  if (derived.length !== h.hash.length) return false
  return timingSafeEqual(derived, h.hash)
}

/** A `$7$` hash as `mosquitto_passwd` makes it (Mosquitto reads it). */
export async function hashPbkdf2 (password: string, iterations = MOSQUITTO_ITERATIONS): Promise<PasswordHash> {
  const h: PasswordHash = { kind: '7', iterations, salt: randomBytes(SALT_BYTES), hash: Buffer.alloc(0) }
  return { ...h, hash: await derive(h, Buffer.from(password, 'utf8')) }
}

/** Our `$scrypt$` hash (Mosquitto does not read it). */
export async function hashScrypt (password: string, params: { N: number, r: number, p: number } = SCRYPT_DEFAULTS): Promise<PasswordHash> {
  const h: PasswordHash = { kind: 'scrypt', ...params, salt: randomBytes(16), hash: Buffer.alloc(0) }
  return { ...h, hash: await derive(h, Buffer.from(password, 'utf8')) }
}

/** A hash of the same kind and cost as `like`, for a password nobody knows (unknown users). */
export function dummyLike (like: PasswordHash | undefined): PasswordHash {
  const salt = randomBytes(like?.salt.length ?? SALT_BYTES)
  const hash = randomBytes(like?.hash.length ?? HASH_BYTES)
  if (like === undefined) return { kind: '7', iterations: MOSQUITTO_ITERATIONS, salt, hash }
  return { ...like, salt, hash }
}

export interface PasswordFile {
  users: Map<string, PasswordHash>
  /** Same kind and cost as most users' hashes, so an unknown user takes as long as a known one. */
  dummy: PasswordHash
}

export interface FileLine { user: string, hash: string }

/**
 * Splits a line like Mosquitto does: `#` starts a comment line, blanks around the user name and
 * the hash are trimmed, the hash ends at the next `:`. Returns undefined for comments/blank lines.
 */
export function splitLine (line: string): FileLine | undefined | Error {
  const text = line.replace(/\r$/, '')
  if (text.startsWith('#') || text.trim() === '') return undefined
  const colon = text.indexOf(':')
  if (colon < 0) return new Error('no ":" between user name and hash')
  const user = text.slice(0, colon).trim()
  if (user === '') return new Error('empty user name')
  const hash = (text.slice(colon + 1).split(':')[0] ?? '').trim()
  if (hash === '') return new Error(`user "${user}" has no password hash`)
  return { user, hash }
}

/**
 * Parses a whole file. Stricter than Mosquitto (which drops a bad entry and goes on): any bad
 * line or a user named twice rejects the file, so a half-written file never drops users.
 */
export function parsePasswordFile (text: string, file = 'password file'): PasswordFile {
  const users = new Map<string, PasswordHash>()
  const kinds = new Map<string, { count: number, like: PasswordHash }>()
  for (const [i, line] of text.split('\n').entries()) {
    const where = `${file}:${i + 1}`
    const parsed = splitLine(line)
    if (parsed === undefined) continue
    if (parsed instanceof Error) throw new Error(`${where}: ${parsed.message}`)
    if (users.has(parsed.user)) throw new Error(`${where}: user "${parsed.user}" is defined twice`)
    let hash: PasswordHash
    try {
      hash = parseHash(parsed.hash)
    } catch (err) {
      throw new Error(`${where}: user "${parsed.user}": ${(err as Error).message}`)
    }
    users.set(parsed.user, hash)
    const cost = hash.kind === '6' ? '6' : hash.kind === '7' ? `7/${hash.iterations}` : `s/${hash.N}/${hash.r}/${hash.p}`
    const seen = kinds.get(cost)
    kinds.set(cost, { count: (seen?.count ?? 0) + 1, like: hash })
  }
  const common = [...kinds.values()].sort((a, b) => b.count - a.count)[0]?.like
  return { users, dummy: dummyLike(common) }
}
