// `mqtt-guard trace start|list|stop|view|export`: run-time traces through the admin API of any
// instance (they reach every instance over Redis), and reading what they wrote.

import { ADMIN_OPTIONS, ADMIN_USAGE, AdminClient, AdminUnavailable } from './admin-client.js'
import { EXIT, parseCommand, usageError, type Command } from '../../plugin/args.js'

const SUBCOMMANDS = `  mqtt-guard trace start [--admin URL] [--token T] [--client GLOB] [--user NAME] [--address CIDR]
                         [--topic FILTER] [--types publish,puback,...] [--for 10m]
  mqtt-guard trace list  [--admin URL] [--token T]
  mqtt-guard trace stop ID [--admin URL] [--token T]
  mqtt-guard trace view FILE [--client GLOB] [--follow] [--no-color]
  mqtt-guard trace export FILE --pcap OUT.pcapng
`

const ADMIN_NOTE = `${ADMIN_USAGE}  -h, --help       this text

The trace plugin must be configured (plugins: [{ name: trace, enabled: false }] traces
nothing until a trace is started). Exit 0 done, 1 the admin API refused or cannot be
reached, 2 usage error.
`

const TRACE: Command = { name: 'mqtt-guard trace', usage: `Usage:\n${SUBCOMMANDS}\nmqtt-guard trace SUBCOMMAND --help tells more.\n` }

const START: Command = {
  name: 'mqtt-guard trace start',
  usage: `Usage: mqtt-guard trace start [options]

Starts a trace on every instance; prints it as JSON (its id is what trace stop takes).
  --client GLOB    client IDs matching GLOB (* any characters, ? one character)
  --user NAME      this user name
  --address CIDR   clients from these addresses
  --topic FILTER   packets on topics matching this filter
  --types LIST     packet types, comma-separated (publish,puback,...)
  --for DURATION   how long it runs (default 10m)
${ADMIN_NOTE}`
}
const LIST: Command = { name: 'mqtt-guard trace list', usage: `Usage: mqtt-guard trace list [--admin URL] [--token T]\n\nThe traces running now, as JSON.\n${ADMIN_NOTE}` }
const STOP: Command = { name: 'mqtt-guard trace stop', usage: `Usage: mqtt-guard trace stop ID [--admin URL] [--token T]\n\nStops trace ID on every instance.\n${ADMIN_NOTE}` }

const FILTERS = { client: { type: 'string' }, user: { type: 'string' }, address: { type: 'string' }, topic: { type: 'string' }, types: { type: 'string' }, for: { type: 'string' } } as const

/** Prints the answer (stdout when its status is `ok`, stderr otherwise); the exit code. */
function report (r: { status: number, body: unknown }, ok: number): number {
  const out = r.status === ok ? process.stdout : process.stderr
  out.write(JSON.stringify(r.body) + '\n')
  if (r.status === 404 && r.body !== null && typeof r.body === 'object' && 'error' in r.body && (r.body as { error: string }).error === 'not found') {
    process.stderr.write('mqtt-guard trace: the admin endpoint has no /traces: is the trace plugin configured?\n')
  }
  return r.status === ok ? EXIT.ok : EXIT.failed
}

export async function traceCommand (args: string[]): Promise<number> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'start': return await start(rest)
    case 'list': return await list(rest)
    case 'stop': return await stop(rest)
    case 'view': return await (await import('../../../plugins/trace/view.js')).viewCommand(rest)
    case 'export': return await (await import('../../../plugins/trace/export.js')).exportCommand(rest)
    case '--help':
    case '-h':
      process.stdout.write(TRACE.usage)
      return EXIT.ok
    case undefined: return usageError(TRACE, 'a subcommand is required')
    default: return usageError(TRACE, `unknown subcommand "${sub}"`)
  }
}

/** The admin client for the parsed flags, or the usage error's exit code. */
function client (command: Command, values: { admin?: string | undefined, token?: string | undefined }): AdminClient | number {
  const made = AdminClient.from(values)
  return typeof made === 'string' ? usageError(command, made) : made
}

/** One request and its report; an unreachable endpoint or a refused token is exit 1. */
async function call (command: Command, admin: AdminClient, method: string, path: string, ok: number, body?: unknown): Promise<number> {
  try {
    return report(await admin.request(method, path, body), ok)
  } catch (err) {
    if (!(err instanceof AdminUnavailable)) throw err
    process.stderr.write(`${command.name}: ${err.message}\n`)
    return EXIT.failed
  }
}

async function start (args: string[]): Promise<number> {
  const parsed = parseCommand(args, START, { ...ADMIN_OPTIONS, ...FILTERS })
  if (typeof parsed === 'number') return parsed
  const { values, positionals } = parsed
  if (positionals.length > 0) return usageError(START, `unexpected ${positionals.join(' ')}`)
  const admin = client(START, values)
  if (typeof admin === 'number') return admin
  const filters = {
    ...(values.client !== undefined && { clientId: values.client }),
    ...(values.user !== undefined && { username: values.user }),
    ...(values.address !== undefined && { address: values.address }),
    ...(values.topic !== undefined && { topic: values.topic }),
    ...(values.types !== undefined && { types: values.types.split(',').map((s) => s.trim()) })
  }
  return await call(START, admin, 'POST', '/traces', 201, { filters, for: values.for ?? '10m' })
}

async function list (args: string[]): Promise<number> {
  const parsed = parseCommand(args, LIST, ADMIN_OPTIONS)
  if (typeof parsed === 'number') return parsed
  if (parsed.positionals.length > 0) return usageError(LIST, `unexpected ${parsed.positionals.join(' ')}`)
  const admin = client(LIST, parsed.values)
  if (typeof admin === 'number') return admin
  return await call(LIST, admin, 'GET', '/traces', 200)
}

async function stop (args: string[]): Promise<number> {
  const parsed = parseCommand(args, STOP, ADMIN_OPTIONS)
  if (typeof parsed === 'number') return parsed
  const [id, ...extra] = parsed.positionals
  if (id === undefined || extra.length > 0) return usageError(STOP, 'expected one trace ID')
  const admin = client(STOP, parsed.values)
  if (typeof admin === 'number') return admin
  return await call(STOP, admin, 'DELETE', `/traces/${encodeURIComponent(id)}`, 200)
}
