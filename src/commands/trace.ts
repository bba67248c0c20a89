// `mqtt-guard trace start|list|stop|view|export`: run-time traces through the admin API of any
// instance (they reach every instance over Redis), and reading what they wrote.

import { parseArgs } from 'node:util'

const USAGE = `Usage:
  mqtt-guard trace start [--admin URL] [--client GLOB] [--user NAME] [--address CIDR]
                         [--topic FILTER] [--types publish,puback,...] [--for 10m]
  mqtt-guard trace list  [--admin URL]
  mqtt-guard trace stop ID [--admin URL]
  mqtt-guard trace view FILE [--client GLOB] [--follow] [--no-color]
  mqtt-guard trace export FILE --pcap OUT.pcapng

--admin defaults to http://127.0.0.1:9884; the bearer token comes from MQTT_GUARD_ADMIN_TOKEN.
The trace plugin must be configured (plugins: [{ name: trace, enabled: false }] traces
nothing until a trace is started).
`

async function call (admin: string, method: string, path: string, body?: unknown): Promise<{ status: number, body: unknown }> {
  const token = process.env.MQTT_GUARD_ADMIN_TOKEN
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined && token !== '') headers.authorization = `Bearer ${token}`
  const res = await fetch(new URL(path, admin), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  return { status: res.status, body: await res.json().catch(() => null) }
}

function report (r: { status: number, body: unknown }, ok: number[]): number {
  const out = ok.includes(r.status) ? process.stdout : process.stderr
  out.write(JSON.stringify(r.body) + '\n')
  if (r.status === 404 && r.body !== null && typeof r.body === 'object' && 'error' in r.body && (r.body as { error: string }).error === 'not found') {
    process.stderr.write('mqtt-guard: the admin endpoint has no /traces: is the trace plugin configured?\n')
  }
  return ok.includes(r.status) ? 0 : 1
}

export async function traceCommand (args: string[]): Promise<number> {
  const [sub, ...rest] = args
  if (sub === 'view') return await (await import('../../plugins/trace/view.js')).viewCommand(rest)
  if (sub === 'export') return await (await import('../../plugins/trace/export.js')).exportCommand(rest)
  if (sub !== 'start' && sub !== 'list' && sub !== 'stop') {
    process.stdout.write(USAGE)
    return sub === undefined || sub === '--help' || sub === '-h' ? 0 : 2
  }
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    strict: true,
    options: {
      admin: { type: 'string' }, client: { type: 'string' }, user: { type: 'string' }, address: { type: 'string' },
      topic: { type: 'string' }, types: { type: 'string' }, for: { type: 'string' }
    }
  })
  const admin = values.admin ?? 'http://127.0.0.1:9884'
  try {
    if (sub === 'list') return report(await call(admin, 'GET', '/traces'), [200])
    if (sub === 'stop') {
      const id = positionals[0]
      if (id === undefined) { process.stderr.write(USAGE); return 2 }
      return report(await call(admin, 'DELETE', `/traces/${encodeURIComponent(id)}`), [200])
    }
    const filters = {
      ...(values.client !== undefined && { clientId: values.client }),
      ...(values.user !== undefined && { username: values.user }),
      ...(values.address !== undefined && { address: values.address }),
      ...(values.topic !== undefined && { topic: values.topic }),
      ...(values.types !== undefined && { types: values.types.split(',').map((s) => s.trim()) })
    }
    return report(await call(admin, 'POST', '/traces', { filters, for: values.for ?? '10m' }), [201])
  } catch (err) {
    process.stderr.write(`mqtt-guard: cannot reach the admin endpoint at ${admin}: ${(err as Error).message}\n`)
    return 1
  }
}
