// Workarounds for two aedes 1.2 defects that made a persistent subscriber of a retained message
// loop (disconnected about once a second, nothing received; moscajs/aedes#1003, open upstream).
// Both are applied through aedes's documented extension points (the `authorizeForward` hook and
// the persistence object), not by changing aedes's files, so an aedes upgrade cannot silently
// undo them: test/integration/embedded-retained.test.ts fails if either is needed and missing.
//
// 1. Delivery QoS above the granted QoS. aedes downgrades a delivery by looking up the
//    subscription under the message's topic name, which finds nothing for a wildcard filter:
//    a QoS 2 message reached a `demo/#` QoS 1 subscriber at QoS 2 (live and retained).
// 2. Acknowledgement of a retained delivery. aedes does not store retained deliveries to a
//    persistent session (clean session 0), so the subscriber's PUBREC finds no stored packet;
//    aedes answers with a client error and closes the connection. The client reconnects,
//    re-subscribes, gets the retained message again: the loop.

import type { Aedes, Client } from 'aedes'
import { topicMatches } from '../wire/topic-filter.js'

interface Granted { qos: number }

/** The client's subscriptions as aedes keeps them (not in aedes's typings). */
function subscriptionsOf (client: Client): Record<string, Granted | undefined> {
  return (client as unknown as { subscriptions?: Record<string, Granted | undefined> }).subscriptions ?? {}
}

/**
 * The highest QoS granted to any of the client's filters that match `topic`, or undefined when
 * none matches (a message the broker delivers for another reason, e.g. a will; left alone).
 */
export function grantedQos (subscriptions: Record<string, Granted | undefined>, topic: string): number | undefined {
  const exact = subscriptions[topic]
  if (exact !== undefined && exact.qos >= 2) return exact.qos
  let best: number | undefined
  for (const filter in subscriptions) {
    const qos = subscriptions[filter]?.qos
    if (qos === undefined || (best !== undefined && qos <= best)) continue
    if (topicMatches(filter, topic)) best = qos
  }
  return best
}

/**
 * A delivery's QoS is the minimum of the published QoS and the QoS granted to the subscription
 * (MQTT 3.1.1 and 5, section 3.8.4).
 * Wraps whatever authorizeForward the broker has, so a user's hook still runs first.
 */
function capDeliveryQos (broker: Aedes): void {
  const inner = broker.authorizeForward.bind(broker)
  broker.authorizeForward = (client, packet) => {
    const forwarded = inner(client, packet)
    if (forwarded === null || forwarded === undefined || forwarded.qos === 0) return forwarded
    const granted = grantedQos(subscriptionsOf(client), forwarded.topic)
    if (granted === undefined || granted >= forwarded.qos) return forwarded
    return { ...forwarded, qos: granted as 0 | 1 }
  }
}

interface Persistence {
  outgoingUpdate: (client: Client, packet: { cmd: string }) => Promise<void>
}

/**
 * The "not stored" errors of the two persistences the proxy uses: aedes-persistence (memory)
 * and aedes-persistence-redis. They carry no code, so their messages are the contract; the
 * test runs against both, so a library that renames them fails it rather than looping again.
 */
const NOT_STORED = new Set(['no such packet', 'unknown key'])

/**
 * A PUBREC for a delivery the persistence never stored still gets its PUBREL: the message was
 * delivered once, and completing the QoS 2 flow is all the client asks. Any other failure
 * (Redis down) still closes the client as before, so no session state is skipped silently.
 */
function releaseUnstoredDeliveries (broker: Aedes): void {
  const persistence = (broker as unknown as { persistence: Persistence }).persistence
  const update = persistence.outgoingUpdate.bind(persistence)
  persistence.outgoingUpdate = async (client, packet) => {
    try {
      await update(client, packet)
    } catch (err) {
      if (packet.cmd === 'pubrel' && err instanceof Error && NOT_STORED.has(err.message)) return
      throw err
    }
  }
}

export function applyEmbeddedWorkarounds (broker: Aedes): void {
  capDeliveryQos(broker)
  releaseUnstoredDeliveries(broker)
}
