// The acl plugin's HTTP hook: a PUBLISH, a SUBSCRIBE filter or a will that no local rule
// decided (YAML rules, then the acl_file) is asked of a service in EMQX 5's HTTP authorization
// format (`{"result": "allow"|"deny"|"ignore"}`, 204 = allow). Answers are cached per client,
// topic, action, QoS and retain, so the hot path stays synchronous: the packet hook runs at
// once when every answer it needs is known, and returns a promise only on a cache miss (the
// answers are fetched first, then the synchronous hook runs and finds them). Deliveries
// (`receive`) are never asked: EMQX has no such action, so what no local rule decides is allowed.

import type { IConnectPacket, IPublishPacket, ISubscribePacket } from 'mqtt-packet'
import type { ConnectionInfo, Finding, PluginContext } from '../../src/plugin/api.js'
import { HttpHook, httpHookSchema, isFailure, renderBody, type HookAnswer, type HookFailure, type HttpHookOptions } from '../../src/plugin/http-hook.js'
import type { AclRequest, Decision } from './decision.js'
import { unshare } from './topic.js'

export const ACL_PLACEHOLDERS = ['clientid', 'username', 'peerhost', 'action', 'topic', 'qos', 'retain'] as const
/** The default request body: EMQX's placeholders, every value a string (`"qos": "1"`, `"retain": "false"`). */
export const ACL_BODY = { clientid: '${clientid}', username: '${username}', peerhost: '${peerhost}', action: '${action}', topic: '${topic}', qos: '${qos}', retain: '${retain}' }

export const httpAuthzOptions = httpHookSchema(ACL_PLACEHOLDERS, ACL_BODY)
export type HttpAuthzOptions = HttpHookOptions

const SUPERUSER: Decision = { allow: true, rule: 'superuser', text: 'is_superuser from the auth plugin\'s HTTP hook' }
const NOT_ASKED: Decision = { allow: false, rule: 'http', text: 'no answer from the HTTP hook' }
const RECEIVE: Decision = { allow: true, rule: 'http', text: 'deliveries are not asked of the HTTP hook' }

type Local = (conn: ConnectionInfo, req: AclRequest) => Decision

/** A denial no rule made (not a malformed shared subscription): the hook may decide instead. */
function fallsThrough (req: AclRequest, local: Decision): boolean {
  return !local.allow && local.rule === 'default deny' && (req.action !== 'subscribe' || unshare(req.topic) !== null)
}

export class HttpAuthz {
  private hook: HttpHook | undefined
  /** Answers fetched for the packet about to run (consumed by `decided`), per connection. */
  private readonly fetched = new WeakMap<ConnectionInfo, Map<string, Decision>>()
  private atClose = false
  private local: Local = () => NOT_ASKED
  private lastKey: { conn: ConnectionInfo, action: string, topic: string, qos: number, retain: boolean, clientId: string, username: string | undefined, key: string } | undefined

  constructor (private readonly ctx: Pick<PluginContext<unknown>, 'log' | 'metrics'>, options: HttpAuthzOptions | undefined) {
    this.configure(options)
  }

  /** New options at a reload (or none: the hook is off); the old answers go with the old hook. */
  configure (options: HttpAuthzOptions | undefined): void {
    this.hook = options === undefined ? undefined : new HttpHook(options, { log: this.ctx.log, metrics: this.ctx.metrics, metricPrefix: 'mqtt_guard_acl_http', name: 'acl' })
  }

  /** What the local rules say, without counting: asked before a packet to know what to fetch. */
  rules (local: Local): void {
    this.local = local
  }

  /**
   * The cache key of a question. A PUBLISH asks it twice (before its hook runs, to know what to
   * fetch, and when deciding): the last key is kept, so the second asking builds no string and
   * the cache finds the same string object (V8 keeps a string's hash on it).
   */
  private key (conn: ConnectionInfo, req: AclRequest): string {
    const last = this.lastKey
    if (last !== undefined && last.conn === conn && last.action === req.action && last.topic === req.topic && last.qos === req.qos && last.retain === req.retain &&
      last.clientId === conn.clientId && last.username === conn.username) return last.key
    const key = `${conn.address}\u0000${conn.clientId}\u0000${conn.username ?? '\u0001'}\u0000${req.action}\u0000${req.topic}\u0000${req.qos}\u0000${req.retain ? 1 : 0}`
    this.lastKey = { conn, action: req.action, topic: req.topic, qos: req.qos, retain: req.retain, clientId: conn.clientId, username: conn.username, key }
    return key
  }

