// auth: who may connect. Checks the CONNECT against a chain of sources (a client certificate,
// a JWT, a Mosquitto password file, users in Redis, an HTTP service), refuses with the MQTT
// code for the reason, slows down guessing, and decides which credentials the broker sees.

import type { IConnectPacket } from 'mqtt-packet'
import { definePlugin, type ConnectionInfo, type Finding, type HookResult, type PluginContext } from '../../src/plugin/api.js'
import { configError } from '../../src/errors.js'
import { WatchedFile } from '../../src/plugin/watched-file.js'
import { dummyLike, parsePasswordFile, verifyPassword, type PasswordFile, type PasswordHash } from './password-file.js'
import { BruteForce } from './brute-force.js'
import { SharedBruteForce } from './brute-force-redis.js'
import { PrimaryBruteForce, primarySide } from './brute-force-primary.js'
import { RedisUsers } from './redis-users.js'
import { authOptions, checkAuthOptions, type AuthOptions } from './options.js'
import { passwd } from './passwd.js'
import { ExpiryTimers, JwtSource } from './jwt.js'
import { HttpAuth } from './http-auth.js'
import type { Check } from './check.js'

export type { AuthOptions } from './options.js'

const GENERIC = 'bad user name or password'

class Auth {
  private readonly file: WatchedFile<PasswordFile> | undefined
  private readonly redisUsers: RedisUsers | undefined
  private readonly bruteForce: BruteForce | undefined
  /** Counters every instance (Redis) or every worker (the primary, workers: N) shares. */
  private readonly shared: SharedBruteForce | PrimaryBruteForce | undefined
  private readonly fallbackDummy: PasswordHash = dummyLike(undefined)
  private readonly jwt: JwtSource | undefined
  /** Token expiry timers (jwt.ts), kept across reloads: open connections keep theirs. */
  readonly expiry: ExpiryTimers
  /** After the password file and Redis users: a service asked over HTTP (http-auth.ts). */
  private readonly http: HttpAuth | undefined

  /** `before`: the instance a reload replaces; its guessing counters carry over when bruteForce is unchanged. */
  constructor (private readonly ctx: PluginContext<AuthOptions>, before?: Auth) {
    const { options } = ctx
    this.expiry = before?.expiry ?? new ExpiryTimers()
    if (options.jwt !== undefined) this.jwt = new JwtSource(options.jwt, ctx.metrics, this.expiry)
    if (options.passwordFile !== undefined) {
      // Absolute: validation resolved it against the config file's folder.
      this.file = new WatchedFile(options.passwordFile, parsePasswordFile, ctx.log)
      if (options.watch) this.file.watch()
    }
    if (options.redisUsers !== undefined) {
      if (ctx.redis === undefined) throw configError('redisUsers', 'needs the top-level redis setting (redis: redis://HOST:PORT)')
      this.redisUsers = new RedisUsers(ctx.redis, ctx.keyPrefix, options.redisUsers, options.redisTimeoutMs)
    }
    this.http = options.http === undefined ? undefined : new HttpAuth(options.http, ctx)
    if (options.bruteForce !== undefined && before?.bruteForce !== undefined && JSON.stringify(before.ctx.options.bruteForce) === JSON.stringify(options.bruteForce)) {
      this.bruteForce = before.bruteForce
      this.shared = before.shared
    } else if (options.bruteForce !== undefined) {
      this.bruteForce = new BruteForce(options.bruteForce)
      // With Redis the counters are shared by every proxy using the same key prefix.
      if (ctx.redis !== undefined) this.shared = new SharedBruteForce(ctx.redis, ctx.keyPrefix, options.bruteForce, ctx.log, options.redisTimeoutMs)
      else if (ctx.primary !== undefined) this.shared = new PrimaryBruteForce(ctx.primary)
    }
    ctx.log.info({
      passwordFile: this.file?.file, users: this.file?.value.users.size, redisUsers: this.redisUsers !== undefined, bruteForce: this.shared !== undefined ? 'shared' : this.bruteForce !== undefined ? 'local' : 'off',
      jwt: this.jwt?.describe(), allowAnonymous: options.allowAnonymous, upstreamCredentials: typeof options.upstreamCredentials === 'string' ? options.upstreamCredentials : 'fixed'
    }, 'auth ready')
  }

