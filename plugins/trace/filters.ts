// Trace filters, compiled once: which connections a trace covers (client ID glob, user name,
// address or CIDR) and which of their packets (topic filter, packet types).

import { compileTrusted } from '../../src/wire/proxy-protocol.js'
import { topicMatches } from '../../src/wire/topic-filter.js'
import type { ConnectionInfo } from '../../src/plugin/api.js'
import type { TraceFilters } from './options.js'

export interface CompiledFilters {
  connection: (conn: ConnectionInfo) => boolean
  /** For a PUBLISH topic or a SUBSCRIBE/UNSUBSCRIBE filter; true when no topic filter is set. */
  topic: (topic: string) => boolean
  type: (type: string) => boolean
}

function glob (pattern: string): RegExp {
  const escaped = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')
  return new RegExp(`^${escaped}$`, 'su')
}

export function compileFilters (filters: TraceFilters): CompiledFilters {
  const clientId = filters.clientId === undefined ? undefined : glob(filters.clientId)
  const address = filters.address === undefined ? undefined : compileTrusted([filters.address])
  const types = filters.types === undefined ? undefined : new Set(filters.types)
  const topic = filters.topic
  return {
    connection: (conn) =>
      (clientId === undefined || clientId.test(conn.clientId)) &&
      (filters.username === undefined || filters.username === conn.username) &&
      (address === undefined || address(conn.address)),
    topic: (t) => topic === undefined || topicMatches(topic, t) || t === topic,
    type: (t) => types === undefined || types.has(t)
  }
}
