// `mqtt-guard doctor`: asks a running proxy (admin API `GET /diagnostics`) what it has noticed,
// and prints each finding with its severity, the evidence and the fix. Exit 0 when nothing is a
// warning or worse, 1 when something is, 2 for bad arguments, 3 when the proxy cannot be asked.

import { ADMIN_OPTIONS, ADMIN_USAGE, AdminUnavailable, adminCommand } from './admin-client.js'
import { EXIT, type Command } from '../../plugin/args.js'
import type { Finding, Severity } from '../../observe/diagnostics.js'

const USAGE = `Usage: mqtt-guard doctor [--admin URL] [--token TOKEN] [--json]

Asks a running mqtt-guard what it has noticed: clients that flap and why, refused connects by
code, client-ID refusals, ACL denials by rule, subscribers starved by refused publishes, QoS 0
subscribers with clean sessions, slow consumers, full queues, packets over the size limit, where latency
is (broker leg or client leg), certificate expiry, Redis and broker health, connections and
file descriptors against their limits. Each finding has a severity, the evidence and the fix.

${ADMIN_USAGE}  --json           the findings as JSON
  -h, --help       this text

Exit 0: nothing worse than info. 1: a warning or an error. 2: bad arguments. 3: the proxy
could not be asked.
`

const COMMAND: Command = { name: 'mqtt-guard doctor', usage: USAGE }
const OPTIONS = { ...ADMIN_OPTIONS, json: { type: 'boolean' } } as const
/** Not 1, which says "the proxy has warnings". */
const UNASKED = 3

const RANK: Record<Severity, number> = { error: 0, warning: 1, info: 2 }

export async function doctorCommand (args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const made = adminCommand(args, COMMAND, OPTIONS, env)
  if (typeof made === 'number') return made
  const { client, values } = made
  const admin = client.url
  let body: { instance: string, at: string, findings: Finding[] }
  try {
    const res = await client.request('GET', '/diagnostics')
    if (res.status !== 200) throw new AdminUnavailable(`HTTP ${res.status} from ${admin}/diagnostics`)
    body = res.body as typeof body
    if (!Array.isArray(body?.findings)) throw new AdminUnavailable(`${admin}/diagnostics: not a diagnostics answer (is this mqtt-guard's admin port?)`)
  } catch (err) {
    if (!(err instanceof AdminUnavailable)) throw err
    process.stderr.write(`mqtt-guard doctor: ${err.message}\n`)
    return UNASKED
  }
  const findings = [...body.findings].sort((a, b) => RANK[a.severity] - RANK[b.severity])
  const failing = findings.some((f) => f.severity !== 'info')
  if (values.json === true) {
    process.stdout.write(JSON.stringify({ ...body, findings }, null, 2) + '\n')
    return failing ? EXIT.failed : EXIT.ok
  }
  process.stdout.write(`doctor ${admin} (instance ${body.instance}, ${body.at})\n\n`)
  for (const f of findings) process.stdout.write(render(f))
  const counts = (['error', 'warning', 'info'] as const).map((s) => [s, findings.filter((f) => f.severity === s).length] as const).filter(([, n]) => n > 0)
  process.stdout.write(findings.length === 0 ? 'no findings\n' : `${findings.length} finding${findings.length === 1 ? '' : 's'}: ${counts.map(([s, n]) => `${n} ${s}${n === 1 || s === 'info' ? '' : 's'}`).join(', ')}\n`)
  return failing ? EXIT.failed : EXIT.ok
}

export function render (f: Finding): string {
  const head = `${f.severity.toUpperCase().padEnd(8)} ${f.id}: ${f.summary}\n`
  const evidence = f.evidence.map((e) => `         ${e}\n`).join('')
  return `${head}${evidence}         fix: ${f.fix}\n\n`
}