  /** The user name a verified client certificate gives, when `certificateUser` asks for one. */
  private certificateUser (conn: ConnectionInfo): string | undefined {
    const mode = this.ctx.options.certificateUser
    const cert = conn.certificate
    if (mode === 'off' || cert === undefined) return undefined
    if (mode === 'commonName') return cert.commonName
    const prefix = mode === 'email' ? 'email:' : 'DNS:'
    for (const entry of (cert.subjectAltName ?? '').split(/,\s*/)) {
      if (entry.startsWith(prefix)) return entry.slice(prefix.length)
    }
    return undefined
  }

  private get dummy (): PasswordHash {
    return this.file?.value.dummy ?? this.fallbackDummy
  }

  async connect (conn: ConnectionInfo, packet: IConnectPacket): Promise<HookResult> {
    const result = await this.check(conn, packet)
    if (!result.ok) {
      // Logged once, here; the password never is. The client only learns the generic reason,
      // so it cannot tell an unknown user from a wrong password. Who: the connection's logger.
      conn.log.warn({ plugin: 'auth', reason: result.reason, detail: result.detail }, 'auth refused')
      return { action: 'reject', code: result.code, reason: result.code === 'GUARD_ERR_BAD_CREDENTIALS' ? GENERIC : result.reason }
    }
    conn.identity = result.info
    conn.log.debug({ plugin: 'auth', source: result.info.source }, 'auth ok')
    return this.upstream(packet)
  }

  private async check (conn: ConnectionInfo, packet: IConnectPacket): Promise<Check> {
    const { username, password } = packet
    const byCertificate = this.certificateUser(conn)
    if (byCertificate !== undefined) {
      // The TLS listener verified the certificate against its CA: that is the login.
      if (username !== undefined && username !== byCertificate) {
        return { ok: false, code: 'GUARD_ERR_BAD_CREDENTIALS', reason: 'user-name-differs-from-certificate', count: true, detail: `certificate says ${byCertificate}` }
      }
      conn.username = byCertificate
      return { ok: true, info: { username: byCertificate, groups: [], source: 'certificate' } }
    }
    if (packet.properties?.authenticationMethod !== undefined) {
      // Enhanced authentication is not offered by this plugin [MQTT-4.12.0-1]: 0x8C.
      return { ok: false, code: 'GUARD_ERR_BAD_AUTH_METHOD', reason: 'authentication-method-unsupported', count: false, detail: packet.properties.authenticationMethod }
    }
    if (username === undefined && password === undefined) {
      if (this.ctx.options.allowAnonymous) return { ok: true, info: { username: undefined, groups: [], source: 'anonymous' } }
      return { ok: false, code: 'GUARD_ERR_NOT_AUTHORIZED', reason: 'no-credentials', count: false }
    }
    // A credential shaped like a JWT is the JWT source's to decide; anything else goes on.
    const token = this.jwt?.token(packet)
    if (token !== undefined) return await (this.jwt as JwtSource).check(conn, packet, token)
    const keys = [`address:${conn.address}`, ...(username !== undefined ? [`user:${username}`] : [])]
    const block = this.bruteForce?.blocked(keys) ?? await this.shared?.blocked(keys)
    if (block !== undefined) {
      return { ok: false, code: 'GUARD_ERR_BANNED', reason: 'blocked', count: false, detail: `${block.key} blocked until ${new Date(block.until).toISOString()}` }
    }
    let result = await this.verify(username, password ?? Buffer.alloc(0))
    // The local sources do not know the user: the HTTP hook decides (ignore: the next source).
    if (!result.ok && result.reason === 'unknown-user' && this.http !== undefined) result = await this.http.check(conn, packet) ?? result
    if (result.ok) {
      if (username !== undefined) {
        this.bruteForce?.succeeded(`user:${username}`)
        await this.shared?.succeeded(`user:${username}`)
      }
    } else if (result.count) {
      await this.failed(conn, keys)
    }
    return result
  }

