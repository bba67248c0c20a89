// Turns how a connection ended into one line an operator can act on. These lines are the
// evidence of a flapping ban: "taken over by a connection from 10.0.0.7: two devices share
// this client ID?", "keepalive timeout: ...". Pure, so it is tested on its own.

import { ERRORS, type ErrorCode } from '../../src/errors.js'
import type { CloseInfo } from '../../src/plugin/api.js'

export interface EndContext {
  /** The client's keepalive from CONNECT, in seconds (0: off). */
  keepaliveS: number
  durationMs: number
  /** MQTT 5 DISCONNECT reason code the broker sent, if it sent one. */
  brokerReason: number | undefined
  /** Set when this plugin closed the connection for a newer one with the same ID. */
  takenOverBy: { address: string, sameIdentity: boolean } | undefined
}

// MQTT 5 DISCONNECT reason codes a broker sends, the ones that explain a flap [MQTT-3.14.2.1].
const BROKER_REASONS: Record<number, string> = {
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

function seconds (ms: number): string {
  return `${Math.round(ms / 100) / 10} s`
}

function keepaliveTimedOut (info: CloseInfo, ctx: EndContext): boolean {
  return ctx.keepaliveS > 0 && info.clientIdleMs >= ctx.keepaliveS * 1000
}

function keepaliveLine (info: CloseInfo, ctx: EndContext): string {
  return `keepalive timeout: nothing from the client for ${seconds(info.clientIdleMs)} with keepalive ${ctx.keepaliveS} s ` +
    '(device offline, or a NAT or firewall idle timeout shorter than the keepalive dropped the path?)'
}

export function explainEnd (info: CloseInfo, ctx: EndContext): string {
  const after = `after ${seconds(ctx.durationMs)}`
  if (ctx.takenOverBy !== undefined) {
    return ctx.takenOverBy.sameIdentity
      ? `taken over by a connection from ${ctx.takenOverBy.address} with the same identity: the device reconnected before its old connection was closed`
      : `taken over by a connection from ${ctx.takenOverBy.address}: two devices share this client ID?`
  }
  switch (info.reason) {
    case 'client-disconnect': return `clean DISCONNECT from the client ${after}`
    case 'client-closed':
      return keepaliveTimedOut(info, ctx) ? keepaliveLine(info, ctx) : `closed by the client without DISCONNECT ${after}`
    case 'client-error': return `network error on the client side (${info.detail ?? 'unknown'}) ${after}`
    case 'broker-refused': return `refused by the broker (${info.detail ?? 'CONNACK'})`
    case 'broker-closed':
    case 'broker-error': {
      if (ctx.brokerReason !== undefined) return BROKER_REASONS[ctx.brokerReason] ?? `the broker sent DISCONNECT 0x${ctx.brokerReason.toString(16)}`
      if (keepaliveTimedOut(info, ctx)) return keepaliveLine(info, ctx)
      return `closed by the broker ${after} (its log says why; with MQTT 3.1.1 a session takeover at the broker looks like this)`
    }
  }
  if (info.reason in ERRORS) {
    const summary = ERRORS[info.reason as ErrorCode].summary
    return info.detail === undefined ? `closed by the proxy: ${summary}` : `closed by the proxy: ${summary} (${info.detail})`
  }
  return info.detail === undefined ? info.reason : `${info.reason} (${info.detail})`
}
