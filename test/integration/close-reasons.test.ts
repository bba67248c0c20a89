// How a connection's end is named when the client's goodbye and its socket's end race: a
// DISCONNECT followed by a reset (a client that destroys its socket with bytes unread, as
// mqtt-guard's own probe does) is the client's DISCONNECT, not a network error. The broker here
// keeps its side open after the DISCONNECT, so the reset always comes first (with Mosquitto the
// broker's close usually wins the race, and the wrong name showed only now and then).

import t from 'tap'
import { startFakeBroker } from '../helpers/fake-broker.js'
import { startProxy } from '../helpers/proxy.js'
import { RawMqttClient } from '../helpers/raw-client.js'

const fake = await startFakeBroker(async (s) => {
  await s.next('connect')
  s.send({ cmd: 'connack', sessionPresent: false, returnCode: 0 })
  // Stays open whatever comes next: only the client's reset can end the connection.
})
t.teardown(() => fake.close())
const proxy = await startProxy({ config: { upstream: fake.url } })
t.teardown(() => proxy.stop())

for (const [name, sendDisconnect, reason] of [
  ['DISCONNECT, then a reset: the client ended it', true, 'client-disconnect'],
  ['a reset alone: a network error on the client side', false, 'client-error']
] as const) {
  t.test(name, async (t) => {
    const clientId = `reset-${String(sendDisconnect)}`
    const raw = await RawMqttClient.connected(proxy.port, 4, clientId)
    if (sendDisconnect) {
      raw.sendPacket({ cmd: 'disconnect' })
      // The DISCONNECT reaches the broker before the reset is sent.
      await new Promise<void>((resolve, reject) => {
        const session = fake.sessions.at(-1)
        if (session === undefined) { reject(new Error('no broker session')); return }
        session.next('disconnect').then(() => { resolve() }, reject)
      })
    }
    raw.socket.resetAndDestroy()
    const closed = await proxy.logs.waitFor((l) => l.msg === 'connection closed' && l.clientId === clientId)
    t.equal(closed.reason, reason)
  })
}