  private async verify (username: string | undefined, password: Buffer): Promise<Check> {
    const bad = (reason: string): Check => ({ ok: false, code: 'GUARD_ERR_BAD_CREDENTIALS', reason, count: true })
    if (username === undefined) {
      await verifyPassword(this.dummy, password)
      return bad('no-user-name')
    }
    const hash = this.file?.value.users.get(username)
    if (hash !== undefined) {
      if (await verifyPassword(hash, password)) return { ok: true, info: { username, groups: [], source: 'file' } }
      return bad('wrong-password')
    }
    if (this.redisUsers !== undefined) {
      const lookup = await this.redisUsers.lookup(username)
      if ('unavailable' in lookup) {
        // A user that cannot be verified does not get in; "server unavailable" tells it to retry.
        return { ok: false, code: 'GUARD_ERR_UPSTREAM_UNAVAILABLE', reason: 'user-store-unavailable', count: false, detail: lookup.unavailable }
      }
      if (lookup.found) {
        if (await verifyPassword(lookup.user.hash, password)) return { ok: true, info: { username, groups: lookup.user.groups, source: 'redis' } }
        return bad('wrong-password')
      }
    }
    // Unknown users cost as much as known ones.
    await verifyPassword(this.dummy, password)
    return bad('unknown-user')
  }

  private async failed (conn: ConnectionInfo, keys: string[]): Promise<void> {
    if (this.bruteForce === undefined) return
    const local = this.bruteForce.failed(keys).blocked
    const shared = (await this.shared?.failed(keys))?.blocked ?? []
    // Either may start the block; each key's block is logged once here.
    const blocks = [
      ...shared.map((b) => ({ ...b, scope: this.shared instanceof PrimaryBruteForce ? 'workers' : 'redis' })),
      ...local.filter((b) => !shared.some((s) => s.key === b.key)).map((b) => ({ ...b, scope: 'process' }))
    ]
    for (const block of blocks) {
      const { maxFailures, windowMs, blockMs } = this.ctx.options.bruteForce as NonNullable<AuthOptions['bruteForce']>
      conn.log.warn({
        plugin: 'auth', key: block.key, scope: block.scope, failures: block.failures, maxFailures, windowMs, blockMs, until: new Date(block.until).toISOString()
      }, 'brute force: blocked')
    }
  }

  private upstream (packet: IConnectPacket): HookResult {
    const mode = this.ctx.options.upstreamCredentials
    if (mode === 'passthrough') return undefined
    const next: IConnectPacket = { ...packet }
    delete next.username
    delete next.password
    if (mode !== 'strip') {
      next.username = mode.username
      next.password = Buffer.from(mode.password, 'utf8')
    }
    return { action: 'continue', packet: next }
  }

  reload (): void {
    this.file?.reload()
    this.redisUsers?.clear()
    this.http?.hook.clear()
  }

  /** doctor: an IdP whose JWKS fails or is slow, an auth service that fails or is slow. */
  diagnose (): Finding[] {
    return [...this.jwt?.diagnose() ?? [], ...this.http?.hook.diagnose() ?? []]
  }

  close (): void {
    this.file?.close()
  }
}

export default definePlugin<AuthOptions>({
  name: 'auth',
  options: authOptions,
  validate: checkAuthOptions,
  authenticates: true,
  primary: primarySide,
  commands: { passwd },
  create (ctx) {
    let auth = new Auth(ctx)
    return {
      name: 'auth',
      in: { connect: async (conn, packet) => await auth.connect(conn, packet) },
      onClose: (conn) => { auth.expiry.clear(conn) },
      diagnose: () => auth.diagnose(),
      reload: () => { auth.reload() },
      // A reload's new options: the next CONNECT is checked under them (a password file that
      // cannot be read refuses them, and the running ones stay). Open connections were admitted.
      reconfigure: (options) => {
        const next = new Auth({ ...ctx, options: options as AuthOptions }, auth)
        auth.close()
        auth = next
      },
      close: () => { auth.close() }
    }
  }
})
