// `mqtt-guard doctor`: asks a running proxy (admin API `GET /diagnostics`) what it has noticed,
// and prints each finding with its severity, the evidence and the fix. Exit 0 when nothing is a
// warning or worse, 1 when something is, 2 for bad arguments, 3 when the proxy cannot be asked.

import { commandArgs } from './args.js'
import type { Finding, Severity } from '../diagnostics.js'

const USAGE = `Usage: mqtt-guard doctor [--admin URL] [--token TOKEN] [--json]

Asks a running mqtt-guard what it has noticed: clients that flap and why, refused connects by
code, client-ID refusals, ACL denials by rule, subscribers starved by refused publishes, QoS 0
subscribers with clean sessions, slow consumers, full queues, packets over the size limit, where latency
is (broker leg or client leg), certificate expiry, Redis and broker health, connections and
file descriptors against their limits. Each finding has a severity, the evidence and the fix.

  --admin URL      the proxy's admin endpoint (default http://127.0.0.1:9884, env MQTT_GUARD_ADMIN_URL)
  --token TOKEN    its bearer token (env MQTT_GUARD_ADMIN_TOKEN)
  --json           the findings as JSON
  --help

Exit 0: nothing worse than info. 1: a warning or an error. 2: bad arguments. 3: the proxy
could not be asked.
`

const OPTIONS = {
  admin: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean' }
} as const

const RANK: Record<Severity, number> = { error: 0, warning: 1, info: 2 }

function usage (problem: string): number {
  process.stderr.write(`mqtt-guard doctor: ${problem}\n\n${USAGE}`)
  return 2
}

export async function doctorCommand (args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const parsed = commandArgs(args, OPTIONS, usage)
  if (typeof parsed === 'number') return parsed
  const { values, positionals } = parsed
  if (values.help === true) { process.stdout.write(USAGE); return 0 }
  if (positionals.length > 0) return usage(`unexpected ${positionals.join(' ')}`)
  const admin = (values.admin ?? env.MQTT_GUARD_ADMIN_URL ?? 'http://127.0.0.1:9884').replace(/\/+$/, '')
  if (!/^https?:\/\//.test(admin)) return usage(`--admin: expected http://HOST:PORT, got ${admin}`)
  const token = values.token ?? env.MQTT_GUARD_ADMIN_TOKEN
  let body: { instance: string, at: string, findings: Finding[] }
  try {
    const res = await fetch(`${admin}/diagnostics`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) })
    if (res.status === 401) throw new Error('401: the admin API wants a bearer token (--token or MQTT_GUARD_ADMIN_TOKEN)')
    if (!res.ok) throw new Error(`HTTP ${res.status} from ${admin}/diagnostics`)
    body = await res.json() as typeof body
  } catch (err) {
    process.stderr.write(`mqtt-guard doctor: cannot ask ${admin}: ${(err as Error).message}\n`)
    return 3
  }
  const findings = [...body.findings].sort((a, b) => RANK[a.severity] - RANK[b.severity])
  const failing = findings.some((f) => f.severity !== 'info')
  if (values.json === true) {
    process.stdout.write(JSON.stringify({ ...body, findings }, null, 2) + '\n')
    return failing ? 1 : 0
  }
  process.stdout.write(`doctor ${admin} (instance ${body.instance}, ${body.at})\n\n`)
  for (const f of findings) process.stdout.write(render(f))
  const counts = (['error', 'warning', 'info'] as const).map((s) => [s, findings.filter((f) => f.severity === s).length] as const).filter(([, n]) => n > 0)
  process.stdout.write(findings.length === 0 ? 'no findings\n' : `${findings.length} finding${findings.length === 1 ? '' : 's'}: ${counts.map(([s, n]) => `${n} ${s}${n === 1 || s === 'info' ? '' : 's'}`).join(', ')}\n`)
  return failing ? 1 : 0
}

export function render (f: Finding): string {
  const head = `${f.severity.toUpperCase().padEnd(8)} ${f.id}: ${f.summary}\n`
  const evidence = f.evidence.map((e) => `         ${e}\n`).join('')
  return `${head}${evidence}         fix: ${f.fix}\n\n`
}
