// The one pino root logger. Children carry the connection and plugin; lines are structured
// fields only. Secrets are redacted by path as a second line of defence: code never logs them.

import pino, { type Logger, type DestinationStream } from 'pino'

export const REDACT_PATHS = [
  'password', '*.password', 'packet.password', 'authenticationData', '*.authenticationData',
  'properties.authenticationData', 'headers.authorization'
]

export function createLogger (level: string, destination?: DestinationStream, base?: Record<string, unknown>): Logger {
  return pino({
    level,
    base: { pid: process.pid, ...base },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime
  }, destination ?? pino.destination({ dest: 1, sync: false }))
}
