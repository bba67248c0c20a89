// The auth plugin's command, `mqtt-guard passwd FILE USER [--password P] [--delete] [--scrypt] [--iterations N]`: adds,
// changes or deletes one user in a Mosquitto-format password file. Other lines and comments
// are kept; the file is replaced atomically (temp file + rename). The default hash is `$7$`
// (PBKDF2-SHA512, what `mosquitto_passwd` writes), so Mosquitto can still read the file.

import { readFile, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { EXIT, parseCommand, usageError, type Command, type PluginCommand } from '../../src/plugin/api.js'
import { formatHash, hashPbkdf2, hashScrypt, MOSQUITTO_ITERATIONS, splitLine } from './password-file.js'

const USAGE = `Usage: mqtt-guard passwd FILE USER [--password P] [--delete] [--scrypt] [--iterations N]
  Adds or changes USER in FILE (created if missing). Prompts twice for the password on a
  terminal, reads one line from stdin otherwise; --password P for scripts.
  --delete        remove USER
  --scrypt        store a $scrypt$ hash (mqtt-guard only; Mosquitto cannot read it)
  --iterations N  PBKDF2 iterations for $7$ (default ${MOSQUITTO_ITERATIONS}, as mosquitto_passwd)
  -h, --help      this text
Exit status: 0 done, 1 failed (USER not found for --delete, an empty password, a file error),
2 usage error.
`

const COMMAND: Command = { name: 'mqtt-guard passwd', usage: USAGE }
const OPTIONS = { password: { type: 'string' }, delete: { type: 'boolean' }, scrypt: { type: 'boolean' }, iterations: { type: 'string' } } as const

/** A run-time failure: the message alone, exit 1 (usage errors go through usageError). */
function fail (message: string): number {
  process.stderr.write(`mqtt-guard passwd: ${message}\n`)
  return EXIT.failed
}

/** Reads a line from a terminal without echo. */
async function promptHidden (question: string): Promise<string> {
  const stdin = process.stdin
  process.stderr.write(question)
  stdin.setRawMode(true)
  stdin.resume()
  let text = ''
  try {
    return await new Promise<string>((resolve, reject) => {
      const onData = (chunk: Buffer): void => {
        for (const ch of chunk.toString('utf8')) {
          if (ch === '\r' || ch === '\n') { stdin.off('data', onData); resolve(text); return }
          if (ch === '\u0003') { stdin.off('data', onData); reject(new Error('interrupted')); return }
          if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1)
          else text += ch
        }
      }
      stdin.on('data', onData)
    })
  } finally {
    stdin.setRawMode(false)
    stdin.pause()
    process.stderr.write('\n')
  }
}

async function readStdinLine (): Promise<string> {
  let text = ''
  for await (const chunk of process.stdin) {
    text += (chunk as Buffer).toString('utf8')
    if (text.includes('\n')) break
  }
  return text.split('\n')[0]?.replace(/\r$/, '') ?? ''
}

async function askPassword (): Promise<string> {
  if (!process.stdin.isTTY) return await readStdinLine()
  const first = await promptHidden('Password: ')
  const second = await promptHidden('Reenter password: ')
  if (first !== second) throw new Error('passwords do not match')
  return first
}

async function readLines (file: string): Promise<string[]> {
  try {
    const text = await readFile(file, 'utf8')
    const lines = text.split('\n')
    if (lines[lines.length - 1] === '') lines.pop()
    return lines
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
}

/** Replaces USER's line (or appends it); `entry` undefined deletes. Returns whether USER was there. */
export function editLines (lines: string[], user: string, entry: string | undefined): { lines: string[], found: boolean } {
  const out: string[] = []
  let found = false
  for (const line of lines) {
    const parsed = splitLine(line)
    if (parsed !== undefined && !(parsed instanceof Error) && parsed.user === user) {
      if (!found && entry !== undefined) out.push(entry)
      found = true
      continue
    }
    out.push(line)
  }
  if (!found && entry !== undefined) out.push(entry)
  return { lines: out, found }
}

async function writeAtomically (file: string, text: string): Promise<void> {
  const mode = await stat(file).then((s) => s.mode & 0o777, () => 0o600)
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    await writeFile(temp, text, { mode, flag: 'wx' })
    await rename(temp, file)
  } catch (err) {
    await unlink(temp).catch(() => {})
    throw err
  }
}

export async function passwdCommand (args: string[]): Promise<number> {
  const parsed = parseCommand(args, COMMAND, OPTIONS)
  if (typeof parsed === 'number') return parsed
  const { values, positionals } = parsed
  const [file, user, ...extra] = positionals
  if (file === undefined || user === undefined || extra.length > 0) return usageError(COMMAND, 'expected FILE and USER')
  // Mosquitto splits at the first ':'; a line break would start a new entry.
  if (user === '' || /[:\r\n]/.test(user) || user.trim() !== user || user.startsWith('#')) return usageError(COMMAND, `invalid user name "${user}"`)
  const iterations = values.iterations === undefined ? MOSQUITTO_ITERATIONS : Number(values.iterations)
  if (!Number.isInteger(iterations) || iterations < 1) return usageError(COMMAND, `--iterations: expected a positive integer, got "${values.iterations ?? ''}"`)
  try {
    const lines = await readLines(file)
    if (values.delete === true) {
      const edited = editLines(lines, user, undefined)
      if (!edited.found) return fail(`user "${user}" not found in ${file}`)
      await writeAtomically(file, edited.lines.map((l) => `${l}\n`).join(''))
      return 0
    }
    const password = values.password ?? await askPassword()
    if (password === '') return fail('empty password')
    if (/[\r\n]/.test(password)) return fail('password contains a line break')
    const hash = values.scrypt === true ? await hashScrypt(password) : await hashPbkdf2(password, iterations)
    const edited = editLines(lines, user, `${user}:${formatHash(hash)}`)
    await writeAtomically(file, edited.lines.map((l) => `${l}\n`).join(''))
    return 0
  } catch (err) {
    return fail((err as Error).message)
  }
}

export const passwd: PluginCommand = {
  synopsis: 'FILE USER',
  summary: 'add, change or delete a user in a Mosquitto password file\n([--password P] [--delete] [--scrypt] [--iterations N])',
  run: passwdCommand
}
