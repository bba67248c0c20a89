// What one client connection is, how the admin API shows it, and how it ends. The base of
// Connection (connection.ts: the relay) by way of Admission (admission.ts: the connect phase):
// split by role, one object per connection, so the packet path has no extra hop. Here: who the
// client is, its sockets and state, the /connections view, the timers, and closing (the
// DISCONNECT an MQTT 5 client is owed, the will, draining a lane before the close).

import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { Packet } from 'mqtt-packet'
import { fixedHeaderLength, type Codec, type ProtocolVersion } from '../wire/codec.js'
import { Framer } from '../wire/framer.js'
import { isErrorCode, isGuardError, type CloseReason, type ErrorCode, type PeerEnd } from '../errors.js'
import { Lane } from './lane.js'
import type { TokenBucket } from './limits.js'
import type { ConnectionLimits } from '../config/limits.js'
import type { TopicAliases } from '../wire/topic-alias.js'
import { reasonFor } from './answers.js'
import type { PluginHost, Outcome } from '../plugin/host.js'
import type { ConnectionInfo, Identity, PacketTap, ReceivedVerdict } from '../plugin/api.js'
import type { Upstream } from '../upstream/upstream.js'
import { Sides, CLOSE_GRACE_MS } from './sides.js'
import type { GuardMetrics } from '../observe/metrics.js'
import { Telemetry } from '../observe/telemetry.js'
import type { ConnectionEnd } from '../observe/ends.js'
import type { ConnectionView } from '../views.js'
import { ConnectionLog, type Who } from './connection-log.js'
import type { Peer } from './listeners.js'

let connections = 0

/** DISCONNECT with reason 0x00 in both versions: the session ends and the will is discarded. */
const NORMAL_DISCONNECT = Buffer.from([0xe0, 0x00])
const RECEIVED: Record<Outcome['verdict']['action'], ReceivedVerdict> = { continue: 'forwarded', drop: 'dropped', answer: 'answered', reject: 'refused' }

export function receivedVerdict (outcome: Outcome): ReceivedVerdict {
  return RECEIVED[outcome.verdict.action]
}

/** Unique per process, cheap: base-36 counter. */
function nextConnectionId (): string {
  return (++connections).toString(36)
}

export type ConnectionState = 'awaiting-connect' | 'admitting' | 'dialing' | 'relaying' | 'rehoming' | 'closed'

/** What every connection needs from the server; connection.ts adds the server's callbacks. */
export interface CoreDeps {
  readonly host: PluginHost
  readonly upstream: Upstream
  /**
   * The limits of the config in force when the connection was accepted (frozen; a reload
   * hands later connections the new ones). Read per packet as plain properties.
   */
  readonly limits: ConnectionLimits
  readonly log: Logger
  readonly metrics: GuardMetrics
  readonly listener: string
  /** Set when the proxy must refuse this connection once it has read its CONNECT. */
  readonly refuse?: ErrorCode | undefined
}

export abstract class ConnectionCore implements ConnectionInfo {
  readonly id = nextConnectionId()
  readonly openedAt = Date.now()
  readonly address: string
  readonly port: number
  readonly listener: string
  readonly certificate: Peer['certificate']
  clientId = ''
  private user: string | undefined
  /** Who the authenticating plugin says the client is; declared so every connection has one shape. */
  identity: Identity | undefined = undefined
  /** From CONNECT: its keepalive, and whether the session outlives the connection. */
  keepalive = 0
  persistentSession = false
  /** The CONNECT was read: clientId, username and keepalive are known. */
  identified = false
  /** A successful CONNACK reached the client. */
  accepted = false
  protocolVersion: ProtocolVersion = 4
  protected readonly logs: ConnectionLog
  state: ConnectionState = 'awaiting-connect'
  protected readonly sides: Sides
  /** Counts, sampled round trips and subscriptions, for /metrics and /connections. */
  readonly telemetry: Telemetry
  // One decoder per protocol version, shared: every decode is one whole frame, synchronously.
  protected codec: Codec | null = null
  protected readonly inLane: Lane
  protected outLane: Lane | null = null
  protected early: Buffer[] = []
  private timer: NodeJS.Timeout | null = null
  protected connackSent = false
  protected clientSentDisconnect = false
  /** The CONNECT the broker got carries a will. */
  protected hasWill = false
  protected inAliases: TopicAliases | null = null
  protected outAliases: TopicAliases | null = null
  private drainTimer: NodeJS.Timeout | null = null
  protected clientEnded = false
  private brokerEnded = false
  protected publishRate: TokenBucket | null = null
  /** Set while a plugin traces this connection; undefined otherwise (one check per packet). */
  protected tap: PacketTap | undefined

