// Pure packet translations between MQTT 5 (client side) and MQTT 3.1.1 (aedes side), used by
// version-bridge.ts. Everything MQTT 5 adds that 3.1.1 cannot carry is dropped here; what that
// costs a client is listed next to each function. No I/O and no state beyond the arguments.

import type {
  IConnackPacket, IConnectPacket, IPubackPacket, IPubcompPacket, IPublishPacket, IPubrecPacket,
  IPubrelPacket, ISubackPacket, ISubscribePacket
} from 'mqtt-packet'
import { GuardError } from '../errors.js'
import { CONNACK_V3_AS_V5 } from '../wire/reason-codes.js'

type AckPacket = IPubackPacket | IPubrecPacket | IPubrelPacket | IPubcompPacket

/** Prefix of a shared subscription filter (MQTT 5 section 4.8.2). aedes 1.x has no `$share` support. */
export const SHARED_PREFIX = '$share/'

// SUBACK reason codes for features the CONNACK declared unavailable (MQTT 5 section 3.9.3).
const SUBACK_SHARED_NOT_SUPPORTED = 0x9e
const SUBACK_SUB_IDS_NOT_SUPPORTED = 0xa1

/** The message ID that a parsed acknowledgement or (un)subscribe always carries. */
export function messageIdOf (packet: { cmd: string, messageId?: number }): number {
  if (packet.messageId === undefined) {
    throw new GuardError('GUARD_ERR_MALFORMED', `${packet.cmd} without a packet identifier`)
  }
  return packet.messageId
}

/**
 * CONNECT 5 -> 3.1.1. 3.1.1 has one "clean session" flag for both ends of a session, MQTT 5
 * splits it into Clean Start and Session Expiry Interval. The session's lifetime matters more
 * than its start, so expiry > 0 maps to clean=false (aedes keeps the session, with no expiry)
 * and expiry 0 to clean=true. Lost: "clean start but keep the session afterwards" resumes an
 * existing session instead of discarding it, and "resume but discard at the end" starts empty.
 * All properties and will properties (will delay, message expiry, ...) are dropped.
 */
export function connectToV4 (packet: IConnectPacket, assignClientId: () => string):
{ connect: IConnectPacket, assignedClientId: string | undefined } {
  const expiry = packet.properties?.sessionExpiryInterval ?? 0
  // An MQTT 5 server assigns an identifier for an empty one [MQTT-3.1.3-6] and reports it in
  // CONNACK [MQTT-3.2.2-16]. 3.1.1 allows an empty one only with clean=1 (3.1.1 [MQTT-3.1.3-7]),
  // so the bridge assigns it itself: then a persistent session can be resumed with that ID.
  const assignedClientId = packet.clientId === '' ? assignClientId() : undefined
  const connect: IConnectPacket = {
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clientId: assignedClientId ?? packet.clientId,
    clean: expiry === 0,
    keepalive: packet.keepalive ?? 0
  }
  if (packet.username !== undefined) connect.username = packet.username
  if (packet.password !== undefined) {
    connect.password = packet.password
    // MQTT 5 allows a password without a user name (MQTT 5 section 3.1.2.9); 3.1.1 does not
    // (3.1.1 [MQTT-3.1.2-22]), so an empty user name goes with it.
    connect.username ??= ''
  }
  const will = packet.will
  if (will !== undefined) {
    connect.will = { topic: will.topic, payload: will.payload, qos: will.qos ?? 0, retain: will.retain ?? false }
  }
  return { connect, assignedClientId }
}

/**
 * CONNACK 3.1.1 -> 5. On success the properties tell the client what the embedded broker
 * cannot do, so a conforming client never sends what the bridge would have to drop or refuse.
 */
