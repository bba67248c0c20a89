// One catalog of errors with stable codes, and the one vocabulary for how a connection ends.
// Each error carries the MQTT answer that goes with it: `connack` is the MQTT 3.1.1 CONNACK
// return code, `reason` the MQTT 5 reason code [MQTT-2.4]. Code never matches on message text,
// only on `code`. Every code is documented in docs/troubleshooting.md "Error codes" and used
// somewhere, or marked `reserved` with the issue that will use it (test/unit/errors-catalogue.test.ts).

export const ERRORS = {
  GUARD_ERR_CONFIG: { reason: undefined, connack: undefined, summary: 'configuration invalid' },
  GUARD_ERR_PLUGIN_LOAD: { reason: undefined, connack: undefined, summary: 'a plugin could not be loaded' },
  GUARD_ERR_LISTEN: { reason: undefined, connack: undefined, summary: 'a listener or the admin endpoint could not listen (address in use, not on this machine, or privileged)' },
  GUARD_ERR_MALFORMED: { reason: 0x81, connack: undefined, summary: 'malformed packet' },
  GUARD_ERR_PROTOCOL: { reason: 0x82, connack: undefined, summary: 'protocol error' },
  GUARD_ERR_ENCODE: { reason: 0x83, connack: undefined, summary: 'a packet could not be encoded' },
  GUARD_ERR_PACKET_TOO_LARGE: { reason: 0x95, connack: undefined, summary: 'packet larger than maxPacketSize' },
  GUARD_ERR_CONNECT_TIMEOUT: { reason: undefined, connack: undefined, summary: 'no CONNECT within connectTimeoutMs' },
  GUARD_ERR_UNSUPPORTED_PROTOCOL: { reason: 0x84, connack: 1, summary: 'unsupported protocol version' },
  GUARD_ERR_UPSTREAM_UNAVAILABLE: { reason: 0x88, connack: 3, summary: 'broker unreachable' },
  GUARD_ERR_STATE_UNAVAILABLE: { reason: 0x88, connack: 3, summary: 'shared state (Redis) unreachable' },
  GUARD_ERR_CONNACK_TIMEOUT: { reason: 0x88, connack: 3, summary: 'broker did not answer CONNECT in time' },
  GUARD_ERR_BROKER_DOWN: { reason: 0x8b, connack: undefined, summary: 'the client\'s broker was marked down (several brokers, failover: reconnect): reconnect, and the next CONNECT goes to another broker' },
  GUARD_ERR_BROKER_DRAINING: { reason: 0x8b, connack: undefined, summary: 'the client\'s broker is drained for maintenance (POST /upstreams/{n}/drain): reconnect, and the next CONNECT goes to another broker' },
  GUARD_ERR_USE_ANOTHER_SERVER: { reason: 0x9c, connack: undefined, summary: 'the client\'s broker was marked down (several brokers, failover: redirect): use the Server Reference given' },
  GUARD_ERR_QUEUE_FULL: { reason: 0x97, connack: 3, summary: 'too many packets queued before CONNACK' },
  GUARD_ERR_MAX_CONNECTIONS: { reason: 0x89, connack: 3, summary: 'maximum connections reached' },
  GUARD_ERR_ADDRESS_LIMIT: { reason: 0x97, connack: 3, summary: 'too many connections from this address (maxConnectionsPerAddress)' },
  GUARD_ERR_CONNECT_RATE: { reason: 0x9f, connack: 3, summary: 'connection rate exceeded (maxConnectsPerSecondPerAddress)' },
  GUARD_ERR_KEEPALIVE: { reason: 0x82, connack: 2, summary: 'keepalive above maxKeepaliveSeconds (MQTT 3.1.1 cannot be told a server keepalive)' },
  GUARD_ERR_SHUTTING_DOWN: { reason: 0x8b, connack: 3, summary: 'proxy shutting down' },
  GUARD_ERR_PLUGIN: { reason: 0x83, connack: 3, summary: 'a plugin failed' },
  GUARD_ERR_BAD_CREDENTIALS: { reason: 0x86, connack: 4, summary: 'bad user name or password' },
  GUARD_ERR_NOT_AUTHORIZED: { reason: 0x87, connack: 5, summary: 'not authorized' },
  GUARD_ERR_CLIENT_ID_REJECTED: { reason: 0x85, connack: 2, summary: 'client identifier not valid' },
  GUARD_ERR_BANNED: { reason: 0x8a, connack: 5, summary: 'banned' },
  GUARD_ERR_ADMIN_KICK: { reason: 0x98, connack: undefined, summary: 'closed by an operator (admin API)' },
  GUARD_ERR_SESSION_TAKEN_OVER: { reason: 0x8e, connack: undefined, summary: 'session taken over' },
  GUARD_ERR_QUOTA_EXCEEDED: { reason: 0x97, connack: 3, summary: 'quota exceeded: bytes per second over the quota plugin\'s limit, or too many connections for this user name' },
  GUARD_ERR_MESSAGE_RATE: { reason: 0x96, connack: undefined, summary: 'message rate too high: messages per second over the quota plugin\'s limit' },
  GUARD_ERR_TOKEN_EXPIRED: { reason: 0xa0, connack: undefined, summary: 'the JWT the client logged in with has expired (auth jwt.disconnectOnExpiry): reconnect with a new token' },
  GUARD_ERR_AUTH_SERVICE: { reason: 0x88, connack: 3, summary: 'the auth or authorization service (HTTP hook, JWKS) failed, timed out or its circuit is open, and onError is deny' },
  GUARD_ERR_BAD_AUTH_METHOD: { reason: 0x8c, connack: 4, summary: 'bad authentication method' },
  GUARD_ERR_TOPIC_INVALID: { reason: 0x90, connack: undefined, summary: 'topic name invalid' },
  GUARD_ERR_TOPIC_ALIAS_INVALID: { reason: 0x94, connack: undefined, summary: 'topic alias invalid' }
} as const satisfies Record<string, { reason: number | undefined, connack: number | undefined, summary: string, reserved?: string }>

