// What `mqtt-guard doctor` says of the identity provider behind `jwt.jwksUrl`: its JWKS
// fetches fail (clients with new keys are refused, or everyone when no key was ever fetched)
// or are slow (a CONNECT that needs a fetch waits for it).

import type { Finding } from '../../src/plugin/api.js'
import type { JwtOptions } from './jwt-options.js'
import type { JwksStats, LastFetch } from './jwks.js'

/** A fetch slower than this share of jwksTimeoutMs is worth a look before it times out. */
const SLOW_SHARE = 0.5
const SLOW_MS = 1000

export function jwksFindings (o: JwtOptions, last: LastFetch | undefined, stats: JwksStats): Finding[] {
  if (last === undefined) return []
  const url = o.jwksUrl as string
  const counts = `${stats.fetches.ok} fetches ok, ${stats.fetches.failed} failed since start`
  const when = `last fetch ${new Date(last.at).toISOString()}, ${last.ms} ms`
  if (!last.ok) {
    return [{
      id: 'jwks-fetch-failing',
      severity: stats.fetches.ok === 0 ? 'error' : 'warning',
      summary: stats.fetches.ok === 0
        ? `the JWKS at ${url} was never fetched: every JWT client is refused with 3 / 0x88`
        : `fetching the JWKS at ${url} fails: the cached keys stay in use, tokens signed with a new key are refused`,
      evidence: [`${when}: ${last.problem ?? 'failed'}`, counts],
      fix: `check that ${url} answers a JWKS (JSON with "keys") from this machine within jwt.jwksTimeoutMs (${o.jwksTimeoutMs} ms): DNS, proxy, firewall, the IdP's status`
    }]
  }
  if (last.ms > Math.min(SLOW_MS, o.jwksTimeoutMs * SLOW_SHARE)) {
    return [{
      id: 'jwks-slow',
      severity: 'warning',
      summary: `the JWKS at ${url} is slow to fetch (${last.ms} ms; it fails at ${o.jwksTimeoutMs} ms)`,
      evidence: [when, counts],
      fix: 'a CONNECT that needs a fetch (a new kid) waits for it: look at the IdP\'s latency from this machine, or raise jwt.jwksTimeoutMs'
    }]
  }
  return []
}
