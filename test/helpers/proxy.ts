// Starts a proxy in this process on a free port, with its logs in a LogSink.

import { buildConfig, type Overrides } from '../../src/config/config.js'
import { GuardServer } from '../../src/server.js'
import { resolveConfig } from '../../src/plugin/loader.js'
import type { Plugin } from '../../src/plugin/api.js'
import { LogSink } from './log-sink.js'

export interface TestProxy {
  server: GuardServer
  port: number
  url: string
  logs: LogSink
  stop: () => Promise<void>
}

export interface TestProxyOptions {
  /** Raw config, as the YAML file would hold it. listen defaults to a free loopback port. */
  config?: Record<string, unknown>
  overrides?: Overrides
  extraPlugins?: Plugin[]
  configFile?: string
}

export async function startProxy (options: TestProxyOptions = {}): Promise<TestProxy> {
  // The admin endpoint is off unless a test asks for it (its default port is fixed).
  const config = await resolveConfig(buildConfig({ listen: '127.0.0.1:0', admin: false, ...options.config }, options.overrides ?? {}, options.configFile))
  const logs = new LogSink()
  const server = await GuardServer.start(config, { log: logs.logger('debug'), extraPlugins: options.extraPlugins ?? [] })
  const port = server.listeners[0]?.port ?? 0
  return { server, port, url: `mqtt://127.0.0.1:${port}`, logs, stop: async () => { await server.stop() } }
}