export type ErrorCode = keyof typeof ERRORS

/**
 * How a connection can end other than by the proxy's decision (an error code): the client or
 * the broker ended it, or its socket failed. These strings are logged as `reason` and read by
 * tests and doctor: they do not change.
 */
export const PEER_ENDS = [
  /** The client sent DISCONNECT (also when the broker then closed first). */
  'client-disconnect',
  /** The client's socket closed without DISCONNECT. */
  'client-closed',
  /** The client's socket failed (ECONNRESET, ...). */
  'client-error',
  /** The broker answered CONNECT with a refusal, relayed to the client as it was. */
  'broker-refused',
  /** The broker's socket closed (its own DISCONNECT, a keepalive timeout, a takeover, ...). */
  'broker-closed',
  /** The broker's socket failed. */
  'broker-error'
] as const

export type PeerEnd = typeof PEER_ENDS[number]

/** Why a connection ended: the proxy's error code, or how a peer ended it. */
export type CloseReason = ErrorCode | PeerEnd

export function isErrorCode (reason: string): reason is ErrorCode {
  return Object.hasOwn(ERRORS, reason)
}

export function isCloseReason (reason: string): reason is CloseReason {
  return isErrorCode(reason) || (PEER_ENDS as readonly string[]).includes(reason)
}

export class GuardError extends Error {
  readonly code: ErrorCode
  /** Plugin that raised or decided it, when one did. */
  plugin: string | undefined
  /**
   * A config error's key and problem, apart (the message joins them), so that a caller that
   * checked a part of the config can put the key under its own (`plugins[0].` + `passwordFile`).
   */
  readonly setting: { readonly key: string, readonly problem: string } | undefined

  constructor (code: ErrorCode, message: string, options?: { cause?: unknown, plugin?: string, setting?: { key: string, problem: string }, serverReference?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'GuardError'
    this.code = code
    this.plugin = options?.plugin
    this.setting = options?.setting
    this.serverReference = options?.serverReference
  }

  /** GUARD_ERR_USE_ANOTHER_SERVER: where an MQTT 5 client is sent (CONNACK 0x9C). */
  readonly serverReference: string | undefined

  /** MQTT 5 reason code for this error, if one applies. */
  get reasonCode (): number | undefined {
    return ERRORS[this.code].reason
  }

  /** MQTT 3.1.1 CONNACK return code for this error, if one applies. */
  get connackCode (): number | undefined {
    return ERRORS[this.code].connack
  }
}

export function isGuardError (err: unknown): err is GuardError {
  return err instanceof GuardError
}

/** Config error that names the key: `plugins[1].policy: expected one of ...`. */
export function configError (key: string, problem: string): GuardError {
  return new GuardError('GUARD_ERR_CONFIG', key === '' ? problem : `${key}: ${problem}`, { setting: { key, problem } })
}
