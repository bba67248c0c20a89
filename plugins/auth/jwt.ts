// The auth plugin's JWT source: a CONNECT whose password (or user name, `jwt.from`) is shaped
// like a JWT is decided here, and only here: verified with jose against the configured keys,
// its claims checked; its user name claim becomes the identity, its ACL claim rules for acl.
// Refusals are counted by cause (mqtt_guard_auth_jwt_refusals_total) and logged by index.ts;
// the token itself is never logged, counted or put in an error. With `disconnectOnExpiry` a
// timer closes the connection when the token's `exp` passes.

import type { IConnectPacket } from 'mqtt-packet'
import { decodeProtectedHeader, jwtVerify, errors, type JWTPayload, type JWTVerifyGetKey, type KeyObject } from 'jose'
import type { Registry } from 'prom-client'
import type { ConnectionInfo, Finding, TokenAcl } from '../../src/plugin/api.js'
import type { ErrorCode } from '../../src/errors.js'
import { statsCounter } from '../../src/observe/metrics.js'
import { looksLikeJwt } from '../../src/log/log.js'
import type { JwtOptions } from './jwt-options.js'
import { keySource, type KeySource } from './jwt-keys.js'
import { CAUSES, refusalOf, shown, type Cause, type Refusal } from './jwt-refusal.js'
import { parseAclClaim } from './acl-claim.js'
import { jwksFindings } from './jwks-findings.js'
import type { JwksStats } from './jwks.js'
import type { Check } from './check.js'

interface JwtStats extends JwksStats { refusals: Record<Cause, number> }

/** One set of counters per registry: a reload's new source counts on in the same series. */
const registries = new WeakMap<Registry, JwtStats>()

function statsFor (metrics: Registry): JwtStats {
  let stats = registries.get(metrics)
  if (stats !== undefined) return stats
  stats = { refusals: Object.fromEntries(CAUSES.map((c) => [c, 0])) as Record<Cause, number>, fetches: { ok: 0, failed: 0 } }
  registries.set(metrics, stats)
  const s = stats
  statsCounter(metrics, 'mqtt_guard_auth_jwt_refusals_total', 'JWTs refused by the auth plugin, by cause (expired, bad-signature, jwks-unavailable, ...)', 'cause', () => ({ ...s.refusals }))
  statsCounter(metrics, 'mqtt_guard_auth_jwks_fetches_total', 'JWKS fetches of the auth plugin\'s jwt.jwksUrl, by result (ok, failed)', 'result', () => ({ ...s.fetches }))
  return stats
}

/** Expiry timers per connection; kept across a reload, so the connections' onClose still finds them. */
export class ExpiryTimers {
  private readonly timers = new WeakMap<ConnectionInfo, NodeJS.Timeout>()

  /** Closes `conn` at `atMs` (setTimeout's limit of ~24.8 days is bridged by re-arming). */
  arm (conn: ConnectionInfo, atMs: number): void {
    this.clear(conn)
    const left = atMs - Date.now()
    const timer = setTimeout(() => {
      if (left > MAX_TIMEOUT) { this.arm(conn, atMs); return }
      this.timers.delete(conn)
      conn.log.info({ plugin: 'auth', expiredAt: new Date(atMs).toISOString() }, 'token expired: closing')
      conn.close('GUARD_ERR_TOKEN_EXPIRED', 'the JWT expired')
    }, Math.max(0, Math.min(left, MAX_TIMEOUT)))
    timer.unref()
    this.timers.set(conn, timer)
  }

  clear (conn: ConnectionInfo): void {
    clearTimeout(this.timers.get(conn))
    this.timers.delete(conn)
  }
}
const MAX_TIMEOUT = 2 ** 31 - 1

export class JwtSource {
  private readonly keys: KeySource
  private readonly stats: JwtStats

  constructor (private readonly o: JwtOptions, metrics: Registry, readonly expiry: ExpiryTimers) {
    this.stats = statsFor(metrics)
    this.keys = keySource(o, this.stats)
    if (this.keys.kind === 'jwks') this.keys.cache.prefetch()
  }

  /** What the log's `auth ready` line says of it (no secret). */
  describe (): Record<string, unknown> {
    return { keys: this.o.jwksUrl ?? this.o.publicKeyFile ?? 'secretFile', algorithms: this.o.algorithms, from: this.o.from }
  }

  /** The token, when the credential field holds something shaped like a JWT; else this source does not answer. */
  token (packet: IConnectPacket): string | undefined {
    const field = this.o.from === 'username' ? packet.username : packet.password?.toString('utf8')
    return looksLikeJwt(field) ? field : undefined
  }

