// `mqtt-guard trace view FILE [--client GLOB] [--follow] [--no-color]`: a trace file as one
// aligned line per packet, so that a conversation reads top to bottom. Times are UTC, to the µs.

import { open, type FileHandle } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import type { TraceLine, TracePayload } from './format.js'
import { commandArgs } from '../../src/plugin/args.js'
import { CONNACK_V3_NAMES, REASON_NAMES } from '../../src/wire/reason-codes.js'

export interface ViewOptions { color: boolean, clientId?: string /* glob with * and ? */ }

/** What a test swaps for stdout, stderr and Ctrl-C; pollMs: how often --follow looks for new bytes. */
export interface ViewIo { signal?: AbortSignal, write?: (text: string) => void, writeError?: (text: string) => void, pollMs?: number }

const USAGE = `Usage: mqtt-guard trace view FILE [--client GLOB] [--follow] [--no-color]

Prints a trace file (JSON lines from the trace plugin) as one aligned line per packet.
Times are UTC. The path column shows C (client), P (proxy) and B (broker).
  --client GLOB   only client IDs matching GLOB (* any characters, ? one character)
  -f, --follow    keep reading as the file grows, until Ctrl-C
  --no-color      no ANSI colours (the default when stdout is not a terminal)
Exit status: 0 done, 1 FILE cannot be read, 2 usage error.
`

const OPTIONS = {
  client: { type: 'string' }, follow: { type: 'boolean', short: 'f' }, 'no-color': { type: 'boolean' }, help: { type: 'boolean', short: 'h' }
} as const

const CLIENT_WIDTH = 20
const TYPE_WIDTH = 11 // UNSUBSCRIBE
const TEXT_CHARS = 40
const HEX_CHARS = 32
const SLOW_RTT_US = 100_000

// P stays in one column whichever leg, so the eye can follow a packet through the proxy.
const PATHS: Record<string, string> = {
  'client-up': 'C ──▶ P      ', 'client-down': 'C ◀── P      ', 'broker-up': '      P ──▶ B', 'broker-down': '      P ◀── B'
}
const PATH_HEADER = 'C     P     B'

const SGR = { dim: 2, red: 31, green: 32, yellow: 33, magenta: 35, cyan: 36 } as const
type Paint = (style: keyof typeof SGR, text: string) => string

const VERSIONS: Record<number, string> = { 3: 'v3.1', 4: 'v3.1.1', 5: 'v5' }
const STOPPED: Record<string, string> = { dropped: 'DROPPED', answered: 'ANSWERED', refused: 'REFUSED' }

function painter (color: boolean): Paint {
  return color ? (style, text) => `\x1b[${SGR[style]}m${text}\x1b[0m` : (_style, text) => text
}

