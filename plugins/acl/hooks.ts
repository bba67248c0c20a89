// The acl plugin's packet hooks. Per-connection state lives in a WeakMap keyed by the
// connection: partial SUBSCRIBEs awaiting their SUBACK, and QoS 2 flows the proxy completes
// itself (3.1.1 `drop` towards the client, refused deliveries towards the broker).

import type { IConnectPacket, IPublishPacket, IPubrelPacket, ISubackPacket, ISubscribePacket, Packet } from 'mqtt-packet'
import type { ConnectionInfo, HookResult } from '../../src/plugin/api.js'
import type { AclPolicy, AclRequest, Action, Decision } from './rules.js'
import { SubackMerger } from './suback.js'
import { DenialCounts } from './denials.js'
import type { Finding } from '../../src/observe/diagnostics.js'
import { cutFields } from '../../src/log/log.js'
import { decideByToken } from './token-rules.js'
import type { HttpAuthz } from './http-authz.js'

interface ConnState {
  readonly subs: SubackMerger
  /** 3.1.1 `drop`: QoS 2 publishes answered with PUBREC by the proxy, awaiting the client's PUBREL. */
  readonly refusedIn: Set<number>
  /** QoS 2 deliveries refused towards the broker, whose PUBREL the proxy answers with PUBCOMP. */
  readonly refusedOut: Set<number>
}

const ask = (action: Action, topic: string, qos: number, retain: boolean): AclRequest => ({ action, topic, qos, retain })
const NOT_AUTHORIZED = 'GUARD_ERR_NOT_AUTHORIZED'
/** Denied filters a SUBSCRIBE's one `acl denied` line names; the rest are only counted. */
export const DENIED_EXAMPLES = 5

export class AclHooks {
  private readonly states = new WeakMap<ConnectionInfo, ConnState>()
  private readonly wills = new WeakMap<ConnectionInfo, AclRequest>()
  private readonly denials = new DenialCounts()

  /** `http`: the HTTP hook (http-authz.ts), asked when no local rule decides. */
  constructor (private policy: AclPolicy, private onDeniedPublish: 'drop' | 'disconnect', private readonly http?: HttpAuthz) {}

  /** A reload's new rules: every connection's next packet is decided by them. */
  replace (policy: AclPolicy, onDeniedPublish: 'drop' | 'disconnect'): void {
    this.policy = policy
    this.onDeniedPublish = onDeniedPublish
  }

  private stateOf (conn: ConnectionInfo): ConnState {
    let s = this.states.get(conn)
    if (s === undefined) this.states.set(conn, s = { subs: new SubackMerger(), refusedIn: new Set(), refusedOut: new Set() })
    return s
  }

  /** Decides, and logs a denial once with what decided it (the connection's logger names who). */
  check (conn: ConnectionInfo, req: AclRequest): Decision {
    const decision = this.decide(conn, req)
    if (!decision.allow) conn.log.info({ plugin: 'acl', action: req.action, topic: req.topic, qos: req.qos, rule: decision.rule, ruleText: decision.text }, 'acl denied')
    return decision
  }

  /** Decides and counts a denial for `doctor`; logs nothing. */
  private decide (conn: ConnectionInfo, req: AclRequest): Decision {
    // Groups come from the acl's own `groups` map and from whoever authenticated the client
    // (auth's users in Redis carry theirs). Past the local rules, the HTTP hook (when set).
    const local = this.local(conn, req)
    const decision = this.http === undefined ? local : this.http.decided(conn, req, local)
    if (!decision.allow) this.denials.count(decision, req, conn.clientId)
    return decision
  }

  /** What the local rules say (the token's, YAML, then acl_file), counting nothing. */
  local (conn: ConnectionInfo, req: AclRequest): Decision {
    // Rules the client's token carries are asked first (auth's jwt.aclClaim).
    const who = { user: conn.username, clientId: conn.clientId }
    const byToken = conn.identity?.acl === undefined ? undefined : decideByToken(conn.identity.acl, who, req)
    return byToken ?? this.policy.decide(this.policy.principal(who, conn.identity?.groups), req)
  }

  /** `doctor`: the denials of the last minutes, by the rule that decided them. */
  diagnose (): Finding[] {
    return this.denials.findings()
  }

  /** The will is a publish the broker makes on the client's behalf [MQTT-3.1.2-8]. */
  connect (conn: ConnectionInfo, packet: IConnectPacket): HookResult {
    const will = packet.will
    if (will === undefined || will === null) return undefined
    const request = ask('publish', will.topic, will.qos ?? 0, will.retain ?? false)
    if (this.check(conn, request).allow) {
      this.wills.set(conn, request)
      return undefined
    }
    return { action: 'reject', code: NOT_AUTHORIZED, reason: 'acl: will topic denied' }
  }

