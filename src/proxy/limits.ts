// What the limits do that protect the broker and the proxy from one address or one client:
// connections and connects per second per address, keepalive bounds, and a publish rate per
// connection (their keys, defaults and checks: src/config/limits.ts). The per-address limits
// and keepalive run as the first plugin (at CONNECT only); the publish rate is a token bucket
// the Connection consults per PUBLISH frame when it is set.

import type { IConnackPacket, IConnectPacket } from 'mqtt-packet'
import type { ConnectionInfo, HookResult, Plugin } from '../plugin/api.js'
import type { LimitSettings } from '../config/limits.js'

/** Tokens refill continuously up to `rate` (one second's worth is the burst). */
export class TokenBucket {
  private tokens: number
  private at: number

  constructor (private readonly rate: number, now = performance.now()) {
    this.tokens = rate
    this.at = now
  }

  /** Takes a token; returns 0 when there was one, else the ms until the next one. */
  take (now = performance.now()): number {
    this.tokens = Math.min(this.rate, this.tokens + (now - this.at) * this.rate / 1000)
    this.at = now
    if (this.tokens >= 1) {
      this.tokens -= 1
      return 0
    }
    return Math.ceil((1 - this.tokens) * 1000 / this.rate)
  }
}

const MAX_TRACKED_ADDRESSES = 100_000

/**
 * Trims a Map kept in least-recently-used order down to `keep` entries. A sweep of source
 * addresses then evicts only the addresses that have been quiet longest, never the table at once.
 */
export function evictOldest<K, V> (map: Map<K, V>, keep: number): void {
  for (const key of map.keys()) {
    if (map.size <= keep) return
    map.delete(key)
  }
}

/**
 * The core plugin `limits`: first in the chain, so a refused CONNECT costs nothing else.
 * `settings` reads the limits of the config in force at each CONNECT (a reload changes them).
 */
export function limitsPlugin (settings: () => LimitSettings, maxTrackedAddresses = MAX_TRACKED_ADDRESSES): Plugin {
  const open = new Map<string, number>()
  const rates = new Map<string, TokenBucket>()
  const counted = new WeakSet<ConnectionInfo>()
  const keepaliveBounded = new WeakSet<ConnectionInfo>()

  function connect (conn: ConnectionInfo, packet: IConnectPacket): HookResult {
    const s = settings()
    if (s.maxConnectsPerSecondPerAddress > 0) {
      let bucket = rates.get(conn.address)
      if (bucket === undefined) {
        bucket = new TokenBucket(s.maxConnectsPerSecondPerAddress)
        evictOldest(rates, maxTrackedAddresses - 1)
      } else {
        rates.delete(conn.address)
      }
      // Re-inserted on every use, so the Map's order is least recently used first.
      rates.set(conn.address, bucket)
      if (bucket.take() > 0) return { action: 'reject', code: 'GUARD_ERR_CONNECT_RATE', reason: `more than ${s.maxConnectsPerSecondPerAddress} connects per second from ${conn.address}` }
    }
    if (s.maxConnectionsPerAddress > 0) {
      const n = open.get(conn.address) ?? 0
      if (n >= s.maxConnectionsPerAddress) return { action: 'reject', code: 'GUARD_ERR_ADDRESS_LIMIT', reason: `${n} connections from ${conn.address} already (maxConnectionsPerAddress)` }
      open.set(conn.address, n + 1)
      counted.add(conn)
    }
    const max = s.maxKeepaliveSeconds
    const keepalive = packet.keepalive ?? 0
    if (max > 0 && (keepalive === 0 || keepalive > max)) {
      // MQTT 5: the server picks the keepalive and says so in CONNACK [MQTT-3.2.2-21]; the
      // broker is asked for the same. MQTT 3.1.1 has no way to tell the client: refused.
      if (conn.protocolVersion !== 5) return { action: 'reject', code: 'GUARD_ERR_KEEPALIVE', reason: `keepalive ${keepalive} s is above maxKeepaliveSeconds (${max} s)${keepalive === 0 ? ' (0 = none)' : ''}` }
      keepaliveBounded.add(conn)
      return { action: 'continue', packet: { ...packet, keepalive: max } }
    }
    return undefined
  }

  function connack (conn: ConnectionInfo, packet: IConnackPacket): HookResult {
    if (!keepaliveBounded.has(conn) || (packet.reasonCode ?? 0) !== 0) return undefined
    return { action: 'continue', packet: { ...packet, properties: { ...packet.properties, serverKeepAlive: settings().maxKeepaliveSeconds } } }
  }

  return {
    name: 'limits',
    in: { connect },
    out: { connack },
    onClose: (conn) => {
      if (!counted.has(conn)) return
      const n = (open.get(conn.address) ?? 1) - 1
      if (n <= 0) open.delete(conn.address)
      else open.set(conn.address, n)
    }
  }
}
