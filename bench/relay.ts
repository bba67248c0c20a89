// The floor for any Node.js proxy: a bare TCP relay. Each client socket gets its own socket to
// the broker and bytes are piped both ways, unparsed. Usage: node relay.js LISTEN_PORT UPSTREAM_PORT

import net from 'node:net'

const [listenPort, upstreamPort] = process.argv.slice(2).map(Number)
if (listenPort === undefined || upstreamPort === undefined || !(listenPort > 0) || !(upstreamPort > 0)) {
  process.stderr.write('usage: relay.js LISTEN_PORT UPSTREAM_PORT\n')
  process.exit(2)
}

const server = net.createServer({ noDelay: true }, (client) => {
  const broker = net.connect({ port: upstreamPort, host: '127.0.0.1', noDelay: true })
  const destroy = (): void => {
    client.destroy()
    broker.destroy()
  }
  client.pipe(broker)
  broker.pipe(client)
  client.on('error', destroy)
  broker.on('error', destroy)
  client.on('close', destroy)
  broker.on('close', destroy)
})
server.on('error', (err) => {
  process.stderr.write(`relay: ${err.message}\n`)
  process.exit(1)
})
server.listen({ port: listenPort, host: '127.0.0.1', backlog: 511 }, () => {
  process.stdout.write(`relay listening on 127.0.0.1:${listenPort}\n`)
})
process.once('SIGTERM', () => { process.exit(0) })
