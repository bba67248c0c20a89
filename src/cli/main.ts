// `mqtt-guard start|check-config|…|--help|--version`: the command line's entry. Flags override
// MQTT_GUARD_* variables, which override the config file, which overrides the defaults. Every
// command follows src/plugin/args.ts: --help exits 0, a usage error 2, a config error 78.

import { readFileSync } from 'node:fs'
import { EXIT, parseCommand, usageError, type Command } from '../plugin/args.js'
import { envOverrides, type Overrides } from '../config/config.js'
import { isGuardError } from '../errors.js'
import { createLogger } from '../log/log.js'
import type { Logger } from 'pino'
import type { PluginCommand } from '../plugin/api.js'
import { builtinDefinitions, readConfig, type ResolvedConfig } from '../plugin/loader.js'

const COMMANDS_BEFORE = `Usage: mqtt-guard <command> [options]

Commands:
  start                 run the proxy
  check-config FILE     validate a config file (and its plugins' options) and exit
`

// The built-in plugins' commands (passwd, acl-check) go between these two.
const COMMANDS_AFTER = `  trace start|list|stop|view|export
                        run-time packet traces on every instance, and reading them
                        (mqtt-guard trace --help)
  probe URL [-u USER] [-P PASSWORD] [-i ID] [-V 311|5] [--cafile F] ...
                        check a connection step by step: DNS, TCP, TLS, CONNACK,
                        subscribe and QoS 0/1/2 round trips (mqtt-guard probe --help)
  doctor [--admin URL] [--token T] [--json]
                        ask a running proxy what it noticed: findings, evidence, fixes
  reload [--admin URL] [--token T] [--json]
                        a running proxy reads its configuration again and applies it
                        without dropping a client; prints what changed and what was refused
  version               mqtt-guard's version and Node's (also --version)

mqtt-guard COMMAND --help tells more about each.

Options for start:
  --config FILE         YAML config (env MQTT_GUARD_CONFIG)
  --listen HOST:PORT    listener(s), comma-separated (env MQTT_GUARD_LISTEN; default 127.0.0.1:1884)
  --upstream URL        embedded | mqtt://HOST:PORT | mqtts://HOST:PORT (env MQTT_GUARD_UPSTREAM)
  --redis URL           redis://HOST:PORT for shared state (env MQTT_GUARD_REDIS;
                        Sentinel and Cluster: redis in the config file)
  --admin HOST:PORT|off admin HTTP endpoint: /healthz /readyz /metrics /connections
                        (env MQTT_GUARD_ADMIN; default 127.0.0.1:9884; its bearer token
                        from MQTT_GUARD_ADMIN_TOKEN or admin.token in the file)
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent (env MQTT_GUARD_LOG_LEVEL)
  --workers N|auto      processes serving the listeners (env MQTT_GUARD_WORKERS; default 1;
                        N >= 2 or auto: a primary supervises N workers)
  -h, --help            this text

Exit status, every command:
  0   done. acl-check: allow; probe: every step passed; doctor: nothing worse than info
  1   failed while running (say, an address in use). acl-check: deny; probe: a step
      failed; doctor: a warning or an error; reload: something was refused
  2   usage error: unknown command or flag, missing argument, bad value
  3   no answer to give: doctor or reload could not ask the proxy, acl-check could not read the rules
  78  config error (EX_CONFIG): the message names the key and the accepted forms
A reader that stops early (mqtt-guard doctor | head -1) ends the command quietly, exit 0.
`

/** Where a command's summary starts in the list. */
const SUMMARY_COLUMN = 24

