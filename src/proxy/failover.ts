// failover: rehome (issue 21): a client whose broker fails moves to its next broker and keeps
// its socket. The proxy dials the next broker with the client's own CONNECT, keeps that
// CONNACK to itself, subscribes the client's granted filters again (their SUBACKs too), resends
// its unacknowledged QoS 1/2 PUBLISHes with DUP, and only then lets the client's packets
// through; they wait meanwhile in the client's lane (bounded by limits.maxQueuedPackets: past
// it the proxy stops reading the client until the move ends). What is moved is recorded by
// session-record.ts. A broker that closed one connection while it still answers its health
// check closed it on purpose (a takeover, a keepalive): that client is closed as before.

import type { IConnackPacket } from 'mqtt-packet'
import { FRAME_TYPE, type Codec } from '../wire/codec.js'
import { Admission } from './admission.js'
import type { Lane } from './lane.js'
import type { ConnectionView } from '../views.js'

/** DISCONNECT 0x00 in both versions: a normal end, the will discarded. */
const NORMAL_DISCONNECT = Buffer.from([0xe0, 0x00])

export abstract class Failover extends Admission {
  /** Resolves when a move ends (either way); the client's lane waits on it. */
  protected moving: Promise<void> | null = null
  /** Moves this connection made, for /connections and logs. */
  rehomed = 0
  /** The broker sent DISCONNECT (MQTT 5): it ended the connection on purpose. */
  protected brokerSentDisconnect = false
  /** This broker connection's loss is being handled (its 'end', 'close' and 'error' all come). */
  private lostHandled = false
  private onMoveConnack: ((packet: IConnackPacket) => void) | null = null

  protected override brokerView (): Pick<ConnectionView, 'broker' | 'rehomed'> {
    const view = super.brokerView()
    return this.rehomed === 0 ? view : { ...view, rehomed: this.rehomed }
  }

  /** The pool's call for a broker marked down or drained (pool.ts move). */
  rehome (why: string): void {
    if (this.state === 'rehoming') return // moving already (its broker socket ended first)
    if (!this.movable()) return this.close('GUARD_ERR_BROKER_DOWN', why)
    void this.move(why, false)
  }

  protected override brokerLost (lane: Lane): boolean {
    // The old broker of a move ('end', 'error' and 'close' all come), or one being handled.
    if (lane !== this.outLane || this.lostHandled || this.state === 'rehoming') return true
    const pool = this.broker
    if (pool === undefined) return false
    if (this.state === 'dialing' && this.connectSent !== undefined) {
      this.lostHandled = true
      void this.redial(pool)
      return true
    }
    if (this.movable()) {
      void this.move('the broker closed the connection', true)
      return true
    }
    if (this.state !== 'relaying' || this.clientSentDisconnect || this.brokerSentDisconnect || this.deps.upstream.probe === undefined) return false
    // Ended without DISCONNECT. One health check of that broker says which: it vanished
    // (killed, crashed, its host gone; the check also marks it down without waiting for the
    // next round), and MQTT 5 clients are told so, 0x8B or 0x9C with the Server Reference of
    // their next broker (redirect); or it is alive and closed this connection on purpose (a
    // takeover: Mosquitto sends no DISCONNECT for it), and the client is closed as before.
    // What the lane still holds for the client goes first.
    this.lostHandled = true
    const why = `broker ${pool} closed the connection without DISCONNECT`
    const probe = this.deps.upstream.probe(pool)
    const end = (alive: boolean): void => {
      if (alive) return this.close('broker-closed', 'the broker still answers its health check')
      const reference = this.deps.upstream.referenceFor?.(this, pool)
      if (reference !== undefined && this.protocolVersion === 5) this.close('GUARD_ERR_USE_ANOTHER_SERVER', why, reference)
      else this.close('GUARD_ERR_BROKER_DOWN', why)
    }
    void probe.then((alive) => {
      if (lane.idle) end(alive)
      else lane.whenIdle(() => { end(alive) })
    })
    return true
  }

  /**
   * The broker closed before its CONNACK (it died during the CONNECT): the client's next
   * broker gets the CONNECT, once; the client sees one CONNACK either way.
   */
  private async redial (from: string): Promise<void> {
    const sent = this.connectSent as NonNullable<typeof this.connectSent>
    this.sides.detachBroker()?.destroy()
    void this.deps.upstream.probe?.(from)
    try {
      const socket = await this.deps.upstream.dial(sent.packet, this, from)
      if (this.state !== 'dialing') {
        socket.destroy()
        return
      }
      this.lostHandled = false
      this.attachBroker(socket)
      this.made(sent.bytes)
    } catch (err) {
      if (this.state === 'dialing') this.refuseConnect('GUARD_ERR_UPSTREAM_UNAVAILABLE', `broker ${from} closed the connection during CONNECT; ${err instanceof Error ? err.message : String(err)}`)
    }
  }