  /** The final decision after the local rules (synchronous: the answer was fetched or cached). */
  decided (conn: ConnectionInfo, req: AclRequest, local: Decision): Decision {
    if (conn.identity?.superuser === true) return SUPERUSER
    const hook = this.hook
    if (hook === undefined || !fallsThrough(req, local)) return local
    if (req.action === 'receive') return RECEIVE
    const key = this.key(conn, req)
    const mine = this.fetched.get(conn)
    const fetched = mine?.get(key)
    if (fetched !== undefined) {
      mine?.delete(key)
      return fetched
    }
    const answer = hook.peek(key)
    if (answer !== undefined) return this.fromAnswer(hook, answer)
    // The will at close when its answer has expired: it was allowed at CONNECT, and nothing says otherwise.
    return this.atClose ? { allow: true, rule: 'http', text: 'will allowed at CONNECT' } : NOT_ASKED
  }

  private fromAnswer (hook: HttpHook, answer: HookAnswer): Decision {
    if (answer.result === 'ignore') return { allow: false, rule: 'default deny', text: `${hook.target} said ignore` }
    return { allow: answer.result === 'allow', rule: 'http', text: `${hook.target} said ${answer.result}` }
  }

  private fromFailure (conn: ConnectionInfo, req: AclRequest, hook: HttpHook, failure: HookFailure): Decision {
    const onError = hook.options.onError
    conn.log.warn({ plugin: 'acl', hook: hook.target, action: req.action, topic: req.topic, cause: failure.cause, detail: failure.detail, onError }, 'acl http hook failed')
    const text = `hook failed: ${failure.cause}, ${failure.detail} (onError ${onError})`
    if (onError === 'next') return { allow: false, rule: 'default deny', text }
    return { allow: onError === 'allow', rule: 'http', text }
  }

  /** Runs `run` once every request that needs the hook has its answer: at once when none is missing. */
  private before<R> (conn: ConnectionInfo, requests: AclRequest[], run: () => R): R | Promise<R> {
    const hook = this.hook
    if (hook === undefined || conn.identity?.superuser === true) return run()
    let missing: Array<{ key: string, req: AclRequest }> | undefined
    for (const req of requests) {
      if (!fallsThrough(req, this.local(conn, req))) continue
      const key = this.key(conn, req)
      if (hook.cached(key) === undefined) (missing ??= []).push({ key, req })
    }
    if (missing === undefined) return run()
    return this.fetch(conn, hook, missing).then(run)
  }

  private async fetch (conn: ConnectionInfo, hook: HttpHook, missing: Array<{ key: string, req: AclRequest }>): Promise<void> {
    const answers = await Promise.all(missing.map(async ({ key, req }) => await hook.ask(key, renderBody(hook.options.body, {
      clientid: conn.clientId, username: conn.username, peerhost: conn.address, action: req.action, topic: req.topic, qos: String(req.qos), retain: String(req.retain)
    }))))
    let mine = this.fetched.get(conn)
    if (mine === undefined) this.fetched.set(conn, mine = new Map())
    missing.forEach(({ key, req }, i) => {
      const answer = answers[i] as HookAnswer | HookFailure
      mine.set(key, isFailure(answer) ? this.fromFailure(conn, req, hook, answer) : this.fromAnswer(hook, answer))
    })
  }

  publish<R> (conn: ConnectionInfo, packet: IPublishPacket, run: () => R): R | Promise<R> {
    if (this.hook === undefined) return run()
    return this.before(conn, [{ action: 'publish', topic: packet.topic, qos: packet.qos, retain: packet.retain }], run)
  }

  subscribe<R> (conn: ConnectionInfo, packet: ISubscribePacket, run: () => R): R | Promise<R> {
    if (this.hook === undefined) return run()
    return this.before(conn, packet.subscriptions.map((s) => ({ action: 'subscribe', topic: s.topic, qos: s.qos, retain: false })), run)
  }

  /** The will, checked as a publish at CONNECT. */
  connect<R> (conn: ConnectionInfo, packet: IConnectPacket, run: () => R): R | Promise<R> {
    const will = packet.will
    if (this.hook === undefined || will === undefined || will === null) return run()
    return this.before(conn, [{ action: 'publish', topic: will.topic, qos: will.qos ?? 0, retain: will.retain ?? false }], run)
  }

  /** willAtClose is synchronous: it reads the cache, and a will whose answer expired stays allowed. */
  willAtClose (run: () => boolean): boolean {
    this.atClose = true
    try {
      return run()
    } finally {
      this.atClose = false
    }
  }

  /** SIGHUP: every answer is asked again. */
  clear (): void {
    this.hook?.clear()
  }

  diagnose (): Finding[] {
    return this.hook?.diagnose() ?? []
  }
}
