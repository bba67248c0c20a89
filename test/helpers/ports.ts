import { createServer } from 'node:net'

/**
 * Ask the kernel for a currently unused TCP port on 127.0.0.1.
 *
 * The port is released again before this resolves, so another process can
 * grab it before the caller binds it: callers that start servers on it must
 * detect "address in use" and retry with a fresh port (the broker helpers do).
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      const addr = srv.address()
      if (addr === null || typeof addr === 'string') {
        srv.close()
        reject(new Error('freePort: listener has no TCP address'))
        return
      }
      const { port } = addr
      srv.close(err => (err ? reject(err) : resolve(port)))
    })
  })
}
