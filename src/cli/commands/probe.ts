// `mqtt-guard probe URL`: the connection checklist as one command (src/cli/probe.ts does the
// work). Options are named as mosquitto_pub names them, so habits carry over.

import { EXIT, parseCommand, usageError, type Command } from '../../plugin/args.js'
import { probeUrl, runProbe, type ProbeStep, type ProbeVersion } from '../probe.js'

const USAGE = `Usage: mqtt-guard probe URL|HOST[:PORT] [options]

Walks one connection step by step and times each: name resolution, TCP, TLS (chain, host name,
days to expiry), WebSocket upgrade, CONNECT → CONNACK (what a refusal means and the likely fix),
then a subscription and a round trip at QoS 0, 1 and 2 on a probe topic. Stops at the first
step that fails. Exit 0 when every step passed, 1 when one failed, 2 for bad arguments.

URL: mqtt://HOST[:PORT] (1883), mqtts:// (8883), ws://HOST[:PORT]/PATH, wss://
HOST[:PORT] (or [IPV6]:PORT) is mqtt://HOST[:PORT]; with --cafile or --cert, as for
mosquitto_pub, mqtts://HOST[:PORT] (8883).

Options (as mosquitto_pub names them):
  -u, --username USER
  -P, --password PASSWORD
  -i, --id CLIENT_ID            default mqtt-guard-probe-<random>
  -V, --protocol-version V      31, 311 (default) or 5 (also mqttv31, mqttv311, mqttv5)
  -t, --topic TOPIC             the probe topic (default mqtt-guard/probe/<client ID>)
      --cafile FILE             CA certificate(s) to verify the server with
      --cert FILE, --key FILE   client certificate and key
      --insecure                go on when the server's certificate does not verify
      --timeout SECONDS         per step (default 5)
      --json                    the report as JSON
  -h, --help                    this text (the host is the argument, not -h)
`

const COMMAND: Command = { name: 'mqtt-guard probe', usage: USAGE }

const OPTIONS = {
  username: { type: 'string', short: 'u' },
  password: { type: 'string', short: 'P' },
  id: { type: 'string', short: 'i' },
  'protocol-version': { type: 'string', short: 'V' },
  topic: { type: 'string', short: 't' },
  cafile: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  insecure: { type: 'boolean' },
  timeout: { type: 'string' },
  json: { type: 'boolean' }
} as const

const VERSIONS: Record<string, ProbeVersion> = { 31: 3, 311: 4, 5: 5, mqttv31: 3, mqttv311: 4, mqttv5: 5 }
const NAMES: Record<ProbeVersion, string> = { 3: 'MQTT 3.1', 4: 'MQTT 3.1.1', 5: 'MQTT 5' }

export async function probeCommand (args: string[]): Promise<number> {
  const parsed = parseCommand(args, COMMAND, OPTIONS)
  if (typeof parsed === 'number') return parsed
  const { values, positionals } = parsed
  const arg = positionals[0]
  if (arg === undefined || positionals.length > 1) return usageError(COMMAND, 'expected one URL or HOST[:PORT]')
  const target = probeUrl(arg, values.cafile !== undefined || values.cert !== undefined)
  if ('problem' in target) return usageError(COMMAND, target.problem)
  const { url } = target
  const usage = (problem: string): number => usageError(COMMAND, problem)
  const version = VERSIONS[values['protocol-version'] ?? '311']
  if (version === undefined) return usage(`-V: expected 31, 311 or 5, got ${String(values['protocol-version'])}`)
  const timeout = Number(values.timeout ?? '5')
  if (!Number.isFinite(timeout) || timeout <= 0) return usage(`--timeout: expected seconds > 0, got ${String(values.timeout)}`)
  if ((values.cert === undefined) !== (values.key === undefined)) return usage('--cert and --key go together')
  const json = values.json === true
  if (!json) process.stdout.write(`probe ${url} (${NAMES[version]}${values.username !== undefined ? `, user ${values.username}` : ''})\n`)
  const report = await runProbe({
    url,
    username: values.username,
    password: values.password,
    clientId: values.id,
    cafile: values.cafile,
    cert: values.cert,
    key: values.key,
    insecure: values.insecure,
    protocolVersion: version,
    topic: values.topic,
    timeoutMs: Math.round(timeout * 1000),
    onStep: json ? undefined : (step) => { process.stdout.write(render(step)) }
  })
  if (json) process.stdout.write(JSON.stringify(report, null, 2) + '\n')
  else process.stdout.write(report.ok ? `ok: every step passed (client ID ${report.clientId})\n` : `FAILED at ${String(report.steps.at(-1)?.step)}\n`)
  return report.ok ? EXIT.ok : EXIT.failed
}

/** One step as a line: mark, name, time, what was found; a fix on the next line when there is one. */
export function render (step: ProbeStep): string {
  const mark = !step.ok ? '✗' : step.warning === true ? '!' : '✓'
  const ms = `${step.ms.toFixed(step.ms < 10 ? 2 : 1)} ms`
  const line = `${mark} ${step.step.padEnd(10)} ${ms.padStart(10)}  ${step.detail}\n`
  return step.fix === undefined ? line : `${line}${' '.repeat(25)}→ ${step.fix}\n`
}
