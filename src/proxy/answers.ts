// Turns a `reject` verdict into what MQTT says the proxy should answer, for the packet and the
// protocol version: a CONNACK code, a failure SUBACK entry, a PUBACK reason, or a disconnect.

import type { IConnackPacket, Packet } from 'mqtt-packet'
import { ERRORS, type ErrorCode } from '../errors.js'
import type { ProtocolVersion } from '../wire/codec.js'
import type { Direction } from '../plugin/api.js'

export interface Rejection {
  /** Packets sent back to where the refused packet came from. */
  answer: Packet[]
  /** Close the connection after answering. */
  close: boolean
}

/** MQTT 5 reason code for a refusal, falling back to 0x80 "unspecified error". */
export function reasonFor (code: ErrorCode): number {
  return ERRORS[code].reason ?? 0x80
}

/** MQTT 3.1.1 CONNACK code for a refusal, falling back to 3 "server unavailable". */
export function connackCodeFor (code: ErrorCode): number {
  return ERRORS[code].connack ?? 3
}

export function connackFor (version: ProtocolVersion, code: ErrorCode, reason?: string, serverReference?: string): IConnackPacket {
  if (version === 5) {
    // [MQTT-3.2.2-6]: a refusing CONNACK has session present 0.
    const properties = reason === undefined && serverReference === undefined
      ? undefined
      : { ...(reason === undefined ? {} : { reasonString: reason.slice(0, 200) }), ...(serverReference === undefined ? {} : { serverReference }) }
    return { cmd: 'connack', sessionPresent: false, reasonCode: reasonFor(code), ...(properties && { properties }) }
  }
  return { cmd: 'connack', sessionPresent: false, returnCode: connackCodeFor(code) }
}

export function rejectionFor (direction: Direction, version: ProtocolVersion, packet: Packet, code: ErrorCode): Rejection {
  const v5 = version === 5
  const reasonCode = reasonFor(code)
  switch (packet.cmd) {
    case 'connect':
      return { answer: [connackFor(version, code)], close: true }
    case 'connack':
      // The broker accepted but a plugin refuses: the client is told with the plugin's code.
      return { answer: [], close: true }
    case 'publish':
      return publishRejection(direction, v5, packet.qos, packet.messageId, reasonCode)
    case 'subscribe': {
      // [MQTT-3.9.3-1]: one return code per filter, in order; 0x80 is failure in 3.1.1.
      const granted = packet.subscriptions.map(() => v5 ? reasonCode : 0x80)
      return { answer: [{ cmd: 'suback', messageId: packet.messageId as number, granted }], close: false }
    }
    case 'unsubscribe':
      if (!v5) return { answer: [], close: true }
      return { answer: [{ cmd: 'unsuback', messageId: packet.messageId as number, granted: packet.unsubscriptions.map(() => reasonCode) } as Packet], close: false }
    default:
      return { answer: [], close: true }
  }
}

function publishRejection (direction: Direction, v5: boolean, qos: number, messageId: number | undefined, reasonCode: number): Rejection {
  // Towards the broker a refused delivery is still acknowledged, so the broker does not
  // redeliver it forever; the client never sees it.
  if (direction === 'out') {
    if (qos === 0) return { answer: [], close: false }
    const cmd = qos === 1 ? 'puback' : 'pubrec'
    return { answer: [v5 ? { cmd, messageId, reasonCode } as Packet : { cmd, messageId } as Packet], close: false }
  }
  // 3.1.1 has no way to say "refused" in a PUBACK: the connection is closed [MQTT-3.3.5-2].
  if (!v5) return { answer: [], close: true }
  if (qos === 0) return { answer: [], close: false }
  const cmd = qos === 1 ? 'puback' : 'pubrec'
  return { answer: [{ cmd, messageId, reasonCode } as Packet], close: false }
}