/** `  NAME SYNOPSIS` (continued lines aligned after the name), then the summary at its column. */
export function commandHelp (name: string, command: PluginCommand): string {
  const [first = '', ...rest] = command.synopsis.split('\n')
  const lines = [`  ${name} ${first}`.trimEnd(), ...rest.map((l) => `${' '.repeat(name.length + 3)}${l}`)]
  const [summary = '', ...more] = command.summary.split('\n')
  const pad = ' '.repeat(SUMMARY_COLUMN)
  const last = lines[lines.length - 1] as string
  if (last.length <= SUMMARY_COLUMN - 2) lines[lines.length - 1] = `${last.padEnd(SUMMARY_COLUMN)}${summary}`
  else lines.push(`${pad}${summary}`)
  return [...lines, ...more.map((l) => `${pad}${l}`)].map((l) => `${l}\n`).join('')
}

/** The built-in plugins' commands by name (a plugin's folder order), asked of their definitions. */
async function pluginCommands (): Promise<Map<string, PluginCommand>> {
  const commands = new Map<string, PluginCommand>()
  for (const definition of await builtinDefinitions()) {
    for (const [name, command] of Object.entries(definition.commands ?? {})) commands.set(name, command)
  }
  return commands
}

function usageText (commands: Map<string, PluginCommand>): string {
  return COMMANDS_BEFORE + [...commands].map(([name, command]) => commandHelp(name, command)).join('') + COMMANDS_AFTER
}
const CHECK: Command = {
  name: 'mqtt-guard check-config',
  usage: `Usage: mqtt-guard check-config FILE

Validates FILE and its plugins' options as start would, and exits without listening.
Exit 0 valid, 1 a plugin cannot be loaded, 2 usage error, 78 config error (the message names
the key and the accepted forms).
`
}

const START_OPTIONS = {
  config: { type: 'string' },
  listen: { type: 'string' },
  upstream: { type: 'string' },
  redis: { type: 'string' },
  admin: { type: 'string' },
  'log-level': { type: 'string' },
  workers: { type: 'string' }
} as const

/** `mqtt-guard 0.1.0 (node v20.x)`: package.json is three folders above dist/src/cli/. */
function version (): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }
  return `mqtt-guard ${pkg.version} (node ${process.version})\n`
}

export async function main (argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  try {
    switch (command) {
      case 'start': return await start(rest, { name: 'mqtt-guard start', usage: usageText(await pluginCommands()) })
      case 'check-config': return await checkConfig(rest)
      case 'trace': return await (await import('./commands/trace.js')).traceCommand(rest)
      case 'probe': return await (await import('./commands/probe.js')).probeCommand(rest)
      case 'doctor': return await (await import('./commands/doctor.js')).doctorCommand(rest)
      case 'reload': return await (await import('./commands/reload.js')).reloadCommand(rest)
      case 'version':
      case '--version':
        process.stdout.write(version())
        return EXIT.ok
      default: return await pluginOrHelp(command, rest)
    }
  } catch (err) {
    process.stderr.write(`mqtt-guard: ${isGuardError(err) ? `${err.message} (${err.code})` : (err as Error).message}\n`)
    return isGuardError(err) && err.code === 'GUARD_ERR_CONFIG' ? EXIT.config : EXIT.failed
  }
}

/** A built-in plugin's command (passwd, acl-check), or the overview of them all. */
async function pluginOrHelp (command: string | undefined, args: string[]): Promise<number> {
  const commands = await pluginCommands()
  const found = command === undefined ? undefined : commands.get(command)
  if (found !== undefined) return await found.run(args)
  const usage = usageText(commands)
  if (command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(usage)
    return EXIT.ok
  }
  return usageError({ name: 'mqtt-guard', usage }, command === undefined ? 'a command is required' : `unknown command "${command}"`)
}

/** start's and check-config's flags, or the exit code of --help or a usage error. */
function parse (args: string[], command: Command): { flags: Overrides, positionals: string[] } | number {
  const parsed = parseCommand(args, command, START_OPTIONS)
  if (typeof parsed === 'number') return parsed
  const { values, positionals } = parsed
  return {
    positionals,
    flags: { config: values.config, listen: values.listen, upstream: values.upstream, redis: values.redis, admin: values.admin, logLevel: values['log-level'], workers: values.workers }
  }
}

