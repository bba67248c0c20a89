// The broker side of each connection: a TCP or TLS socket to the configured broker, or an
// in-process duplex into the embedded aedes broker. Failing to reach the broker is a
// GUARD_ERR_UPSTREAM_UNAVAILABLE, which the Connection answers with CONNACK 3 / 0x88.

import net from 'node:net'
import tls from 'node:tls'
import { readFileSync } from 'node:fs'
import type { Duplex } from 'node:stream'
import type { IConnectPacket } from 'mqtt-packet'
import { GuardError } from '../errors.js'
import type { UpstreamSpec } from '../config/config.js'
import type { ConnectionInfo } from '../plugin/api.js'
import type { EmbeddedBroker } from './embedded.js'
import { duplexPair } from './duplex-pair.js'
import { bridgeV5ToV4 } from './version-bridge.js'
import { encodeProxyV1, encodeProxyV2, type ProxyAddress } from '../wire/proxy-protocol.js'

export interface Upstream {
  /** `embedded` or the broker URL, for logs. */
  readonly description: string
  dial: (connect: IConnectPacket, conn: ConnectionInfo) => Promise<Duplex>
  /** Can a connection be made now? For readiness. */
  check: () => Promise<boolean>
  close: () => Promise<void>
}

type TcpSpec = Extract<UpstreamSpec, { kind: 'mqtt' }>

function unavailable (spec: TcpSpec, err: NodeJS.ErrnoException): GuardError {
  return new GuardError('GUARD_ERR_UPSTREAM_UNAVAILABLE', `broker ${spec.host}:${spec.port} unreachable: ${err.code ?? err.message}`, { cause: err })
}

export function tcpUpstream (spec: TcpSpec): Upstream {
  const secure = spec.tls === undefined
    ? undefined
    : {
        ca: spec.tls.ca === undefined ? undefined : readFileSync(spec.tls.ca),
        cert: spec.tls.cert === undefined ? undefined : readFileSync(spec.tls.cert),
        key: spec.tls.key === undefined ? undefined : readFileSync(spec.tls.key),
        rejectUnauthorized: spec.tls.rejectUnauthorized,
        servername: spec.tls.servername ?? (net.isIP(spec.host) === 0 ? spec.host : undefined),
        minVersion: 'TLSv1.2' as const
      }
  // TCP first; then the PROXY header, if the broker wants one, before anything else (TLS too).
  const tcp = (conn?: ConnectionInfo): Promise<net.Socket> => new Promise((resolve, reject) => {
    const socket = net.connect({ host: spec.host, port: spec.port, noDelay: true })
    const onError = (err: NodeJS.ErrnoException): void => { socket.destroy(); reject(unavailable(spec, err)) }
    socket.once('error', onError)
    socket.once('connect', () => {
      socket.removeListener('error', onError)
      if (spec.proxyProtocol !== undefined && conn !== undefined) socket.write(proxyHeader(spec.proxyProtocol, conn, socket))
      resolve(socket)
    })
  })
  const open = async (conn?: ConnectionInfo): Promise<Duplex> => {
    const socket = await tcp(conn)
    if (secure === undefined) return socket
    return await new Promise((resolve, reject) => {
      const secured = tls.connect({ socket, host: spec.host, ...secure })
      const onError = (err: NodeJS.ErrnoException): void => { secured.destroy(); reject(unavailable(spec, err)) }
      secured.once('error', onError)
      secured.once('secureConnect', () => {
        secured.removeListener('error', onError)
        resolve(secured)
      })
    })
  }
  return {
    description: spec.url,
    dial: async (_connect, conn) => await (secure === undefined ? tcp(conn) : open(conn)),
    check: async () => {
      try {
        (await open()).destroy()
        return true
      } catch {
        return false
      }
    },
    close: async () => {}
  }
}

/** The client's address towards a broker that reads the PROXY protocol (e.g. Mosquitto 2.1+). */
function proxyHeader (version: 1 | 2, conn: ConnectionInfo, socket: net.Socket): Buffer {
  const v6 = net.isIPv6(conn.address) || net.isIPv6(socket.remoteAddress ?? '')
  const address: ProxyAddress = {
    family: v6 ? 'IPv6' : 'IPv4',
    sourceAddress: conn.address,
    sourcePort: conn.port,
    destinationAddress: socket.remoteAddress ?? '',
    destinationPort: socket.remotePort ?? 0
  }
  return version === 1 ? encodeProxyV1(address) : encodeProxyV2(address)
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
