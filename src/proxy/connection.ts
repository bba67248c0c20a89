// One client connection and its own upstream connection to the broker: the relay.
// States: awaiting-connect → admitting → dialing → relaying → closed; the connect phase is in
// admission.ts, what a connection is and how it ends in connection-core.ts (one class chain,
// one object per connection: this file's methods are the packet path and call nothing extra).
// Each direction is a Lane: frames run through the plugin chain in order, and are forwarded as
// their original bytes unless a plugin changed them.

import type { Duplex } from 'node:stream'
import type { Packet } from 'mqtt-packet'
import { FRAME_TYPE, frameType, type Codec } from '../wire/codec.js'
import type { ErrorCode } from '../errors.js'
import type { TokenBucket } from './limits.js'
import { rejectionFor } from './answers.js'
import type { Outcome } from '../plugin/host.js'
import type { Direction } from '../plugin/api.js'
import { checkClientFrame, isPlainClientByte } from '../wire/header-check.js'
import type { ConnectionEnd } from '../observe/ends.js'
import { Failover } from './failover.js'
import type { Lane } from './lane.js'
import type { Peer } from './listeners.js'
import { receivedVerdict, type CoreDeps } from './connection-core.js'

export type { ConnectionState } from './connection-core.js'

/** Broker packets that need no more than forwarding: all but SUBACK (tracked) and DISCONNECT. */
const PLAIN_FROM_BROKER = 0xffff & ~((1 << FRAME_TYPE.suback) | (1 << FRAME_TYPE.disconnect))

export interface ConnectionDeps extends CoreDeps {
  readonly onClosed: (conn: Connection, info: ConnectionEnd) => void
  /** Told of each client PUBLISH a plugin stopped (for `doctor`). */
  readonly onRefusedPublish?: ((conn: Connection, topic: string, plugin: string | undefined) => void) | undefined
}

export class Connection extends Failover {
  declare protected readonly deps: ConnectionDeps

  constructor (client: Duplex, remote: Peer, deps: ConnectionDeps) {
    super(client, remote, deps)
  }

  // ---- the plain path ---------------------------------------------------------------------
  // Most frames of a relaying connection are only counted and forwarded: no trace, no session
  // record, no publish limit, no hook or observer for their type, and a type that needs no
  // other handling. The framer offers each frame here first as a range of the chunk it read
  // (`buf[start..end)`, no view made); such a frame goes straight to the other side's batch,
  // which is what relay() would do with it, without the lane and the layers in between. Only
  // while the lane is idle, so it cannot overtake a frame that waits for a hook. Every other
  // frame returns false here and takes the lane.

  protected plainFromClient (buf: Buffer, start: number, end: number): boolean {
    const first = buf[start] as number
    if (this.state !== 'relaying' || this.tap !== undefined || this.record !== null || this.publishRate !== null ||
      !isPlainClientByte(first) || ((this.deps.host.wanted('in') >> (first >> 4)) & 1) !== 0 || !this.inLane.idle) return false
    this.telemetry.seenSpan(0, first >> 4, buf, start, end)
    this.sides.toBrokerSpan(buf, start, end)
    return true
  }

  protected plainFromBroker (lane: Lane, buf: Buffer, start: number, end: number): boolean {
    const type = (buf[start] as number) >> 4
    if (this.state !== 'relaying' || this.tap !== undefined || this.record !== null ||
      (((PLAIN_FROM_BROKER & ~this.deps.host.wanted('out')) >> type) & 1) === 0 || lane !== this.outLane || !lane.idle) return false
    this.telemetry.seenSpan(1, type, buf, start, end)
    this.sides.toClientSpan(buf, start, end)
    return true
  }

  // ---- client → broker -------------------------------------------------------------------

  protected fromClient (frame: Buffer): void | Promise<void> {
    const type = frameType(frame)
    this.telemetry.seen(0, type, frame, this.codec)
    switch (this.state) {
      case 'awaiting-connect': return this.onConnect(frame, type)
      case 'admitting':
      case 'dialing': return this.queueEarly(frame, type)
      case 'relaying':
        if (type === FRAME_TYPE.publish && this.publishRate !== null && this.publishRate.take() > 0) return this.throttled(this.publishRate, frame, type)
        return this.relay('in', frame, type)
      // Moving to another broker: this frame, and the lane behind it, wait for the move.
      case 'rehoming': return (this.moving ?? Promise.resolve()).then(() => this.fromClient(frame))
      case 'closed': return undefined
    }
  }

  /**
   * limits.maxPublishesPerSecond: this PUBLISH waits for its token. The lane keeps order and
   * queues what follows; when its queue is full, reading from the client pauses.
   */
  private async throttled (bucket: TokenBucket, frame: Buffer, type: number): Promise<void> {
    this.deps.metrics.throttled.inc()
    for (let wait = bucket.take(); wait > 0; wait = bucket.take()) {
      await new Promise((resolve) => { setTimeout(resolve, wait) })
      if (this.state === 'closed') return
    }
    await this.relay('in', frame, type)
  }

  // ---- broker → client -------------------------------------------------------------------

  protected fromBroker (frame: Buffer): void | Promise<void> {
    const type = frameType(frame)
    this.telemetry.seen(1, type, frame, this.codec)
    if (this.state === 'relaying') return this.relay('out', frame, type)
    if (this.state === 'rehoming') return this.duringMove(frame, type)
    return this.beforeConnack(frame, type)
  }