export function connackToV5 (packet: IConnackPacket, assignedClientId: string | undefined): IConnackPacket {
  // aedes also uses a non-standard 6 (keep-alive limit); it and anything unknown become
  // 0x80 (unspecified error).
  const reasonCode = CONNACK_V3_AS_V5[packet.returnCode ?? -1] ?? 0x80
  // [MQTT-3.2.2-6] session present is 0 with any failure reason code.
  if (reasonCode !== 0) return { cmd: 'connack', sessionPresent: false, reasonCode }
  const properties: NonNullable<IConnackPacket['properties']> = {
    // Topic Alias Maximum is left out: absent means 0, the client must not send aliases
    // [MQTT-3.2.2-17]. Maximum QoS is left out: absent means 2, which aedes supports.
    retainAvailable: true,
    wildcardSubscriptionAvailable: true,
    // aedes 1.x neither assigns nor returns subscription identifiers, and has no `$share`.
    subscriptionIdentifiersAvailable: false,
    sharedSubscriptionAvailable: false
  }
  // [MQTT-3.2.2-16] the client learns the identifier the bridge assigned for it.
  if (assignedClientId !== undefined) properties.assignedClientIdentifier = assignedClientId
  // Session present is kept even when the client asked for a clean start with expiry > 0
  // (see connectToV4): it tells the truth about the resumed session.
  return { cmd: 'connack', sessionPresent: packet.sessionPresent, reasonCode, properties }
}

/** PUBLISH either way: topic, payload and flags; MQTT 5 properties are dropped. */
export function publishWithoutProperties (packet: IPublishPacket): IPublishPacket {
  const out: IPublishPacket = {
    cmd: 'publish', topic: packet.topic, payload: packet.payload, qos: packet.qos, retain: packet.retain, dup: packet.dup
  }
  if (packet.qos > 0) out.messageId = messageIdOf(packet)
  return out
}

/** PUBACK/PUBREC/PUBREL/PUBCOMP 5 -> 3.1.1: 3.1.1 has no reason code, so a refusal is lost. */
export function ackToV4 (packet: AckPacket): AckPacket {
  return { cmd: packet.cmd, messageId: messageIdOf(packet) }
}

/** PUBACK/PUBREC/PUBREL/PUBCOMP 3.1.1 -> 5: a 3.1.1 acknowledgement is always a success. */
export function ackToV5 (packet: AckPacket): AckPacket {
  // An explicit 0 lets mqtt-packet use the short form without reason code (MQTT 5 section 3.4.2.1).
  return { cmd: packet.cmd, messageId: messageIdOf(packet), reasonCode: 0 }
}

/**
 * SUBSCRIBE 5 -> 3.1.1. Only topic and QoS survive: No Local, Retain As Published and Retain
 * Handling options have no 3.1.1 encoding, so aedes applies its defaults (own messages are
 * delivered, retain flag cleared on forwarded messages, retained messages sent on every
 * subscribe). CONNACK declared shared subscriptions and subscription identifiers unavailable;
 * a filter using one anyway is refused with its SUBACK reason code (0x9E, 0xA1) rather than a
 * DISCONNECT, so the rest of the client's subscriptions keep working. Forwarding a `$share/...`
 * filter would make aedes subscribe to a topic literally named that.
 * `local[i]` is the bridge's own reason code for entry i, undefined when aedes decides it.
 */
export function subscribeToV4 (packet: ISubscribePacket):
{ forward: ISubscribePacket | null, local: Array<number | undefined> } {
  const withId = packet.properties?.subscriptionIdentifier !== undefined
  const local = packet.subscriptions.map((sub) => {
    if (withId) return SUBACK_SUB_IDS_NOT_SUPPORTED
    return sub.topic.startsWith(SHARED_PREFIX) ? SUBACK_SHARED_NOT_SUPPORTED : undefined
  })
  const subscriptions = packet.subscriptions
    .filter((_sub, i) => local[i] === undefined)
    .map((sub) => ({ topic: sub.topic, qos: sub.qos }))
  const forward: ISubscribePacket | null = subscriptions.length === 0
    ? null
    : { cmd: 'subscribe', messageId: messageIdOf(packet), subscriptions }
  return { forward, local }
}

/**
 * SUBACK 3.1.1 -> 5: granted QoS 0/1/2 are also the MQTT 5 success codes and 0x80 is
 * "unspecified error" in both (section 3.9.3 of each). Local codes from subscribeToV4 are merged back in
 * their original positions.
 */
export function subackToV5 (messageId: number, granted: number[], local: Array<number | undefined>): ISubackPacket {
  const forwarded = local.filter((code) => code === undefined).length
  if (granted.length !== forwarded) {
    throw new GuardError('GUARD_ERR_PROTOCOL',
      `broker SUBACK ${messageId} has ${granted.length} codes for ${forwarded} filters`)
  }
  let next = 0
  const codes = local.map((code) => code ?? (granted[next++] as number))
  return { cmd: 'suback', messageId, granted: codes }
}
