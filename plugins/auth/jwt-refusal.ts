// Why a JWT was refused, as one cause from a closed list (the metric's `cause` label, the
// `auth refused` line's reason `jwt-<cause>`) and a detail in words built from the header and
// claims, never from the token's text: jose's error becomes a cause here.

import { errors, type JWTPayload } from 'jose'

export const CAUSES = [
  'malformed', 'alg-not-allowed', 'bad-signature', 'expired', 'not-yet-valid', 'wrong-audience',
  'issuer-unknown', 'no-usable-key', 'claim-missing', 'client-id-differs', 'bad-acl-claim', 'jwks-unavailable'
] as const
export type Cause = typeof CAUSES[number]

export interface Refusal { cause: Cause, detail: string }

const MAX = 120
/** A claim's value for a log line: short, and only what the token's issuer put in a claim. */
export function shown (value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value) ?? 'nothing'
  return text.length > MAX ? `${text.slice(0, MAX)}…` : text
}

const at = (seconds: unknown): string => typeof seconds === 'number' && Number.isFinite(seconds) ? new Date(seconds * 1000).toISOString() : shown(seconds)
const ago = (seconds: number, now: number): string => `${Math.abs(Math.round(now / 1000 - seconds))} s`

/** What jose's verify threw, as a cause. `expected` holds the configured issuer and audience. */
export function refusalOf (err: unknown, now: number, expected: { issuer?: string[] | undefined, audience?: string[] | undefined }): Refusal {
  if (err instanceof errors.JWTExpired) {
    const exp = err.payload.exp
    return { cause: 'expired', detail: `expired at ${at(exp)}${typeof exp === 'number' ? `, ${ago(exp, now)} ago` : ''}` }
  }
  if (err instanceof errors.JWTClaimValidationFailed) return claimRefusal(err.claim, err.reason, err.payload, now, expected)
  if (err instanceof errors.JWSSignatureVerificationFailed) return { cause: 'bad-signature', detail: 'signature does not verify with the key' }
  if (err instanceof errors.JOSEAlgNotAllowed) return { cause: 'alg-not-allowed', detail: 'alg not in jwt.algorithms' }
  if (err instanceof errors.JWKSNoMatchingKey) return { cause: 'no-usable-key', detail: 'no key of the key set matches the token\'s kid and alg' }
  if (err instanceof errors.JWKSMultipleMatchingKeys) return { cause: 'no-usable-key', detail: 'several keys match and none verifies (give each key a kid)' }
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return { cause: 'malformed', detail: err.message }
  if (err instanceof errors.JOSENotSupported) return { cause: 'no-usable-key', detail: err.message }
  // A key that cannot be used for the token's alg (a key set's RSA key of the wrong kind, ...).
  return { cause: 'no-usable-key', detail: `key not usable: ${err instanceof Error ? err.message : String(err)}` }
}

function claimRefusal (claim: string, reason: string, payload: JWTPayload, now: number, expected: { issuer?: string[] | undefined, audience?: string[] | undefined }): Refusal {
  const missing = reason === 'missing'
  switch (claim) {
    case 'nbf':
      return { cause: 'not-yet-valid', detail: `not valid before ${at(payload.nbf)}${typeof payload.nbf === 'number' ? `, ${ago(payload.nbf, now)} from now` : ''}` }
    case 'iat':
      return { cause: 'not-yet-valid', detail: `issued in the future (iat ${at(payload.iat)})` }
    case 'aud':
      return { cause: 'wrong-audience', detail: `${missing ? 'no aud' : `aud ${shown(payload.aud)}`}, expected ${(expected.audience ?? []).join(' or ')}` }
    case 'iss':
      return { cause: 'issuer-unknown', detail: `${missing ? 'no iss' : `iss ${shown(payload.iss)}`}, expected ${(expected.issuer ?? []).join(' or ')}` }
    case 'exp':
      return { cause: 'malformed', detail: 'exp is not a number' }
    default:
      return { cause: 'malformed', detail: `claim ${claim}: ${reason}` }
  }
}
