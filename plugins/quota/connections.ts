// Connections per user name, counted at CONNECT: in this process (one process), in the primary
// (`workers: N` without Redis), or in Redis as leases that expire unless renewed, so the
// connections of an instance that crashed stop counting within `leaseMs`. This process always
// keeps its own connections too: for the renewals, and to decide alone when Redis is away.

/** The answer for one CONNECT: admitted, and how many the user name has now (with this one). */
export interface Admit { ok: boolean, count: number }

export interface ConnectionStore {
  admit: (user: string, owner: string, max: number) => Admit | Promise<Admit>
  release: (user: string, owner: string) => void | Promise<void>
  /** Redis only: keeps this process's leases (by user name: their owners) alive. */
  renew?: (leases: Map<string, string[]>) => Promise<void>
}

/** One process's counts (and the primary's, for its workers). */
export class MemoryConnections implements ConnectionStore {
  readonly users = new Map<string, Set<string>>()

  admit (user: string, owner: string, max: number): Admit {
    let owners = this.users.get(user)
    if (owners?.has(owner) === true) return { ok: true, count: owners.size }
    const count = owners?.size ?? 0
    if (count >= max) return { ok: false, count }
    if (owners === undefined) this.users.set(user, owners = new Set())
    owners.add(owner)
    return { ok: true, count: count + 1 }
  }

  release (user: string, owner: string): void {
    const owners = this.users.get(user)
    if (owners === undefined) return
    owners.delete(owner)
    if (owners.size === 0) this.users.delete(user)
  }

  /** A worker ended: the connections it held (owner prefix `<instanceId>:`) stop counting. */
  forget (instanceId: string): void {
    for (const [user, owners] of this.users) {
      for (const owner of owners) if (owner.startsWith(`${instanceId}:`)) owners.delete(owner)
      if (owners.size === 0) this.users.delete(user)
    }
  }
}

/** How a CONNECT was decided: by the store, or by this process alone (the store failed). */
export interface Counted extends Admit { alone: boolean }

/**
 * The connections per user name of this process, in front of the store that counts them for
 * everyone. The store failing (Redis away, too slow) admits on this process's own count, and
 * `failed` is told (logged and counted by the plugin).
 */
export class UserConnections {
  /** This process's counted connections: user name → owners. */
  private readonly mine = new MemoryConnections()

  constructor (private readonly store: ConnectionStore | undefined, private readonly failed: (what: 'connect' | 'renew', err: unknown) => void) {}

  async admit (user: string, owner: string, max: number): Promise<Counted> {
    if (this.store === undefined) return { ...this.mine.admit(user, owner, max), alone: false }
    try {
      const answer = await this.store.admit(user, owner, max)
      if (answer.ok) this.mine.users.set(user, (this.mine.users.get(user) ?? new Set()).add(owner))
      return { ...answer, alone: false }
    } catch (err) {
      this.failed('connect', err)
      return { ...this.mine.admit(user, owner, max), alone: true }
    }
  }

  release (user: string, owner: string): void {
    this.mine.release(user, owner)
    if (this.store === undefined) return
    Promise.resolve(this.store.release(user, owner)).catch(() => {
      // Redis: the lease expires by itself within leaseMs.
    })
  }

  /** Redis: one round of renewals for every lease this process holds. */
  async renew (): Promise<void> {
    if (this.store?.renew === undefined || this.mine.users.size === 0) return
    const leases = new Map([...this.mine.users].map(([user, owners]) => [user, [...owners]]))
    try {
      await this.store.renew(leases)
    } catch (err) {
      this.failed('renew', err)
    }
  }

  /** Connections of this process, all user names together. */
  get size (): number {
    let n = 0
    for (const owners of this.mine.users.values()) n += owners.size
    return n
  }
}
