// The one table of MQTT reason codes in words: their names, what a refused CONNECT or PUBLISH
// usually means for the person at the client, and what a broker's DISCONNECT means for a
// fleet. The trace viewer names codes with these, `probe` explains a CONNACK with them, the
// embedded broker's bridge maps 3.1.1 CONNACK codes with them, and observe/ends.ts explains
// a connection's end with them.

// MQTT 5 reason codes [MQTT-2.4]; the meaning of 0x00-0x02 depends on the packet.
export const REASON_NAMES: Readonly<Record<number, string>> = {
  0x00: 'success', 0x04: 'disconnect with will', 0x10: 'no matching subscribers', 0x11: 'no subscription existed',
  0x18: 'continue authentication', 0x19: 're-authenticate', 0x80: 'unspecified error', 0x81: 'malformed packet',
  0x82: 'protocol error', 0x83: 'implementation specific error', 0x84: 'unsupported protocol version',
  0x85: 'client identifier not valid', 0x86: 'bad user name or password', 0x87: 'not authorized',
  0x88: 'server unavailable', 0x89: 'server busy', 0x8a: 'banned', 0x8b: 'server shutting down',
  0x8c: 'bad authentication method', 0x8d: 'keep alive timeout', 0x8e: 'session taken over', 0x8f: 'topic filter invalid',
  0x90: 'topic name invalid', 0x91: 'packet identifier in use', 0x92: 'packet identifier not found',
  0x93: 'receive maximum exceeded', 0x94: 'topic alias invalid', 0x95: 'packet too large', 0x96: 'message rate too high',
  0x97: 'quota exceeded', 0x98: 'administrative action', 0x99: 'payload format invalid', 0x9a: 'retain not supported',
  0x9b: 'qos not supported', 0x9c: 'use another server', 0x9d: 'server moved', 0x9e: 'shared subscriptions not supported',
  0x9f: 'connection rate exceeded', 0xa0: 'maximum connect time', 0xa1: 'subscription identifiers not supported',
  0xa2: 'wildcard subscriptions not supported'
}

// MQTT 3.1.1 CONNACK return codes [MQTT-3.2.2.3].
export const CONNACK_V3_NAMES: readonly string[] = ['accepted', 'unacceptable protocol version', 'identifier rejected',
  'server unavailable', 'bad user name or password', 'not authorized']

/** 3.1.1 CONNACK return code [MQTT-3.2.2.3] → the MQTT 5 reason code that means the same. */
export const CONNACK_V3_AS_V5 = [0x00, 0x84, 0x85, 0x88, 0x86, 0x87] as const

const CONNECT_FIXES: Readonly<Record<number, string>> = {
  0x80: 'the server failed without saying why: look at its log at the time of the attempt',
  0x81: 'the server could not read the CONNECT: a client library bug, or a proxy or load balancer altering the bytes',
  0x82: 'the CONNECT broke a protocol rule: a client library bug, or a 3.1.1-only server sent MQTT 5',
  0x84: 'the server does not speak this MQTT version: try -V 311 (or -V 5 for an MQTT 5 server)',
  0x85: 'the client ID was refused: too long, outside the server\'s allowed pattern, empty with a persistent session, or (behind mqtt-guard) in use by another user; choose another ID',
  0x86: 'the user name or password is wrong: check -u / -P against the server\'s password file',
  0x87: 'the credentials are accepted but the ACL refuses this client (no right to connect, or a will topic it may not publish to); Mosquitto also answers this for a wrong password; with no -u given: the server requires a user name',
  0x88: 'the server (behind mqtt-guard: the broker upstream, or Redis) is not available: check that it runs and is reachable, then retry',
  0x89: 'the server is overloaded: retry later with back-off',
  0x8a: 'this client is banned (mqtt-guard: a reconnect loop or repeated failed logins); wait for the ban to end and fix the cause',
  0x8b: 'the server is shutting down: retry against another instance',
  0x8c: 'the server does not support the authentication method: check the client\'s MQTT 5 authentication settings',
  0x95: 'the CONNECT is larger than the server accepts: shorten the will or the properties',
  0x97: 'a quota is exceeded (mqtt-guard: too many connections from this address): close idle clients or raise the limit',
  0x9c: 'the server asks the client to use another server (see its Server Reference)',
  0x9d: 'the server has moved (see its Server Reference)',
  0x9f: 'this address connects too often: slow the reconnect loop down (exponential back-off)'
}

/** A PUBACK / PUBREC refusal, and the likely fix at the client. */
const PUBLISH_FIXES: Readonly<Record<number, string>> = {
  0x87: 'the ACL does not let this client publish to the topic: choose one it may use with -t',
  0x97: 'a quota or rate limit refused the message: slow down',
  0x90: 'the topic name is invalid (wildcards, U+0000): choose another with -t'
}

// MQTT 5 DISCONNECT reason codes a broker sends, the ones that explain a flap [MQTT-3.14.2.1].
const DISCONNECT_MEANINGS: Readonly<Record<number, string>> = {
  0x00: 'the broker closed it normally',
  0x80: 'the broker gave an unspecified error',
  0x81: 'the broker found a malformed packet',
  0x82: 'the broker found a protocol error',
  0x87: 'not authorized (by the broker)',
  0x89: 'the broker is busy',
  0x8b: 'the broker is shutting down',
  0x8d: 'keepalive timeout (the broker heard nothing within 1.5 × keepalive)',
  0x8e: 'session taken over at the broker by another connection with this client ID: two devices share it?',
  0x93: 'receive maximum exceeded',
  0x95: 'packet too large for the broker',
  0x97: 'quota exceeded',
  0x9c: 'use another server',
  0x9d: 'server moved'
}

/** A reason code as `0x87 not authorized`. */
export function reasonText (code: number): string {
  return `0x${code.toString(16).padStart(2, '0')} ${REASON_NAMES[code] ?? 'unknown reason'}`
}

/** A CONNACK code in words, and for a refusal the likely fix. `version` is the protocol level. */
export function connackAdvice (version: number, code: number): { meaning: string, fix: string | undefined } {
  if (version !== 5) {
    const meaning = `${code} ${CONNACK_V3_NAMES[code] ?? 'unknown return code'}`
    return { meaning, fix: code === 0 ? undefined : CONNECT_FIXES[CONNACK_V3_AS_V5[code] ?? 0x80] ?? CONNECT_FIXES[0x80] }
  }
  return { meaning: reasonText(code), fix: code < 0x80 ? undefined : CONNECT_FIXES[code] ?? CONNECT_FIXES[0x80] }
}

/** The likely fix for a refused PUBLISH (PUBACK or PUBREC reason code from 0x80). */
export function publishFix (code: number): string {
  return PUBLISH_FIXES[code] ?? 'the server refused the message: its log says why'
}

/** What a broker's DISCONNECT with this reason code says about the connection's end. */
export function disconnectMeaning (code: number): string {
  return DISCONNECT_MEANINGS[code] ?? `the broker sent DISCONNECT 0x${code.toString(16)}`
}