  async check (conn: ConnectionInfo, packet: IConnectPacket, token: string): Promise<Check> {
    // The connection's log lines name its user: never the token (the claim's name once verified).
    if (this.o.from === 'username') conn.username = undefined
    const result = await this.verify(conn, packet, token)
    if ('cause' in result) {
      this.stats.refusals[result.cause]++
      const code: ErrorCode = result.cause === 'jwks-unavailable' ? 'GUARD_ERR_AUTH_SERVICE' : 'GUARD_ERR_BAD_CREDENTIALS'
      return { ok: false, code, reason: `jwt-${result.cause}`, count: false, detail: result.detail }
    }
    return result
  }

  private async verify (conn: ConnectionInfo, packet: IConnectPacket, token: string): Promise<Check | Refusal> {
    let alg: unknown
    try {
      alg = decodeProtectedHeader(token).alg
    } catch {
      return { cause: 'malformed', detail: 'header is not base64url JSON' }
    }
    if (typeof alg !== 'string' || !(this.o.algorithms as string[]).includes(alg)) {
      return { cause: 'alg-not-allowed', detail: `alg ${shown(alg)}, allowed ${this.o.algorithms.join(', ')}` }
    }
    const now = Date.now()
    const verified = await this.verified(token, now)
    if ('cause' in verified) return verified
    return this.admit(conn, packet, verified.payload, now)
  }

  /** The payload of a token whose signature and time and iss/aud claims hold. */
  private async verified (token: string, now: number, refetched = false): Promise<{ payload: JWTPayload } | Refusal> {
    const keys = this.keys
    let key: KeyObject | Uint8Array | JWTVerifyGetKey
    if (keys.kind === 'jwks') {
      const found = await keys.cache.keys()
      if ('unavailable' in found) return { cause: 'jwks-unavailable', detail: `JWKS ${this.o.jwksUrl as string}: ${found.unavailable}` }
      key = found
    } else {
      key = keys.key
    }
    const options = { algorithms: this.o.algorithms, issuer: this.o.issuer, audience: this.o.audience, clockTolerance: this.o.clockToleranceSeconds, currentDate: new Date(now) }
    try {
      return { payload: (await jwtVerify(token, key as JWTVerifyGetKey, options)).payload }
    } catch (err) {
      // Key rotation: a kid the cached set lacks is fetched for once per cooldown.
      if (err instanceof errors.JWKSNoMatchingKey && keys.kind === 'jwks' && !refetched && await keys.cache.unknownKey()) return await this.verified(token, now, true)
      return refusalOf(err, now, this.o)
    }
  }

  private admit (conn: ConnectionInfo, packet: IConnectPacket, payload: JWTPayload, now: number): Check | Refusal {
    const { o } = this
    if (typeof payload.iat === 'number' && payload.iat > now / 1000 + o.clockToleranceSeconds) {
      return { cause: 'not-yet-valid', detail: `issued in the future (iat ${new Date(payload.iat * 1000).toISOString()})` }
    }
    const username = payload[o.usernameClaim]
    if (typeof username !== 'string' || username === '') return { cause: 'claim-missing', detail: `no string claim ${o.usernameClaim} (usernameClaim)` }
    if (o.clientIdClaim !== undefined && payload[o.clientIdClaim] !== packet.clientId) {
      return { cause: 'client-id-differs', detail: `claim ${o.clientIdClaim} is ${shown(payload[o.clientIdClaim])}, the CONNECT's client ID ${shown(packet.clientId)}` }
    }
    let acl: TokenAcl | undefined
    if (o.aclClaim !== undefined && payload[o.aclClaim] !== undefined) {
      const parsed = parseAclClaim(payload[o.aclClaim])
      if ('problem' in parsed) return { cause: 'bad-acl-claim', detail: `claim ${o.aclClaim}: ${parsed.problem}` }
      acl = parsed
    }
    if (o.disconnectOnExpiry && typeof payload.exp === 'number') this.expiry.arm(conn, (payload.exp + o.clockToleranceSeconds) * 1000)
    conn.username = username
    return { ok: true, info: { username, groups: [], source: 'jwt', ...(acl !== undefined ? { acl } : {}) } }
  }

  /** doctor: an IdP whose JWKS fetches fail or are slow. */
  diagnose (): Finding[] {
    return this.keys.kind === 'jwks' ? jwksFindings(this.o, this.keys.cache.last, this.stats) : []
  }
}
