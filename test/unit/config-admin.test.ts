// The admin endpoint's bounds in the config: defaults, overrides, and errors that name the key
// and the accepted forms.

import t from 'tap'
import { buildConfig } from '../../src/config/config.js'
import { ADMIN_DEFAULTS } from '../../src/config/admin.js'
import { isGuardError } from '../../src/errors.js'

function error (raw: Record<string, unknown>): string {
  try {
    buildConfig(raw, {})
  } catch (err) {
    return isGuardError(err) ? err.message : String(err)
  }
  return 'no error'
}

t.test('defaults, and a file that sets some bounds', async (t) => {
  const { listen: _listen, ...bounds } = ADMIN_DEFAULTS
  t.match(buildConfig({}, {}).admin, { host: '127.0.0.1', port: 9884, ...bounds })
  t.match(buildConfig({ admin: { maxConnections: 8, maxViewers: 2, timeoutMs: 2000 } }, {}).admin, { port: 9884, maxConnections: 8, maxViewers: 2, timeoutMs: 2000, maxViewersPerStream: 4 })
  t.match(buildConfig({ admin: { listen: '127.0.0.1:0', viewerBufferBytes: 65536 } }, { admin: '127.0.0.1:7000' }).admin, { port: 7000, viewerBufferBytes: 65536 }, 'the override sets the address only')
})

t.test('errors name the key and what it accepts', async (t) => {
  t.equal(error({ admin: { maxConnections: 2 } }), 'admin.maxConnections: expected an integer >= 4, got 2')
  t.equal(error({ admin: { timeoutMs: 'fast' } }), 'admin.timeoutMs: expected an integer >= 500 and <= 120000, got "fast"')
  t.equal(error({ admin: { maxViewers: 64 } }), 'admin.maxViewers: expected an integer below admin.maxConnections (64), got 64')
  t.match(error({ admin: { maxViewer: 3 } }), /^admin\.maxViewer: unknown key \(expected one of listen, token, maxConnections, reserveDescriptors, timeoutMs, maxBodyBytes, maxViewers, maxViewersPerStream, viewerBufferBytes\)$/)
})
