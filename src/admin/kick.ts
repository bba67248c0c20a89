// The admin API's kick across instances: `DELETE /connections/{clientId}` closes the client
// ID's connections on this instance and, with Redis, announces the kick on a channel so every
// other instance closes its own (GUARD_ERR_ADMIN_KICK, MQTT 5 DISCONNECT 0x98).

import type { Logger } from 'pino'
import type { Cluster, Redis } from 'ioredis'
import type { CloseReason } from '../errors.js'
import { subscribeChannel } from '../redis/call.js'

/** What a kick needs of a connection. */
interface Kickable {
  readonly clientId: string
  readonly state: string
  close: (reason: CloseReason, detail?: string) => void
}

export class KickChannel {
  private subscriber: Redis | Cluster | undefined

  constructor (
    private readonly connections: Iterable<Kickable>,
    readonly redis: Redis | Cluster | undefined,
    keyPrefix: string,
    private readonly instanceId: string,
    private readonly log: Logger
  ) {
    this.channel = `${keyPrefix}admin:kick`
  }

  private readonly channel: string

  /** Closes the client ID's connections here; with Redis, every other instance closes its own. */
  async kick (clientId: string): Promise<{ closedHere: number, announced: boolean }> {
    const closedHere = this.kickHere(clientId, 'admin API')
    if (this.redis === undefined || this.redis.status !== 'ready') return { closedHere, announced: false }
    await this.redis.publish(this.channel, JSON.stringify({ clientId, from: this.instanceId }))
    return { closedHere, announced: true }
  }

  private kickHere (clientId: string, by: string): number {
    let closed = 0
    for (const conn of this.connections) {
      if (conn.clientId !== clientId || conn.state === 'closed') continue
      conn.close('GUARD_ERR_ADMIN_KICK', `closed by ${by}`)
      closed++
    }
    return closed
  }

  /** Kicks announced by other instances close connections here too. */
  listen (): void {
    if (this.redis === undefined) return
    this.subscriber = subscribeChannel(this.redis, this.channel, (message) => {
      try {
        const { clientId, from } = JSON.parse(message) as { clientId?: unknown, from?: unknown }
        if (typeof clientId !== 'string' || from === this.instanceId) return
        const closed = this.kickHere(clientId, `admin API on instance ${String(from)}`)
        if (closed > 0) this.log.info({ clientId, from }, 'connection closed for another instance\'s admin API')
      } catch {
        // not ours
      }
    })
  }

  close (): void {
    this.subscriber?.disconnect()
  }
}