  // ---- both directions -------------------------------------------------------------------

  protected relay (direction: Direction, frame: Buffer, type: number): void | Promise<void> {
    if (direction === 'in') {
      checkClientFrame(frame, this.protocolVersion === 5)
      if (type === FRAME_TYPE.connect) return this.close('GUARD_ERR_PROTOCOL', 'second CONNECT') // [MQTT-3.1.0-2]
      if (type === FRAME_TYPE.disconnect) {
        this.clientSentDisconnect = true
        if (this.hasWill) frame = this.disconnectWithWill(frame)
      }
    } else if (type === FRAME_TYPE.disconnect) {
      this.brokerSentDisconnect = true
    }
    if (!this.deps.host.wants(direction, type)) {
      this.tap?.received(direction === 'in' ? 'client' : 'broker', frame, 'forwarded', undefined, undefined)
      return this.forward(direction, frame)
    }
    const packet = (this.codec as Codec).decode(frame)
    if (packet.cmd === 'publish') (direction === 'in' ? this.inAliases : this.outAliases)?.resolve(packet)
    const outcome = this.deps.host.run(direction, this, packet, type)
    if (outcome instanceof Promise) return outcome.then((o) => { this.decided(direction, frame, o) })
    this.decided(direction, frame, outcome)
  }

  private decided (direction: Direction, frame: Buffer, outcome: Outcome): void {
    if (this.state === 'closed') return
    this.observe(direction, outcome, frame.length)
    this.tap?.received(direction === 'in' ? 'client' : 'broker', frame, receivedVerdict(outcome), outcome.plugin, outcome.packet)
    const { verdict, packet } = outcome
    if (verdict.action !== 'continue' && packet.cmd === 'publish') {
      (direction === 'in' ? this.inAliases : this.outAliases)?.withheld(packet)
      if (direction === 'in') this.deps.onRefusedPublish?.(this, packet.topic, outcome.plugin)
    }
    switch (verdict.action) {
      case 'continue': {
        const aliases = direction === 'in' ? this.inAliases : this.outAliases
        const reencode = outcome.changed || (packet.cmd === 'publish' && aliases !== null && aliases.needsTopic(packet))
        if (!reencode) return this.forward(direction, frame)
        const out = packet.cmd === 'publish' && aliases !== null ? aliases.prepare(packet) : packet
        return this.forward(direction, (this.codec as Codec).encode(out))
      }
      case 'drop': return undefined
      case 'answer': return this.answer(direction === 'in' ? 'client' : 'broker', verdict.packets)
      case 'reject': return this.reject(direction, packet, verdict.code, verdict.reason ?? `refused by ${outcome.plugin ?? 'a plugin'}`)
    }
  }

  private reject (direction: Direction, packet: Packet, code: ErrorCode, reason: string): void {
    const { answer, close } = rejectionFor(direction, this.protocolVersion, packet, code)
    this.answer(direction === 'in' ? 'client' : 'broker', answer)
    this.log.info({ direction, cmd: packet.cmd, code, reason }, 'packet refused')
    if (close) this.close(code, reason)
  }

  private forward (direction: Direction, bytes: Buffer): void {
    if (direction === 'in') this.toBroker(bytes)
    else this.toClient(bytes)
  }

  /** `made`: the proxy made this packet (an answer, a refusal), for traces. */
  protected toBroker (bytes: Buffer, made = false): void {
    if (this.record !== null) {
      const { frame, answer } = this.record.toBrokerFrame(bytes)
      if (answer !== undefined) this.answer('client', [answer])
      if (frame === null) return
      bytes = frame
    }
    this.tap?.sent('broker', bytes, made)
    this.sides.toBroker(bytes)
  }

  protected toClient (bytes: Buffer, made = false): void {
    if (this.record !== null) {
      const frame = this.record.toClientFrame(bytes)
      if (frame === null) return
      bytes = frame
    }
    this.telemetry.toClient(bytes, this.codec)
    this.tap?.sent('client', bytes, made)
    this.sides.toClient(bytes)
  }

  /** Trace started or stopped: ask the plugins again whether they tap this connection. */
  retap (): void {
    if (this.state !== 'awaiting-connect' && this.state !== 'closed') this.tap = this.deps.host.tapFor(this)
  }

  /** Sends proxy-made packets back towards `to` (the side a packet came from). */
  protected answer (to: 'client' | 'broker', packets: Packet[]): void {
    for (const p of packets) {
      const bytes = (this.codec as Codec).encode(p)
      if (to === 'client') this.telemetry.answered(p)
      if (to === 'client') {
        this.tap?.sent('client', bytes, true)
        this.sides.toClient(bytes)
      } else {
        this.toBroker(bytes, true)
      }
    }
  }

  protected observe (direction: Direction, outcome: Outcome, size: number): void {
    if (outcome.verdict.action !== 'continue') this.deps.metrics.verdicts.inc({ plugin: outcome.plugin ?? 'unknown', action: outcome.verdict.action })
    if (!this.deps.host.observing) return
    this.deps.host.observe({ conn: this, direction, packet: outcome.packet, size, verdict: outcome.verdict.action, plugin: outcome.plugin })
  }


  protected ended (info: ConnectionEnd): void {
    this.deps.onClosed(this, info)
  }
}
