// What a Redis client's error means to the operator: `err` is what ioredis or Node gave (a code
// where there is one), `detail` the cause in words and the key to change, for the errors whose
// cause is known: credentials refused (by Redis or by the Sentinels) and TLS that does not
// verify. Every 'error' listener of a client made in client.ts logs this, and /healthz and
// doctor show the last one while Redis is down.

import type { RedisTopology } from '../config/config.js'

export interface RedisErrorText {
  err: string
  detail?: string
}

// Redis' own error codes, the first word of an error reply (as READONLY in client.ts).
const AUTH_REPLY = /^(NOAUTH|WRONGPASS)\b/
// A Sentinel client that got the master's address from no Sentinel says so in one message and
// adds the last Sentinel's reply ("Last error: NOAUTH ..."), though the Sentinels were reached.
const SENTINELS_REFUSED = /^All sentinels are unreachable\b.*\bLast error: (NOAUTH|WRONGPASS)\b/s

const UNTRUSTED = 'TLS: Redis\' certificate is not signed by a CA in redis.tls.ca (without it, the system\'s CAs)'

/** Node's codes for a TLS failure whose cause is known, as the probe command words them. */
const TLS: Record<string, string> = {
  SELF_SIGNED_CERT_IN_CHAIN: UNTRUSTED,
  DEPTH_ZERO_SELF_SIGNED_CERT: UNTRUSTED,
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: UNTRUSTED,
  UNABLE_TO_GET_ISSUER_CERT: UNTRUSTED,
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: UNTRUSTED,
  CERT_SIGNATURE_FAILURE: UNTRUSTED,
  CERT_UNTRUSTED: UNTRUSTED,
  CERT_HAS_EXPIRED: 'TLS: Redis\' certificate has expired',
  CERT_NOT_YET_VALID: 'TLS: Redis\' certificate is not valid yet: check the clocks',
  ERR_TLS_CERT_ALTNAME_INVALID: 'TLS: Redis\' certificate does not name the host connected to: set redis.tls.servername to a name it holds',
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: 'TLS: Redis wants a client certificate (tls-auth-clients): give redis.tls.cert and redis.tls.key',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: 'TLS: Redis does not trust the proxy\'s client certificate: redis.tls.cert must be signed by a CA in Redis\' tls-ca-cert-file',
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: 'TLS: Redis refused the proxy\'s client certificate (redis.tls.cert)',
  ERR_SSL_WRONG_VERSION_NUMBER: 'TLS: the server does not speak TLS on this port: remove redis.tls and use redis://, or use Redis\' tls-port'
}

function refused (code: string, sentinels: boolean): string {
  const keys = sentinels ? 'redis.sentinelPassword or redis.sentinelPasswordFile (and redis.sentinelUsername for an ACL user)' : 'redis.password or redis.passwordFile (and redis.username for an ACL user)'
  const who = sentinels ? 'the Sentinels refused authentication' : 'Redis refused authentication'
  return code === 'NOAUTH' ? `${who}: ${sentinels ? 'they require' : 'it requires'} a password; set ${keys}` : `${who}: wrong user name or password; check ${keys}`
}

export function explainRedisError (error: Error & { code?: string }, topology: RedisTopology): RedisErrorText {
  const err = error.code ?? error.message
  const sentinels = topology === 'sentinel' ? SENTINELS_REFUSED.exec(error.message) : null
  if (sentinels?.[1] !== undefined) return { err: sentinels[1], detail: refused(sentinels[1], true) }
  const reply = AUTH_REPLY.exec(error.message)
  if (reply?.[1] !== undefined) return { err: reply[1], detail: refused(reply[1], false) }
  const tls = error.code === undefined ? undefined : TLS[error.code]
  return tls === undefined ? { err } : { err, detail: tls }
}

/** One line of the above, for /healthz and doctor. */
export function redisErrorLine (text: RedisErrorText): string {
  return text.detail === undefined ? text.err : `${text.err}: ${text.detail}`
}
