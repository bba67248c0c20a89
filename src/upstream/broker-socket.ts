// A TCP or TLS socket to one broker, with the PROXY protocol header first when the broker
// reads one. Used by the single-broker upstream, by each broker of a pool and by the pool's
// health checks. Failing to reach the broker is a GUARD_ERR_UPSTREAM_UNAVAILABLE, which the
// connection answers with CONNACK 3 / 0x88.

import net from 'node:net'
import tls from 'node:tls'
import { readFileSync } from 'node:fs'
import type { Duplex } from 'node:stream'
import { GuardError } from '../errors.js'
import type { BrokerSpec } from '../config/config.js'
import type { ConnectionInfo } from '../plugin/api.js'
import { encodeProxyV1, encodeProxyV2, type ProxyAddress } from '../wire/proxy-protocol.js'
import { ReadBuffer, setReadBuffer } from './read-buffer.js'

export interface BrokerSocket {
  /**
   * A connected (and, for mqtts://, secured) socket. `conn` gives the client's address for a
   * PROXY header; `timeoutMs` bounds the TCP and TLS handshakes (none: the OS's own limit).
   * A plain TCP socket opened for a connection (`conn` given) reads into a ReadBuffer
   * (read-buffer.ts: readBufferOf) instead of emitting 'data'; one for a check does not.
   */
  open: (conn?: ConnectionInfo, timeoutMs?: number) => Promise<Duplex>
}

function unavailable (spec: BrokerSpec, err: NodeJS.ErrnoException | string): GuardError {
  const why = typeof err === 'string' ? err : err.code ?? err.message
  return new GuardError('GUARD_ERR_UPSTREAM_UNAVAILABLE', `broker ${spec.host}:${spec.port} unreachable: ${why}`, typeof err === 'string' ? undefined : { cause: err })
}

export function brokerSocket (spec: BrokerSpec): BrokerSocket {
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
  const tcp = (conn: ConnectionInfo | undefined): Promise<net.Socket> => new Promise((resolve, reject) => {
    // TLS reads the socket itself: only a plain one can read into a buffer of ours.
    const reads = conn !== undefined && secure === undefined ? new ReadBuffer() : undefined
    const socket = net.connect({ host: spec.host, port: spec.port, noDelay: true, ...(reads === undefined ? {} : { onread: reads.onread }) })
    if (reads !== undefined) setReadBuffer(socket, reads)
    const onError = (err: NodeJS.ErrnoException): void => { socket.destroy(); reject(unavailable(spec, err)) }
    socket.once('error', onError)
    socket.once('connect', () => {
      socket.removeListener('error', onError)
      if (spec.proxyProtocol !== undefined && conn !== undefined) socket.write(proxyHeader(spec.proxyProtocol, conn, socket))
      resolve(socket)
    })
  })
  const secured = (socket: net.Socket, options: tls.ConnectionOptions): Promise<Duplex> => new Promise((resolve, reject) => {
    const s = tls.connect({ socket, host: spec.host, ...options })
    const onError = (err: NodeJS.ErrnoException): void => { s.destroy(); reject(unavailable(spec, err)) }
    s.once('error', onError)
    s.once('secureConnect', () => {
      s.removeListener('error', onError)
      resolve(s)
    })
  })
  const open = async (conn: ConnectionInfo | undefined): Promise<Duplex> => {
    const socket = await tcp(conn)
    return secure === undefined ? socket : await secured(socket, secure)
  }
  return {
    open: async (conn, timeoutMs) => {
      if (timeoutMs === undefined) return await open(conn)
      let timer: NodeJS.Timeout | undefined
      const opening = open(conn)
      const late = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => { reject(unavailable(spec, `no connection within ${timeoutMs} ms`)) }, timeoutMs)
      })
      try {
        return await Promise.race([opening, late])
      } catch (err) {
        // A socket that connects after the deadline is closed, not leaked.
        opening.then((s) => { s.destroy() }, () => {})
        throw err
      } finally {
        clearTimeout(timer)
      }
    }
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
