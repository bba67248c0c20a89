// The admin API as the commands call it (doctor, reload, trace start|list|stop): where it is, its
// bearer token, and one JSON request. The same flags, variables and defaults for each.

import { parseCommand, usageError, type Command } from '../../plugin/args.js'

/** The flags every admin-calling command takes, for its parseArgs options. */
export const ADMIN_OPTIONS = { admin: { type: 'string' }, token: { type: 'string' } } as const

export const ADMIN_USAGE = `  --admin URL      the proxy's admin endpoint: http://HOST:PORT, https://… or HOST:PORT
                   (default http://127.0.0.1:9884, env MQTT_GUARD_ADMIN_URL)
  --token TOKEN    its bearer token (env MQTT_GUARD_ADMIN_TOKEN)
`

const DEFAULT_URL = 'http://127.0.0.1:9884'
const TIMEOUT_MS = 10_000

/** A request that got no usable answer: unreachable, timed out, or the token was refused. */
export class AdminUnavailable extends Error {}

export class AdminClient {
  private constructor (readonly url: string, private readonly token: string | undefined) {}

  /** The client for these flags (the environment as fallback), or what is wrong with `--admin`. */
  static from (values: { admin?: string | undefined, token?: string | undefined }, env: NodeJS.ProcessEnv = process.env): AdminClient | string {
    const given = values.admin ?? env.MQTT_GUARD_ADMIN_URL ?? DEFAULT_URL
    // HOST:PORT is what `start --admin` takes: the same words reach the same endpoint.
    const url = (/^[a-z][a-z0-9+.-]*:\/\//i.test(given) ? given : `http://${given}`).replace(/\/+$/, '')
    if (!/^https?:\/\/[^/]/i.test(url)) return `--admin: expected http://HOST:PORT or HOST:PORT, got ${given}`
    const token = values.token ?? env.MQTT_GUARD_ADMIN_TOKEN
    return new AdminClient(url, token === '' ? undefined : token)
  }

  /** The answer's status and JSON body (null when it has none); AdminUnavailable when there is no answer to give. */
  async request (method: string, path: string, body?: unknown): Promise<{ status: number, body: unknown }> {
    const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' }
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`
    let res: Response
    try {
      res = await fetch(`${this.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(TIMEOUT_MS) })
    } catch (err) {
      // fetch says "fetch failed"; the reason (ECONNREFUSED, a timeout) is in its cause.
      const cause = (err as Error).cause as (Error & { code?: string }) | undefined
      throw new AdminUnavailable(`cannot ask ${this.url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`)
    }
    if (res.status === 401) {
      throw new AdminUnavailable(this.token === undefined
        ? `401 from ${this.url}: the admin API wants a bearer token (--token or MQTT_GUARD_ADMIN_TOKEN)`
        : `401 from ${this.url}: the admin API refused the token (--token or MQTT_GUARD_ADMIN_TOKEN)`)
    }
    return { status: res.status, body: await res.json().catch(() => null) as unknown }
  }
}

/**
 * A command that takes no arguments but its flags and asks the admin API (doctor, reload): its
 * flags and client, or the exit code of --help or a usage error.
 */
export function adminCommand<O extends typeof ADMIN_OPTIONS> (args: string[], command: Command, options: O, env: NodeJS.ProcessEnv): { client: AdminClient, values: Exclude<ReturnType<typeof parseCommand<O>>, number>['values'] } | number {
  const parsed = parseCommand(args, command, options)
  if (typeof parsed === 'number') return parsed
  const { values, positionals } = parsed
  if (positionals.length > 0) return usageError(command, `unexpected ${positionals.join(' ')}`)
  const client = AdminClient.from(values as { admin?: string | undefined, token?: string | undefined }, env)
  if (typeof client === 'string') return usageError(command, client)
  return { client, values }
}
