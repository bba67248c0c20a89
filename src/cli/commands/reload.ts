// `mqtt-guard reload`: asks a running proxy (admin API `POST /reload`) to read its configuration
// again and apply it, and prints what changed, when each change reaches connections, and what
// was refused. Exit 0 when everything applied, 1 when something was refused (a configuration
// that does not validate changes nothing), 2 for bad arguments, 3 when the proxy cannot be asked.

import { ADMIN_OPTIONS, ADMIN_USAGE, AdminUnavailable, adminCommand } from './admin-client.js'
import { EXIT, type Command } from '../../plugin/args.js'
import type { Change, ReloadReport } from '../../reload/plan.js'

const USAGE = `Usage: mqtt-guard reload [--admin URL] [--token TOKEN] [--json]

Tells a running mqtt-guard to read its configuration file (and the files it names) again and
apply it, as SIGHUP does, and prints the answer: each changed setting and when it reaches
connections (now, or new connections while open ones keep what they have), and what was
refused and why. A file that does not validate is refused whole and the proxy goes on as it
was. No client is disconnected by a reload.

${ADMIN_USAGE}  --json           the answer as JSON
  -h, --help       this text

Exit 0: applied. 1: something was refused. 2: bad arguments. 3: the proxy could not be asked.
`

const COMMAND: Command = { name: 'mqtt-guard reload', usage: USAGE }
const OPTIONS = { ...ADMIN_OPTIONS, json: { type: 'boolean' } } as const
const UNASKED = 3

export async function reloadCommand (args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const made = adminCommand(args, COMMAND, OPTIONS, env)
  if (typeof made === 'number') return made
  const { client, values } = made
  let report: ReloadReport
  try {
    const res = await client.request('POST', '/reload')
    const body = res.body as (ReloadReport & { error?: string }) | null
    if (res.status === 409 || !Array.isArray(body?.changed)) throw new AdminUnavailable(`HTTP ${res.status} from ${client.url}/reload${typeof body?.error === 'string' ? `: ${body.error}` : ''}`)
    report = body as ReloadReport
  } catch (err) {
    if (!(err instanceof AdminUnavailable)) throw err
    process.stderr.write(`mqtt-guard reload: ${err.message}\n`)
    return UNASKED
  }
  const ok = report.applied && report.refused.length === 0
  if (values.json === true) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n')
    return ok ? EXIT.ok : EXIT.failed
  }
  process.stdout.write(render(report))
  return ok ? EXIT.ok : EXIT.failed
}

function line (c: Change): string {
  return `  ${c.setting}: ${c.what}${c.reach === 'refused' ? '' : ` [${c.reach}]`}${c.detail === undefined ? '' : `\n      ${c.detail}`}\n`
}

export function render (r: ReloadReport): string {
  let out = `reload ${r.reload} (${r.source}, ${r.at}): ${!r.applied ? 'refused, nothing changed' : r.refused.length > 0 ? 'applied in part' : 'applied'}\n`
  if (r.changed.length > 0) out += `changed:\n${r.changed.map(line).join('')}`
  else if (r.applied) out += 'no setting changed (files named by the configuration were read again)\n'
  if (r.refused.length > 0) out += `refused:\n${r.refused.map(line).join('')}`
  out += `new connections get generation ${r.generation}; ${r.olderConnections} connection${r.olderConnections === 1 ? '' : 's'} still on earlier ones\n`
  return out
}
