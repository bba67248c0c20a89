// `mqtt-guard trace export FILE --pcap OUT.pcapng`: a trace (JSON lines, mixed in with any
// other log lines) rebuilt as a capture for Wireshark. Only lines that kept the packet's bytes
// (`frame`, written when the trace's payload mode is hex or text) can go in.

import { createReadStream } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import type { TraceLine } from './format.js'
import { tracesToPcapng } from './pcapng.js'
import { commandArgs } from '../../src/plugin/args.js'

const USAGE = `Usage: mqtt-guard trace export FILE --pcap OUT.pcapng

Writes the packets of a trace (JSON lines; other lines are ignored) as a pcapng capture in
which each connection's client leg and broker leg are TCP streams to port 1883, so Wireshark
decodes them as MQTT. Only lines that carry the packet's bytes (traces with payload: hex or
text) can be exported. Exit status: 0 written, 1 nothing to export, 2 usage error.
`

const OPTIONS = {
  pcap: { type: 'string' },
  help: { type: 'boolean', short: 'h' }
} as const

function usage (problem: string): number {
  process.stderr.write(`mqtt-guard trace export: ${problem}\n\n${USAGE}`)
  return 2
}

export async function exportCommand (args: string[]): Promise<number> {
  const parsed = commandArgs(args, OPTIONS, usage)
  if (typeof parsed === 'number') return parsed
  const { values, positionals } = parsed
  if (values.help === true) { process.stdout.write(USAGE); return 0 }
  const [file, ...extra] = positionals
  if (file === undefined || extra.length > 0) return usage('expected one trace FILE')
  if (values.pcap === undefined || values.pcap === '') return usage('--pcap OUT.pcapng is required')
  let lines: TraceLine[]
  try {
    lines = await readTrace(file)
  } catch (err) {
    process.stderr.write(`mqtt-guard trace export: cannot read ${file}: ${(err as Error).message}\n`)
    return 1
  }
  return await write(file, values.pcap, lines)
}

async function write (file: string, out: string, lines: TraceLine[]): Promise<number> {
  if (lines.length === 0) {
    process.stderr.write(`mqtt-guard trace export: ${file} has no trace packet lines (msg "packet")\n`)
    return 1
  }
  const { pcapng, packets, skipped, streams } = tracesToPcapng(lines)
  if (packets === 0) {
    process.stderr.write(`mqtt-guard trace export: none of the ${lines.length} packet lines in ${file} has the packet's bytes: the trace kept no payloads (trace with payload: hex or text to export)\n`)
    return 1
  }
  try {
    await writeFile(out, pcapng)
  } catch (err) {
    process.stderr.write(`mqtt-guard trace export: cannot write ${out}: ${(err as Error).message}\n`)
    return 1
  }
  const without = skipped === 0 ? '' : ` (${skipped} lines without bytes: the trace kept no payloads)`
  process.stdout.write(`wrote ${out}: ${packets} packets in ${streams} streams${without}\n`)
  return 0
}

/** Streamed line by line: a day's trace need not fit in memory twice. */
async function readTrace (file: string): Promise<TraceLine[]> {
  const lines: TraceLine[] = []
  const input = createReadStream(file, { encoding: 'utf8' })
  for await (const text of createInterface({ input, crlfDelay: Infinity })) {
    const line = parseLine(text)
    if (line !== undefined) lines.push(line)
  }
  return lines
}

/** A trace packet line, or undefined for anything else the log holds. */
function parseLine (text: string): TraceLine | undefined {
  if (!text.startsWith('{')) return undefined
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  return isTraceLine(value) ? value : undefined
}

/** The fields the export reads; the rest are only copied into comments. */
function isTraceLine (value: unknown): value is TraceLine {
  if (typeof value !== 'object' || value === null) return false
  const line = value as Partial<Record<keyof TraceLine, unknown>>
  return line.msg === 'packet' &&
    typeof line.us === 'number' && Number.isFinite(line.us) &&
    typeof line.conn === 'string' && typeof line.instance === 'string' &&
    (line.leg === 'client' || line.leg === 'broker') && (line.dir === 'up' || line.dir === 'down') &&
    typeof line.address === 'string' && typeof line.port === 'number' &&
    (line.frame === undefined || typeof line.frame === 'string')
}
