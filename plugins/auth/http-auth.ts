// The auth plugin's HTTP source: asks a service in EMQX 5's HTTP authentication format
// (`{"result": "allow"|"deny"|"ignore", "is_superuser": bool}`) about a CONNECT the password
// file, Redis users (and JWT) did not decide. The shared client (src/plugin/http-hook.ts) bounds
// the time, the requests in flight, and stops asking a dead service (circuit breaker).
// Answers are cached under an HMAC of the whole request, so a changed password is asked again
// and no password is kept in clear.

import { createHmac, randomBytes } from 'node:crypto'
import type { IConnectPacket } from 'mqtt-packet'
import type { ConnectionInfo, PluginContext } from '../../src/plugin/api.js'
import type { Check } from './check.js'
import { HttpHook, httpHookSchema, isFailure, renderBody, type HttpHookOptions } from '../../src/plugin/http-hook.js'

export const AUTH_PLACEHOLDERS = ['clientid', 'username', 'password', 'peerhost', 'cert_common_name'] as const
/** The default request body: EMQX's placeholders, every value a string. */
export const AUTH_BODY = { clientid: '${clientid}', username: '${username}', password: '${password}', peerhost: '${peerhost}' }

export const httpAuthOptions = httpHookSchema(AUTH_PLACEHOLDERS, AUTH_BODY)
export type HttpAuthOptions = HttpHookOptions

export class HttpAuth {
  readonly hook: HttpHook
  /** Per process: cache keys cannot be reversed into passwords, nor compared across processes. */
  private readonly secret = randomBytes(32)

  constructor (options: HttpAuthOptions, ctx: Pick<PluginContext<unknown>, 'log' | 'metrics'>) {
    this.hook = new HttpHook(options, { log: ctx.log, metrics: ctx.metrics, metricPrefix: 'mqtt_guard_auth_http', name: 'auth' })
  }

  /** What the service decided; undefined: the next source (ignore, or a failure with onError next). */
  async check (conn: ConnectionInfo, packet: IConnectPacket): Promise<Check | undefined> {
    const body = renderBody(this.hook.options.body, {
      clientid: packet.clientId,
      username: packet.username,
      password: packet.password?.toString('utf8'),
      peerhost: conn.address,
      cert_common_name: conn.certificate?.commonName
    })
    const key = createHmac('sha256', this.secret).update(body).digest('base64')
    const answer = this.hook.cached(key) ?? await this.hook.ask(key, body)
    const username = packet.username
    if (isFailure(answer)) {
      const onError = this.hook.options.onError
      // Logged here with the cause; `auth refused` follows for deny (the connection's logger names who).
      conn.log.warn({ plugin: 'auth', hook: this.hook.target, cause: answer.cause, detail: answer.detail, onError }, 'auth http hook failed')
      if (onError === 'next') return undefined
      if (onError === 'allow') return { ok: true, info: { username, groups: [], source: 'http', superuser: false } }
      return { ok: false, code: 'GUARD_ERR_AUTH_SERVICE', reason: 'auth-service-unavailable', count: false, detail: `${answer.cause}: ${answer.detail}` }
    }
    if (answer.result === 'ignore') return undefined
    if (answer.result === 'deny') return { ok: false, code: 'GUARD_ERR_BAD_CREDENTIALS', reason: 'http-denied', count: true, detail: `${this.hook.target} said deny` }
    return { ok: true, info: { username, groups: [], source: 'http', superuser: answer.superuser } }
  }
}
