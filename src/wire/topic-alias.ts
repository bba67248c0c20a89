// MQTT 5 topic aliases [MQTT-3.3.2.3.4], tracked per direction so plugins always see the real
// topic. The receiver's table mirrors the sender's because unchanged packets are forwarded as
// their original bytes; only when a plugin changes a packet does the proxy have to take care
// that what it sends keeps the receiver's table the same as the sender's.

import type { IPublishPacket } from 'mqtt-packet'
import { GuardError } from '../errors.js'

export class TopicAliases {
  private readonly topics = new Map<number, string>()
  // Aliases the sender set up in a packet the proxy re-encoded without them: the receiver
  // has not learnt them yet, so the next use must carry the topic again.
  private readonly unsent = new Set<number>()

  constructor (private readonly maximum: number) {}

  /** Fills in `packet.topic` when only an alias was sent; learns new aliases. */
  resolve (packet: IPublishPacket): void {
    const alias = packet.properties?.topicAlias
    if (alias === undefined) return
    if (alias === 0 || alias > this.maximum) {
      // [MQTT-3.3.2-8], [MQTT-3.3.2-9]
      throw new GuardError('GUARD_ERR_TOPIC_ALIAS_INVALID', `topic alias ${alias} outside 1..${this.maximum}`)
    }
    if (packet.topic === '') {
      const topic = this.topics.get(alias)
      if (topic === undefined) throw new GuardError('GUARD_ERR_PROTOCOL', `topic alias ${alias} used before it was set`)
      packet.topic = topic
    } else {
      this.topics.set(alias, packet.topic)
    }
  }

  /** True when an unchanged packet can't be forwarded as its bytes (see `unsent`). */
  needsTopic (packet: IPublishPacket): boolean {
    const alias = packet.properties?.topicAlias
    return alias !== undefined && this.unsent.has(alias)
  }

  /**
   * The packet was not forwarded (dropped, answered or refused): if it set up an alias, the
   * receiver has not learnt it, so the alias's next use must carry the topic again.
   */
  withheld (packet: IPublishPacket): void {
    const alias = packet.properties?.topicAlias
    if (alias !== undefined) this.unsent.add(alias)
  }

  /**
   * Makes a packet that is about to be re-encoded consistent with the receiver's table:
   * the same topic keeps its alias (sent with the topic, which re-sets it to the same value);
   * a changed topic drops the alias, so the receiver's mapping stays the sender's.
   */
  prepare (packet: IPublishPacket): IPublishPacket {
    const alias = packet.properties?.topicAlias
    if (alias === undefined) return packet
    if (this.topics.get(alias) === packet.topic) {
      this.unsent.delete(alias)
      return packet
    }
    this.unsent.add(alias)
    const { topicAlias: _dropped, ...properties } = packet.properties ?? {}
    return { ...packet, properties }
  }
}