  private movable (): boolean {
    return this.record !== null && this.record.usable && this.state === 'relaying' && !this.clientSentDisconnect && !this.clientEnded
  }

  /** The new broker's packets while moving: its CONNACK, the SUBACKs of the proxy's SUBSCRIBEs. */
  protected duringMove (frame: Buffer, type: number): void | Promise<void> {
    if (type === FRAME_TYPE.connack) {
      const packet = (this.codec as Codec).decode(frame) as IConnackPacket
      this.tap?.received('broker', frame, 'dropped', undefined, packet)
      this.onMoveConnack?.(packet)
      return undefined
    }
    // Only the SUBACKs are looked at here: any other frame is recorded once, on its way out.
    if (type === FRAME_TYPE.suback && this.record?.toClientFrame(frame) === null) {
      this.tap?.received('broker', frame, 'dropped', undefined, undefined) // a SUBACK of the proxy's own
      return undefined
    }
    return this.relay('out', frame, type)
  }

  /** A packet the proxy makes for the new broker: traced as the proxy's, not recorded. */
  private made (bytes: Buffer): void {
    this.tap?.sent('broker', bytes, true)
    this.sides.toBroker(bytes)
  }

  private async move (why: string, probeFirst: boolean): Promise<void> {
    const record = this.record
    const sent = this.connectSent
    if (record === null || sent === undefined) return
    const upstream = this.deps.upstream
    const from = this.broker
    const started = performance.now()
    this.state = 'rehoming'
    let release = (): void => {}
    this.moving = new Promise((resolve) => { release = resolve })
    // A broker still alive (drained, marked down while up) gets DISCONNECT 0x00: the client is
    // not gone, so its will must not be published there [MQTT-3.1.2-10].
    const old = this.sides.detachBroker()
    this.outLane = null // what the old broker still sends is not this connection's any more
    if (old !== null && !old.destroyed) {
      old.end(NORMAL_DISCONNECT)
      setTimeout(() => { old.destroy() }, 1000).unref()
    }
    const deadline = setTimeout(() => { this.close('GUARD_ERR_BROKER_DOWN', `${why}; no other broker took the client within connectTimeoutMs`) }, this.deps.limits.connectTimeoutMs)
    try {
      // Alive and answering: the broker ended this one connection itself.
      if (probeFirst && from !== undefined && upstream.probe !== undefined && await upstream.probe(from)) {
        return this.close('broker-closed', 'the broker closed the connection and still answers its health check: not moved')
      }
      if (this.state !== 'rehoming') return
      const socket = await upstream.dial(sent.packet, this, from)
      if (this.state !== 'rehoming') {
        socket.destroy()
        return
      }
      const connack = new Promise<IConnackPacket>((resolve) => { this.onMoveConnack = resolve })
      this.lostHandled = false
      this.attachBroker(socket)
      this.made(sent.bytes)
      const ack = await connack
      this.onMoveConnack = null
      const code = this.protocolVersion === 5 ? ack.reasonCode ?? 0 : ack.returnCode ?? 0
      if (code !== 0) return this.close('GUARD_ERR_BROKER_DOWN', `${why}; the next broker refused the client's CONNECT (code ${code})`)
      let subscribed = (): void => {}
      const acked = new Promise<void>((resolve) => { subscribed = resolve })
      const { subscribe, resend, answers } = record.moved(subscribed)
      // QoS 2 deliveries the client had acknowledged with PUBREC: their PUBREL, from the proxy.
      if (answers.length > 0) this.answer('client', answers)
      for (const f of subscribe) this.made(f)
      await acked
      if (this.state !== 'rehoming') return
      for (const f of resend) this.made(f)
      this.state = 'relaying'
      this.rehomed++
      const to = this.broker
      this.deps.metrics.rehomes.inc()
      this.log.info({ from, to, why, subscriptions: subscribe.length, resent: resend.length, ms: Math.round(performance.now() - started) }, 'connection re-homed to another broker')
    } catch (err) {
      this.close('GUARD_ERR_BROKER_DOWN', `${why}; ${err instanceof Error ? err.message : String(err)}`)
    } finally {
      clearTimeout(deadline)
      this.moving = null
      release()
    }
  }
}