  /** Several brokers: the URL of the broker this connection's broker socket goes to (set when it is attached; a re-home changes it). */
  broker: string | undefined = undefined

  /** The connection's logger, bound to who it is, with its log budget (connection-log.ts). */
  get log (): Logger {
    return this.logs.log
  }

  private who (): Who {
    if (!this.identified) return { conn: this.id, address: this.address }
    return { conn: this.id, address: this.address, clientId: this.clientId, username: this.user }
  }

  /** From CONNECT; a plugin may set it (auth: a certificate's user name), and the log follows. */
  get username (): string | undefined {
    return this.user
  }

  set username (name: string | undefined) {
    if (name === this.user) return
    this.user = name
    this.logs.rebind()
  }

  constructor (client: Duplex, remote: Peer, protected readonly deps: CoreDeps) {
    this.address = remote.address
    this.port = remote.port
    this.certificate = remote.certificate
    this.listener = deps.listener
    this.logs = new ConnectionLog(deps.log, () => this.who())
    this.sides = new Sides(client)
    this.telemetry = new Telemetry(deps.metrics)
    this.inLane = new Lane((f) => this.fromClient(f), (e) => { this.failed(e) }, this.sides.clientValve, deps.limits.maxQueuedPackets)
    const framer = new Framer(deps.limits.maxPacketSize, (frame) => { this.inLane.push(frame) }, (buf, start, end) => this.plainFromClient(buf, start, end))
    this.sides.read('client', framer, (e) => { this.failed(e) })
    client.on('end', () => { this.clientGone() })
    client.on('close', () => { this.clientGone() })
    // A reset after the client's DISCONNECT (a client that destroys its socket with bytes unread)
    // is still the client's own goodbye: logs, flapping and doctor must not call it an error.
    client.on('error', (err: NodeJS.ErrnoException) => { this.close(this.clientSentDisconnect ? 'client-disconnect' : 'client-error', err.code ?? err.message) })
    this.startTimer(deps.limits.connectTimeoutMs, () => { this.close('GUARD_ERR_CONNECT_TIMEOUT', 'no CONNECT within connectTimeoutMs') })
    if (deps.log.isLevelEnabled('debug')) this.log.debug({ port: this.port, listener: this.listener }, 'connection opened')
  }

  // The packet path, in connection.ts.
  /** True when it forwarded `buf[start..end)` itself (the plain path); false: the frame takes the lane. */
  protected abstract plainFromClient (buf: Buffer, start: number, end: number): boolean
  protected abstract plainFromBroker (lane: Lane, buf: Buffer, start: number, end: number): boolean
  protected abstract fromClient (frame: Buffer): void | Promise<void>
  protected abstract toBroker (bytes: Buffer, made?: boolean): void
  protected abstract toClient (bytes: Buffer, made?: boolean): void
  protected abstract answer (to: 'client' | 'broker', packets: Packet[]): void
  /** Tells the server (and through it the plugins and doctor) that the connection closed. */
  protected abstract ended (info: ConnectionEnd): void

  /** What /connections shows. */
  view (): ConnectionView {
    return {
      id: this.id,
      clientId: this.clientId,
      username: this.username,
      address: this.address,
      port: this.port,
      protocolVersion: this.protocolVersion,
      listener: this.listener,
      since: new Date(this.openedAt).toISOString(),
      state: this.state,
      bytesIn: this.sides.bytesIn,
      bytesOut: this.sides.bytesOut,
      persistentSession: this.persistentSession,
      keepalive: this.keepalive,
      stalls: this.sides.clientStalls,
      stalledMs: this.sides.clientStalledMs(),
      queueFullHolds: this.sides.clientValve.queueFullHolds + (this.sides.brokerValve?.queueFullHolds ?? 0),
      subscriptions: [...this.telemetry.subscriptions].map(([filter, qos]) => ({ filter, qos })),
      ...this.brokerView()
    }
  }

  /** Several brokers: where the connection is (failover.ts adds its moves). */
  protected brokerView (): Pick<ConnectionView, 'broker' | 'rehomed'> {
    const broker = this.broker
    return broker === undefined ? {} : { broker }
  }

  // ---- closing ---------------------------------------------------------------------------

  /** The end of a drain: sockets that did not finish flushing in time are cut. */
  destroy (): void {
    this.close('GUARD_ERR_SHUTTING_DOWN', 'drain timeout')
    this.sides.destroy()
  }