// Client IDs, topics and payloads come from the network: a control character in them must not
// reach the terminal as an escape sequence.
function safe (text: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

function fit (text: string, width: number): string {
  const chars = Array.from(text)
  if (chars.length > width) return chars.slice(0, width - 1).join('') + '…'
  return text + ' '.repeat(width - chars.length)
}

function clock (line: TraceLine): string {
  const us = Math.floor(typeof line.us === 'number' ? line.us : line.time * 1000)
  const ms = Math.floor(us / 1000)
  const date = new Date(ms)
  if (Number.isNaN(date.getTime())) return '??:??:??.??????'
  return date.toISOString().slice(11, 23) + String(us - ms * 1000).padStart(3, '0')
}

function reasonName (code: number, line: TraceLine): string | undefined {
  if (line.type === 'connack' && line.protocolVersion < 5) return code === 0 ? 'success' : CONNACK_V3_NAMES[code]
  if (line.type === 'suback' && code <= 2) return `granted qos ${code}`
  if (line.type === 'suback' && code === 0x80 && line.protocolVersion < 5) return 'failure'
  if (line.type === 'disconnect' && code === 0) return 'normal disconnection'
  return REASON_NAMES[code]
}

function reasonCode (code: number, line: TraceLine, paint: Paint): string {
  const name = reasonName(code, line)
  const hex = '0x' + code.toString(16).toUpperCase().padStart(2, '0')
  const text = name === undefined ? hex : `${hex} ${name}`
  const v3Refusal = line.type === 'connack' && line.protocolVersion < 5 && code !== 0
  if (code >= 0x80 || v3Refusal) return paint('red', text)
  return line.type === 'connack' ? paint('green', text) : text
}

function reasons (line: TraceLine, paint: Paint): string | undefined {
  if (line.reasonCode !== undefined) return `[reason ${reasonCode(line.reasonCode, line, paint)}]`
  const codes = line.reasonCodes
  if (codes === undefined || codes.length === 0) return undefined
  return `[reasons ${codes.map((c) => reasonCode(c, line, paint)).join(', ')}]`
}

// The ellipsis goes outside the quotes, so it cannot be mistaken for the payload's own text.
function payloadText (payload: TracePayload): string {
  const more = (shown: number, all: number): string => all > shown || payload.truncated === true ? '…' : ''
  const size = `(${payload.bytes} B)`
  if (payload.text !== undefined) {
    const chars = Array.from(payload.text)
    return `${safe(JSON.stringify(chars.slice(0, TEXT_CHARS).join('')))}${more(TEXT_CHARS, chars.length)} ${size}`
  }
  if (payload.hex !== undefined) return `hex:${safe(payload.hex.slice(0, HEX_CHARS))}${more(HEX_CHARS, payload.hex.length)} ${size}`
  return payload.sha256 === undefined ? size : `sha256:${safe(payload.sha256.slice(0, 8))}… ${size}`
}

function connectText (line: TraceLine, connect: NonNullable<TraceLine['connect']>): string {
  const parts = [VERSIONS[line.protocolVersion] ?? 'v?', connect.clean ? 'clean' : 'resume', `keepalive ${connect.keepalive}`]
  if (line.username !== undefined) parts.push(`user ${safe(line.username)}`)
  if (connect.hasPassword) parts.push('password')
  const will = connect.will
  if (will !== undefined) parts.push(`will ${safe(will.topic)} q${will.qos}${will.retain ? ' retain' : ''}`)
  return parts.join(' ')
}

function verdict (line: TraceLine, paint: Paint): string | undefined {
  const plugin = line.plugin === undefined ? undefined : safe(line.plugin)
  if (line.verdict === 'proxy') return plugin === undefined ? 'made by proxy' : `made by proxy (${plugin})`
  const word = STOPPED[line.verdict]
  const text = word === undefined || plugin === undefined ? word : `${word} by ${plugin}`
  return text !== undefined && line.verdict !== 'answered' ? paint('red', text) : text
}

function details (line: TraceLine, paint: Paint): string {
  const parts: Array<string | undefined> = []
  if (line.id !== undefined) parts.push(`#${line.id}`)
  // Other packets' QoS bits are fixed by the spec [MQTT-3.6.1-1], so only PUBLISH's say anything.
  if (line.type === 'publish' && line.qos !== undefined) parts.push(`q${line.qos}`)
  if (line.dup === true) parts.push('dup')
  if (line.retain === true) parts.push('retain')
  if (line.topic !== undefined) parts.push(safe(line.topic))
  if (line.topicAlias !== undefined) parts.push(`alias ${line.topicAlias}`)
  if (line.connect !== undefined) parts.push(connectText(line, line.connect))
  parts.push(line.filters?.map((f) => f.qos === undefined ? safe(f.topic) : `${safe(f.topic)} q${f.qos}`).join(', '))
  parts.push(reasons(line, paint))
  if (line.payload !== undefined) parts.push(payloadText(line.payload))
  if (line.size !== undefined) parts.push(`${line.size} B`)
  const rtt = line.rttUs === undefined ? undefined : `rtt ${(line.rttUs / 1000).toFixed(2)} ms`
  parts.push(rtt !== undefined && (line.rttUs ?? 0) > SLOW_RTT_US ? paint('yellow', rtt) : rtt)
  parts.push(verdict(line, paint))
  return parts.filter((p) => p !== undefined && p !== '').join(' ')
}

/** One readable, aligned line for a trace line. */
export function formatLine (line: TraceLine, options: ViewOptions): string {
  const paint = painter(options.color)
  const clientId = String(line.clientId ?? '')
  const path = PATHS[`${line.leg}-${line.dir}`] ?? fit('?', PATH_HEADER.length)
  return [
    paint('dim', clock(line)),
    fit(clientId === '' ? '(empty)' : safe(clientId), CLIENT_WIDTH),
    paint(line.leg === 'broker' ? 'magenta' : 'cyan', path),
    fit(String(line.type ?? '?').toUpperCase(), TYPE_WIDTH),
    details(line, paint)
  ].join('  ').trimEnd()
}

function header (options: ViewOptions): string {
  const text = ['TIME (UTC)     ', fit('CLIENT', CLIENT_WIDTH), PATH_HEADER, fit('PACKET', TYPE_WIDTH), 'DETAILS'].join('  ')
  return painter(options.color)('dim', text)
}

function globRegExp (glob: string): RegExp {
  const body = Array.from(glob, (c) => c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&'))
  return new RegExp(`^${body.join('')}$`, 'su')
}

function parseTraceLine (text: string): TraceLine | undefined {
  let line: Partial<TraceLine> | null
  try {
    line = JSON.parse(text) as Partial<TraceLine> | null
  } catch {
    return undefined
  }
  return typeof line === 'object' && line?.msg === 'packet' && typeof line.type === 'string' ? line as TraceLine : undefined
}

/** Prints the lines that are packets of the wanted clients, after one header line. */
function printer (options: ViewOptions, write: (text: string) => void): (text: string) => void {
  const wanted = options.clientId === undefined ? undefined : globRegExp(options.clientId)
  let headed = false
  return (text) => {
    const line = parseTraceLine(text)
    if (line === undefined) return
    if (wanted !== undefined && !wanted.test(String(line.clientId ?? ''))) return
    if (!headed) write(header(options) + '\n')
    headed = true
    write(formatLine(line, options) + '\n')
  }
}

/** Reads whole lines from a byte offset on; an unfinished last line waits for its newline. */
class LineReader {
  private offset = 0
  private rest = Buffer.alloc(0)
  private readonly chunk = Buffer.alloc(64 * 1024)

  constructor (private readonly file: FileHandle, private readonly onLine: (text: string) => void) {}

  async drain (): Promise<void> {
    // A file truncated in place (copytruncate rotation) is read again from its start.
    if ((await this.file.stat()).size < this.offset) {
      this.offset = 0
      this.rest = Buffer.alloc(0)
    }
    for (let n = await this.readChunk(); n > 0; n = await this.readChunk()) this.split(this.chunk.subarray(0, n))
  }

  private async readChunk (): Promise<number> {
    const { bytesRead } = await this.file.read(this.chunk, 0, this.chunk.length, this.offset)
    this.offset += bytesRead
    return bytesRead
  }

  /** A finished file's last line may lack its newline. */
  finish (): void {
    if (this.rest.length > 0) this.onLine(this.rest.toString('utf8'))
    this.rest = Buffer.alloc(0)
  }

  // Splitting bytes, not decoded text, is safe: 0x0A never occurs inside a UTF-8 sequence.
  private split (bytes: Buffer): void {
    let data = this.rest.length === 0 ? bytes : Buffer.concat([this.rest, bytes])
    for (let nl = data.indexOf(0x0a); nl !== -1; nl = data.indexOf(0x0a)) {
      this.onLine(data.subarray(0, nl).toString('utf8'))
      data = data.subarray(nl + 1)
    }
    this.rest = Buffer.from(data) // a copy: the chunk buffer is reused by the next read
  }
}

function untilInterrupt (): { signal: AbortSignal, release: () => void } {
  const controller = new AbortController()
  const abort = (): void => { controller.abort() }
  process.once('SIGINT', abort)
  return { signal: controller.signal, release: () => { process.off('SIGINT', abort) } }
}

type Io = Required<Omit<ViewIo, 'signal'>> & Pick<ViewIo, 'signal'>

async function show (file: string, options: ViewOptions, follow: boolean, io: Io): Promise<number> {
  const stop = follow && io.signal === undefined ? untilInterrupt() : undefined
  const signal = io.signal ?? stop?.signal
  let handle: FileHandle | undefined
  try {
    handle = await open(file, 'r')
    const reader = new LineReader(handle, printer(options, io.write))
    await reader.drain()
    if (!follow) reader.finish()
    while (follow && signal?.aborted === false) {
      await sleep(io.pollMs, undefined, { signal }).catch(() => undefined)
      if (!signal.aborted) await reader.drain()
    }
    return 0
  } catch (err) {
    io.writeError(`mqtt-guard trace view: cannot read ${file}: ${(err as Error).message}\n`)
    return 1
  } finally {
    stop?.release()
    await handle?.close()
  }
}

/** `mqtt-guard trace view FILE [--client GLOB] [--follow] [--no-color]`; io is for tests. */
export async function viewCommand (args: string[], io: ViewIo = {}): Promise<number> {
  const write = io.write ?? ((text: string) => { process.stdout.write(text) })
  const writeError = io.writeError ?? ((text: string) => { process.stderr.write(text) })
  const usage = (problem: string): number => { writeError(`mqtt-guard trace view: ${problem}\n\n${USAGE}`); return 2 }
  const parsed = commandArgs(args, OPTIONS, usage)
  if (typeof parsed === 'number') return parsed
  const { values, positionals } = parsed
  if (values.help === true) { write(USAGE); return 0 }
  const [file, ...extra] = positionals
  if (file === undefined || extra.length > 0) return usage('expected one FILE')
  const color = values['no-color'] !== true && process.stdout.isTTY === true
  return await show(file, { color, clientId: values.client }, values.follow === true, { write, writeError, pollMs: io.pollMs ?? 200, signal: io.signal })
}
