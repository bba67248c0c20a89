// Turns how a connection ended into one line an operator can act on. These lines are the
// evidence of a flapping ban: "taken over by a connection from 10.0.0.7: two devices share
// this client ID?", "keepalive timeout: ...". The words are the proxy's one explainer
// (src/observe/ends.ts), with what only this plugin knows: a takeover's address, the broker's
// DISCONNECT reason code, the connection's length.

import { isCloseReason } from '../../src/errors.js'
import { explainEnd as explain } from '../../src/observe/ends.js'
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

export function explainEnd (info: CloseInfo, ctx: EndContext): string {
  // CloseInfo's reason is a plain string in the plugin API; the proxy only ever sends CloseReasons.
  if (!isCloseReason(info.reason)) return info.detail === undefined ? info.reason : `${info.reason} (${info.detail})`
  return explain({ ...ctx, reason: info.reason, detail: info.detail, clientIdleMs: info.clientIdleMs })
}
