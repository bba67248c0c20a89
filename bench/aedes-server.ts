// The alternative a user would pick instead of a proxy: aedes alone (in-memory persistence and
// emitter), the way its README starts it. Usage: node aedes-server.js LISTEN_PORT

import net from 'node:net'
import { Aedes } from 'aedes'

const port = Number(process.argv[2])
if (!(port > 0)) {
  process.stderr.write('usage: aedes-server.js LISTEN_PORT\n')
  process.exit(2)
}

const broker = await Aedes.createBroker()
// noDelay like every other target, so the comparison is about the broker, not Nagle.
const server = net.createServer({ noDelay: true }, broker.handle)
server.on('error', (err) => {
  process.stderr.write(`aedes: ${err.message}\n`)
  process.exit(1)
})
server.listen({ port, host: '127.0.0.1', backlog: 511 }, () => {
  process.stdout.write(`aedes listening on 127.0.0.1:${port}\n`)
})
process.once('SIGTERM', () => { process.exit(0) })