  /** Checked again when the broker is about to publish it: the rules may have changed since CONNECT. */
  willAtClose (conn: ConnectionInfo): boolean {
    const will = this.wills.get(conn)
    return will === undefined || this.check(conn, will).allow
  }

  publish (conn: ConnectionInfo, packet: IPublishPacket): HookResult {
    const id = packet.messageId
    if (this.check(conn, ask('publish', packet.topic, packet.qos, packet.retain)).allow) {
      if (packet.qos === 2 && id !== undefined) this.states.get(conn)?.refusedIn.delete(id)
      return undefined
    }
    const reason = 'acl: publish denied'
    if (packet.qos === 0) return { action: 'drop', reason }
    // MQTT 5: the host answers PUBACK/PUBREC 0x87; 3.1.1 has no refusal code [MQTT-3.3.5-2].
    if (conn.protocolVersion === 5 || this.onDeniedPublish === 'disconnect') return { action: 'reject', code: NOT_AUTHORIZED, reason }
    if (packet.qos === 1) return { action: 'answer', packets: [{ cmd: 'puback', messageId: id }], reason }
    this.stateOf(conn).refusedIn.add(id as number)
    return { action: 'answer', packets: [{ cmd: 'pubrec', messageId: id }], reason }
  }

  /** The client's PUBREL for a QoS 2 publish the proxy dropped: the broker never saw it. */
  pubrelIn (conn: ConnectionInfo, packet: IPubrelPacket): HookResult {
    const id = packet.messageId as number
    if (this.states.get(conn)?.refusedIn.delete(id) !== true) return undefined
    return { action: 'answer', packets: [{ cmd: 'pubcomp', messageId: id }] }
  }

  subscribe (conn: ConnectionInfo, packet: ISubscribePacket): HookResult {
    const denied: number[] = []
    const examples: Array<Record<string, unknown>> = []
    packet.subscriptions.forEach((s, i) => {
      const decision = this.decide(conn, ask('subscribe', s.topic, s.qos, false))
      if (decision.allow) return
      denied.push(i)
      if (examples.length < DENIED_EXAMPLES) examples.push(cutFields({ filter: s.topic, qos: s.qos, rule: decision.rule, ruleText: decision.text }))
    })
    if (denied.length === 0) return undefined
    // One line per SUBSCRIBE, however many filters it denies: a client cannot multiply lines.
    conn.log.info({ plugin: 'acl', action: 'subscribe', filterCount: packet.subscriptions.length, deniedCount: denied.length, denied: examples }, 'acl denied')
    const failure = conn.protocolVersion === 5 ? 0x87 : 0x80 // [MQTT-3.9.3-1] one code per filter
    const messageId = packet.messageId as number
    if (denied.length === packet.subscriptions.length) {
      const suback = { cmd: 'suback', messageId, granted: denied.map(() => failure) } as ISubackPacket
      return { action: 'answer', packets: [suback], reason: 'acl: every filter denied' }
    }
    this.stateOf(conn).subs.remember(messageId, packet.subscriptions.length, denied, failure)
    const refused = new Set(denied)
    return { action: 'continue', packet: { ...packet, subscriptions: packet.subscriptions.filter((_s, i) => !refused.has(i)) } }
  }

  suback (conn: ConnectionInfo, packet: ISubackPacket): HookResult {
    const merged = this.states.get(conn)?.subs.merge(packet)
    return merged === undefined ? undefined : { action: 'continue', packet: merged }
  }

  /** A delivery: refused ones are acknowledged to the broker by the host, never shown to the client. */
  deliver (conn: ConnectionInfo, packet: IPublishPacket): HookResult {
    const id = packet.messageId
    if (this.check(conn, ask('receive', packet.topic, packet.qos, packet.retain)).allow) {
      if (packet.qos === 2 && id !== undefined) this.states.get(conn)?.refusedOut.delete(id)
      return undefined
    }
    // 3.1.1: the broker goes on with PUBREL, which pubrelOut answers. MQTT 5: PUBREC 0x87 ends it.
    if (packet.qos === 2 && id !== undefined) this.stateOf(conn).refusedOut.add(id)
    return { action: 'reject', code: NOT_AUTHORIZED, reason: 'acl: receive denied' }
  }

  pubrelOut (conn: ConnectionInfo, packet: IPubrelPacket): HookResult {
    const id = packet.messageId as number
    if (this.states.get(conn)?.refusedOut.delete(id) !== true) return undefined
    return { action: 'answer', packets: [{ cmd: 'pubcomp', messageId: id } as Packet] }
  }
}