async function start (args: string[], command: Command): Promise<number> {
  const parsed = parse(args, command)
  if (typeof parsed === 'number') return parsed
  const { flags, positionals } = parsed
  if (positionals.length > 0) return usageError(command, `unexpected ${positionals.join(' ')} (a config file goes after --config)`)
  const config = await readConfig(flags, envOverrides(process.env))
  const reread = async (): Promise<ResolvedConfig> => await readConfig(flags, envOverrides(process.env))
  // `workers: N`: this process is the primary, or one of the workers it forked (src/cluster/).
  const cluster = (await import('node:cluster')).default
  const worker = cluster.isWorker ? Number(process.env.MQTT_GUARD_WORKER_INDEX ?? '0') + 1 : undefined
  const log = createLogger(config.log.level, undefined, worker === undefined ? undefined : { worker })
  // A library that drops a promise's rejection (seen: ioredis's "Connection is closed." from the
  // embedded broker's Redis persistence while Redis restarts) must not end every client's
  // connection: log it with its stack and keep serving.
  process.on('unhandledRejection', (reason) => {
    log.error({ err: reason instanceof Error ? { message: reason.message, stack: reason.stack } : String(reason) }, 'unhandled promise rejection in a library; the proxy keeps running')
  })
  if (worker === undefined && config.workers > 1) {
    const { Primary } = await import('../cluster/primary.js')
    const primary = new Primary(config, log, reread)
    await primary.start()
    await serveUntilSignal({ stop: async () => { await primary.stop() }, reload: async (source) => await primary.reload(source) }, log)
    return 0
  }
  // Loaded here, not at the top: `--help` and `check-config` need no broker or Redis code.
  const { GuardServer } = await import('../server.js')
  if (worker !== undefined) {
    await (await import('../cluster/worker.js')).runWorker(config, { log, reread, index: worker - 1 })
    log.flush()
    return 0
  }
  const server = await GuardServer.start(config, { log, reread })
  await serveUntilSignal({ stop: async () => { await server.stop() }, reload: async (source) => await server.reloadFromSource(source) }, log)
  return 0
}

/**
 * One process or the primary of `workers: N`, until SIGTERM or SIGINT (a second one while
 * draining means "now"). SIGHUP reloads: the file, the variables and the flags read again and
 * applied, one reload at a time, in the order asked.
 */
async function serveUntilSignal (target: { stop: () => Promise<void>, reload: (source: string) => Promise<unknown> }, log: Logger): Promise<void> {
  await new Promise<void>((resolve) => {
    const shutdown = (signal: NodeJS.Signals): void => {
      log.info({ signal }, 'shutting down')
      process.once(signal, () => { process.exit(1) })
      target.stop().then(resolve, (err: unknown) => { log.error({ err }, 'error while stopping'); resolve() })
    }
    process.once('SIGTERM', shutdown)
    process.once('SIGINT', shutdown)
    process.on('SIGHUP', () => {
      target.reload('SIGHUP').catch((err: unknown) => { log.error({ err }, 'reload failed') })
    })
  })
  log.flush()
}

async function checkConfig (args: string[]): Promise<number> {
  const parsed = parse(args, CHECK)
  if (typeof parsed === 'number') return parsed
  const { positionals, flags } = parsed
  const env = envOverrides(process.env)
  const file = positionals[0] ?? flags.config ?? env.config
  if (file === undefined || file === '' || positionals.length > 1) return usageError(CHECK, 'expected one FILE')
  // As `start` would load it: MQTT_GUARD_* variables and flags over the file.
  const config = await readConfig({ ...flags, config: file }, env)
  process.stdout.write(`${file}: ok (listen ${config.listen.map((l) => `${l.host}:${l.port}`).join(', ')}; upstream ${config.upstream.kind === 'embedded' ? 'embedded' : config.upstream.kind === 'pool' ? config.upstream.brokers.map((b) => b.url).join(', ') : config.upstream.url}; plugins ${config.plugins.map((p) => p.name ?? p.module).join(', ') || 'none'})\n`)
  return 0
}
