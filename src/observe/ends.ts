// How a connection ended, in one line an operator can act on: the one explainer. doctor's
// findings and the console's client page (observe/diagnostics.ts) and the client-id plugin's
// ban evidence (plugins/client-id/explain.ts) all say it with these words. Pure: the facts
// come in, the line goes out; the reason codes' words come from wire/reason-codes.ts.

import { ERRORS, type CloseReason } from '../errors.js'
import type { CloseInfo } from '../plugin/api.js'
import { disconnectMeaning } from '../wire/reason-codes.js'

/** What a Connection reports when it closes: CloseInfo, its reason typed. */
export interface ConnectionEnd extends CloseInfo {
  readonly reason: CloseReason
}

/** What is known of an end. Leave out what is not known; the line says less then. */
export interface EndFacts {
  readonly reason: CloseReason
  /** The close's detail: a socket error code, `CONNACK code 5`, a proxy error's message. */
  readonly detail: string | undefined
  /** Time since the client last sent anything. */
  readonly clientIdleMs: number
  /** The client's keepalive from CONNECT, in seconds (0: off). */
  readonly keepaliveS: number
  /** How long the connection lasted; with it, ends a peer chose say "after 42 s". */
  readonly durationMs?: number | undefined
  /** false: refused before a successful CONNACK; undefined: not known. */
  readonly admitted?: boolean | undefined
  /** MQTT 5 DISCONNECT reason code the broker sent, if it sent one. */
  readonly brokerReason?: number | undefined
  /** Set when client-id closed it for a newer connection with the same ID. */
  readonly takenOverBy?: { address: string, sameIdentity: boolean } | undefined
}

/**
 * A server closes a connection it heard nothing from for one and a half times the keepalive
 * [MQTT-3.1.2-24]: a close after that much silence from the client is a keepalive timeout,
 * whichever side closed first.
 */
export function keepaliveTimedOut (clientIdleMs: number, keepaliveS: number): boolean {
  return keepaliveS > 0 && clientIdleMs >= keepaliveS * 1500
}

function seconds (ms: number): string {
  return `${Math.round(ms / 100) / 10} s`
}

function keepaliveLine (end: EndFacts): string {
  return `keepalive timeout: nothing from the client for ${seconds(end.clientIdleMs)} with keepalive ${end.keepaliveS} s ` +
    '(device offline, or a NAT or firewall idle timeout shorter than the keepalive dropped the path?)'
}

/**
 * The end in words. A proxy error says its code and summary but not its detail (a free-text
 * message, logged and shown beside the words): ends are counted by their words.
 */
export function explainEnd (end: EndFacts): string {
  const after = end.durationMs === undefined ? '' : ` after ${seconds(end.durationMs)}`
  const by = end.takenOverBy
  if (by !== undefined) {
    return by.sameIdentity
      ? `taken over by a connection from ${by.address} with the same identity: the device reconnected before its old connection was closed`
      : `taken over by a connection from ${by.address}: two devices share this client ID?`
  }
  const timedOut = keepaliveTimedOut(end.clientIdleMs, end.keepaliveS)
  switch (end.reason) {
    case 'client-disconnect': return `clean DISCONNECT from the client${after}`
    case 'client-closed': return timedOut ? keepaliveLine(end) : `closed by the client without DISCONNECT${after}`
    case 'client-error': return `network error on the client side (${end.detail ?? 'unknown'})${after}`
    case 'broker-refused': return `refused by the broker (${end.detail ?? 'CONNACK'})`
    case 'broker-closed':
    case 'broker-error':
      if (end.brokerReason !== undefined) return disconnectMeaning(end.brokerReason)
      if (timedOut) return keepaliveLine(end)
      return `closed by the broker${after} (its log says why; with MQTT 3.1.1 a session takeover at the broker looks like this)`
    case 'GUARD_ERR_SESSION_TAKEN_OVER': return 'taken over by a newer connection with the same client ID'
    default:
      return `${end.admitted === false ? 'refused' : 'closed'} (${end.reason}): ${ERRORS[end.reason].summary}`
  }
}
