// MQTT 3.1.1 through the proxy in front of a real Mosquitto behaves as directly against it.
// The scenarios and their comparison are in test/helpers/transparency-suite.ts; this file
// states what Mosquitto 2.0 answers a 3.1.1 client.

import t from 'tap'
import { cleanupAll } from '../helpers/processes.js'
import { startEnv, transparencySuite } from '../helpers/transparency-suite.js'

t.teardown(cleanupAll)

const env = await startEnv(t)

transparencySuite(t, env, {
  version: 4,
  // Mosquitto answers every authentication failure with 5 "not authorized", not 4.
  wrongPassword: 5,
  unavailable: 3,
  subackDenied: [1, 0x80, 2],
  // 3.1.1 cannot refuse a PUBLISH: Mosquitto acknowledges it and drops it.
  deniedPublish: ['puback'],
  // 3.1.1 has no server DISCONNECT: the old connection is just closed.
  takeoverFirst: [],
  keepalivePackets: ['connack', 'pingresp']
})