  protected startTimer (ms: number, fire: () => void): void {
    this.clearTimer()
    this.timer = setTimeout(() => {
      this.timer = null
      fire()
    }, ms)
  }

  protected clearTimer (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }

  protected failed (err: unknown): void {
    if (isGuardError(err)) this.close(err.code, err.message)
    else this.close('GUARD_ERR_PLUGIN', err instanceof Error ? err.message : String(err))
  }

  /**
   * Closes both sides; idempotent. The broker side is ended without DISCONNECT unless the
   * client sent one, so the broker publishes the will of a client that vanished [MQTT-3.1.2-8].
   */
  close (reason: CloseReason, detail?: string, serverReference?: string): void {
    if (this.state === 'closed') return
    const wasRelaying = this.state === 'relaying'
    const neverConnected = this.state === 'awaiting-connect'
    this.state = 'closed'
    this.clearTimer()
    if (this.drainTimer !== null) clearTimeout(this.drainTimer)
    const code = isErrorCode(reason) ? reason : undefined
    // [MQTT-3.14.0-1]: the server sends DISCONNECT only after CONNACK, and only in MQTT 5.
    if (code !== undefined && this.protocolVersion === 5 && this.connackSent && this.codec !== null && !this.sides.client.destroyed) {
      // A Server Reference goes with 0x9C "use another server" (failover: redirect) [MQTT-4.11].
      const disconnect = serverReference === undefined
        ? { cmd: 'disconnect', reasonCode: reasonFor(code) } as const
        : { cmd: 'disconnect', reasonCode: reasonFor(code), properties: { serverReference } } as const
      this.toClient(this.codec.encode(disconnect), true)
    }
    if (this.hasWill && this.connackSent && !this.clientSentDisconnect && this.willWithheld()) {
      this.toBroker(NORMAL_DISCONNECT, true) // the broker discards the will [MQTT-3.1.2-10]
    }
    this.sides.end()
    // A socket that closed before CONNECT (a health check, a port scan) is not news at info.
    const level = code !== undefined && wasRelaying ? 'warn' : code === undefined && neverConnected ? 'debug' : 'info'
    this.logs.flush()
    if (this.deps.log.isLevelEnabled(level)) this.log[level]({ reason, detail }, 'connection closed')
    this.ended({ reason, detail, clientIdleMs: Date.now() - this.sides.clientDataAt })
  }

  /** True when a plugin no longer allows the will that the broker would now publish (logged). */
  private willWithheld (): boolean {
    const by = this.deps.host.willWithheldBy(this)
    if (by === undefined) return false
    this.log.info({ plugin: by }, 'will withheld: no longer allowed since CONNECT')
    return true
  }

  /** MQTT 5 DISCONNECT 0x04 asks the broker to publish the will: a normal one when it is withheld. */
  protected disconnectWithWill (frame: Buffer): Buffer {
    const at = fixedHeaderLength(frame)
    if (this.protocolVersion !== 5 || frame[at] !== 0x04 || !this.willWithheld()) return frame
    const normal = Buffer.from(frame)
    normal[at] = 0x00
    return normal
  }

  /**
   * The client closed its side. What it sent before still goes to the broker in order (a hook
   * may be awaiting Redis for it): close once its lane is drained, or after a grace period.
   * Before CONNACK the early packets wait for the broker's answer, bounded by the CONNACK timer.
   */
  protected clientGone (): void {
    if (this.clientEnded) return
    this.clientEnded = true
    this.closeWhenDrained(this.inLane, () => this.clientSentDisconnect ? 'client-disconnect' : 'client-closed')
  }

  /** The broker side of `lane` ended or failed: true when failover takes it from here. */
  protected brokerLost (_lane: Lane): boolean {
    return false
  }

  protected brokerGone (lane: Lane): void {
    if (this.brokerLost(lane)) return
    if (this.brokerEnded) return
    this.brokerEnded = true
    // After the client's DISCONNECT the broker closes first, often before the client does:
    // the client ended it, and logs, flapping counts and doctor must say so.
    this.closeWhenDrained(lane, () => this.clientSentDisconnect ? 'client-disconnect' : 'broker-closed')
  }

  private closeWhenDrained (lane: Lane, reason: () => PeerEnd): void {
    if (this.state === 'closed') return
    if (this.state === 'admitting' || (this.state === 'dialing' && lane === this.inLane)) return // see Admission.onConnack
    if (lane.idle) return this.close(reason())
    this.drainTimer ??= setTimeout(() => { this.close(reason(), 'plugins did not finish in time') }, CLOSE_GRACE_MS)
    lane.whenIdle(() => { this.close(reason()) })
  }
}
