// The broker side of each connection: a TCP or TLS socket to the configured broker, or an
// in-process duplex into the embedded aedes broker. Failing to reach the broker is a
// GUARD_ERR_UPSTREAM_UNAVAILABLE, which the Connection answers with CONNACK 3 / 0x88.

import net from 'node:net'
import tls from 'node:tls'
import { readFileSync } from 'node:fs'
import type { Duplex } from 'node:stream'
import type { IConnectPacket } from 'mqtt-packet'
import { GuardError } from './errors.js'
import type { UpstreamSpec } from './config.js'
import type { ConnectionInfo } from './plugin-api.js'
import type { EmbeddedBroker } from './embedded.js'
import { duplexPair } from './duplex-pair.js'
import { bridgeV5ToV4 } from './version-bridge.js'

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
  const open = (): Promise<Duplex> => new Promise((resolve, reject) => {
    const socket = secure === undefined
      ? net.connect({ host: spec.host, port: spec.port })
      : tls.connect({ host: spec.host, port: spec.port, ...secure })
    const ready = secure === undefined ? 'connect' : 'secureConnect'
    const onError = (err: NodeJS.ErrnoException): void => { socket.destroy(); reject(unavailable(spec, err)) }
    socket.once('error', onError)
    socket.once(ready, () => {
      socket.removeListener('error', onError)
      socket.setNoDelay(true)
      resolve(socket)
    })
  })
  return {
    description: spec.url,
    dial: open,
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

export function embeddedUpstream (embedded: EmbeddedBroker): Upstream {
  return {
    description: 'embedded',
    dial: async (connect) => {
      if (embedded.broker.closed) throw new GuardError('GUARD_ERR_UPSTREAM_UNAVAILABLE', 'embedded broker is closed')
      const [ours, theirs] = duplexPair()
      embedded.broker.handle(theirs)
      // aedes 1.x speaks MQTT 3.1/3.1.1 only: MQTT 5 clients go through a translation.
      return connect.protocolVersion === 5 ? bridgeV5ToV4(ours) : ours
    },
    check: async () => !embedded.broker.closed,
    close: async () => { await embedded.close() }
  }
}
