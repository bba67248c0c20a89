// `mqtt-guard probe`, a refused CONNECT whose password (or user name) is a JWT: the token is
// decoded here, without verifying it (probe has no keys), and what looks wrong is said in
// words: expired since …, not valid before …, its alg, kid, iss, aud. The token itself, and
// its signature, are never printed.

import { decodeJwt, decodeProtectedHeader } from 'jose'
import { looksLikeJwt } from '../log/log.js'

const MAX = 80

const shown = (v: unknown): string => {
  const text = typeof v === 'string' ? v : JSON.stringify(v) ?? '?'
  return text.length > MAX ? `${text.slice(0, MAX)}…` : text
}

function span (seconds: number): string {
  const s = Math.abs(Math.round(seconds))
  if (s < 120) return `${s} s`
  if (s < 7200) return `${Math.round(s / 60)} min`
  if (s < 172_800) return `${Math.round(s / 3600)} h`
  return `${Math.round(s / 86_400)} days`
}

const date = (seconds: number): string => new Date(seconds * 1000).toISOString()

/** What the token's own claims say is wrong at `nowMs`, worst first. */
function problems (header: Record<string, unknown>, claims: Record<string, unknown>, nowMs: number): string[] {
  const now = nowMs / 1000
  const out: string[] = []
  const { exp, nbf, iat } = claims
  if (header['alg'] === undefined || String(header['alg']).toLowerCase() === 'none') out.push('it is unsigned (alg none): no server accepts that')
  if (typeof exp === 'number' && exp <= now) out.push(`it expired ${span(now - exp)} ago (exp ${date(exp)})`)
  if (typeof nbf === 'number' && nbf > now) out.push(`it is not valid before ${date(nbf)} (in ${span(nbf - now)}): check the clocks`)
  if (typeof iat === 'number' && iat > now + 60) out.push(`it was issued in the future (iat ${date(iat)}): check the clocks`)
  if (exp === undefined) out.push('it has no exp (some servers require one)')
  return out
}

/**
 * Words on a refused login's JWT, or undefined when neither field holds one. `field` says
 * which credential it was found in.
 */
export function explainJwt (username: string | undefined, password: string | undefined, nowMs = Date.now()): string | undefined {
  const field = looksLikeJwt(password) ? 'password' : looksLikeJwt(username) ? 'user name' : undefined
  if (field === undefined) return undefined
  const token = field === 'password' ? password as string : username as string
  let header: Record<string, unknown>
  let claims: Record<string, unknown>
  try {
    header = decodeProtectedHeader(token) as Record<string, unknown>
    claims = decodeJwt(token) as Record<string, unknown>
  } catch {
    return `the ${field} looks like a JWT but does not decode (header or claims are not base64url JSON): the server refuses it as malformed`
  }
  const facts = [`alg ${shown(header['alg'])}`]
  if (header['kid'] !== undefined) facts.push(`kid ${shown(header['kid'])}`)
  for (const claim of ['iss', 'aud', 'sub'] as const) if (claims[claim] !== undefined) facts.push(`${claim} ${shown(claims[claim])}`)
  if (typeof claims['exp'] === 'number') facts.push(`exp ${date(claims['exp'])}`)
  const wrong = problems(header, claims, nowMs)
  const verdict = wrong.length > 0
    ? wrong.join('; ')
    : 'nothing wrong in its own claims: compare iss and aud with the server\'s jwt.issuer and jwt.audience, alg with jwt.algorithms, and the kid with the keys of its JWKS; the server log\'s `auth refused` line gives the cause'
  return `the ${field} is a JWT (decoded here, not verified: ${facts.join(', ')}): ${verdict}`
}
