// The broker side of each connection: a TCP or TLS socket to the configured broker, or an
// in-process duplex into the embedded aedes broker. Failing to reach the broker is a
// GUARD_ERR_UPSTREAM_UNAVAILABLE, which the Connection answers with CONNACK 3 / 0x88.

import type { Duplex } from 'node:stream'
import type { IConnectPacket } from 'mqtt-packet'
import { GuardError } from '../errors.js'
import type { UpstreamSpec } from '../config/config.js'
import type { ConnectionInfo } from '../plugin/api.js'
import type { EmbeddedBroker } from './embedded.js'
import { duplexPair } from './duplex-pair.js'
import { bridgeV5ToV4 } from './version-bridge.js'
import { brokerSocket } from './broker-socket.js'

export interface Upstream {
  /** `embedded` or the broker URL, for logs. */
  readonly description: string
  /** `avoid`: several brokers, the URL of a broker not to use (the one a client is moving from). */
  dial: (connect: IConnectPacket, conn: ConnectionInfo, avoid?: string) => Promise<Duplex>
  /** Can a connection be made now? For readiness. */
  check: () => Promise<boolean>
  /** The broker's CONNACK code to a client's CONNECT, or its absence (several brokers: passive health). */
  connacked?: (conn: ConnectionInfo, code: number | 'timeout') => void
  /** Several brokers: the URL of the one this connection went to. */
  brokerOf?: (conn: ConnectionInfo) => string | undefined
  /** Several brokers with failover rehome: connections record their session to move it. */
  readonly rehomes?: boolean
  /** Several brokers: one health check of the broker at `url` now; false also counts as a failure. */
  probe?: (url: string) => Promise<boolean>
  /** Several brokers, failover redirect: the Server Reference of the client's next broker. */
  referenceFor?: (conn: ConnectionInfo, avoid?: string) => string | undefined
  close: () => Promise<void>
}

type TcpSpec = Extract<UpstreamSpec, { kind: 'mqtt' }>

/** One broker URL, as before issue 21: no health checks, no failover. */
export function tcpUpstream (spec: TcpSpec): Upstream {
  const broker = brokerSocket(spec)
  return {
    description: spec.url,
    dial: async (_connect, conn) => await broker.open(conn),
    check: async () => {
      try {
        (await broker.open()).destroy()
        return true
      } catch {
        return false
      }
    },
    close: async () => {}
  }
}

/**
 * What aedes accepts but the protocol refuses with CONNACK 2, as Mosquitto does: an empty
 * client ID asks the server to assign one, which MQTT 3.1.1 allows only with clean session 1
 * [MQTT-3.1.3-8] and MQTT 3.1 not at all (1 to 23 characters). MQTT 5 allows it either way.
 */
function emptyClientIdProblem (connect: IConnectPacket): string | undefined {
  if (connect.clientId !== '' || connect.protocolVersion === 5) return undefined
  if (connect.protocolVersion === 3) return 'MQTT 3.1 needs a client ID of 1 to 23 characters'
  if (connect.clean === false) return 'an empty client ID needs clean session 1 [MQTT-3.1.3-8]'
  return undefined
}

export function embeddedUpstream (embedded: EmbeddedBroker): Upstream {
  return {
    description: 'embedded',
    dial: async (connect) => {
      if (embedded.broker.closed) throw new GuardError('GUARD_ERR_UPSTREAM_UNAVAILABLE', 'embedded broker is closed')
      const idProblem = emptyClientIdProblem(connect)
      if (idProblem !== undefined) throw new GuardError('GUARD_ERR_CLIENT_ID_REJECTED', idProblem)
      const [ours, theirs] = duplexPair()
      embedded.broker.handle(theirs)
      // aedes 1.x speaks MQTT 3.1/3.1.1 only: MQTT 5 clients go through a translation.
      return connect.protocolVersion === 5 ? bridgeV5ToV4(ours) : ours
    },
    check: async () => !embedded.broker.closed,
    close: async () => { await embedded.close() }
  }
}
