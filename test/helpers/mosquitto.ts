import { execFile } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { canConnect, startServer } from './processes.js'
import type { ExitInfo } from './processes.js'

/**
 * Start a private Debian mosquitto (2.x) for one test: its own temp dir,
 * config and free port on 127.0.0.1, never the machine's shared :1883.
 */

const MOSQUITTO = process.env['MOSQUITTO_BIN'] ?? '/usr/sbin/mosquitto'
const MOSQUITTO_PASSWD = process.env['MOSQUITTO_PASSWD_BIN'] ?? 'mosquitto_passwd'

export interface MosquittoOptions {
  /** Lines appended verbatim to the generated mosquitto.conf. */
  extraConfig?: string
  /**
   * Informational only: a mosquitto 2 listener always accepts MQTT 3.1,
   * 3.1.1 and 5, so there is nothing to switch on. Kept so tests can say
   * which protocol they rely on.
   */
  v5?: boolean
  /** Default true; set false together with passwords/passwordFile. */
  allowAnonymous?: boolean
  /** user -> plaintext password; hashed into the temp dir with mosquitto_passwd -U. */
  passwords?: Record<string, string>
  /** An existing password_file (already hashed). Ignored if `passwords` is given. */
  passwordFile?: string
  /** ACL file content, written into the temp dir. */
  acl?: string
  /** An existing acl_file. Ignored if `acl` is given. */
  aclFile?: string
  /** Keep retained messages/sessions in the temp dir across restart(). Default false. */
  persistence?: boolean
  /** Deadline for one start to become ready. Default 15 s. */
  startTimeoutMs?: number
}

export interface Mosquitto {
  readonly port: number
  /** PID of the current process (changes after restart()). */
  readonly pid: number
  /** mqtt://127.0.0.1:PORT */
  readonly url: string
  /** Temp dir holding mosquitto.conf, mosquitto.log and any persistence. */
  readonly dir: string
  readonly logFile: string
  /** SIGTERM, SIGKILL after a timeout, wait for exit, remove the temp dir. */
  stop(): Promise<void>
  /** Signal the current process by PID (fault injection). */
  kill(signal?: NodeJS.Signals): void
  /** Resolves when the current process exits. */
  exited(): Promise<ExitInfo>
  /** Stop if running, then start again on the same port with the same config. */
  restart(): Promise<void>
  /** The whole log so far. */
  log(): string
}

export async function startMosquitto(opts: MosquittoOptions = {}): Promise<Mosquitto> {
  const dir = await mkdtemp(join(tmpdir(), 'mqtt-guard-mosquitto-'))
  const conf = join(dir, 'mosquitto.conf')
  const logFile = join(dir, 'mosquitto.log')

  const fixed: string[] = [
    `allow_anonymous ${opts.allowAnonymous ?? true ? 'true' : 'false'}`,
    // stderr (a descriptor on mosquitto.log, see spawnLogged) because it is
    // unbuffered: stdout to a file is block-buffered, so the "running" line
    // we wait for would only show up at exit
    'log_dest stderr',
    'log_type all',
    'log_timestamp_format %Y-%m-%dT%H:%M:%S'
  ]
  // As root, mosquitto 2 drops to user "mosquitto", which could then not read
  // our 0700 temp dir; "user root" keeps root. As non-root the option is moot.
  if (process.getuid?.() === 0) fixed.push('user root')
  if (opts.persistence === true) {
    fixed.push('persistence true', `persistence_location ${dir}/`, 'autosave_interval 1')
  } else {
    fixed.push('persistence false')
  }
  if (opts.passwords !== undefined) {
    const pw = join(dir, 'passwords')
    const lines = Object.entries(opts.passwords).map(([u, p]) => `${u}:${p}\n`)
    await writeFile(pw, lines.join(''), { mode: 0o600 })
    // -U rewrites a plaintext user:password file with hashed passwords
    await promisify(execFile)(MOSQUITTO_PASSWD, ['-U', pw])
    fixed.push(`password_file ${pw}`)
  } else if (opts.passwordFile !== undefined) {
    fixed.push(`password_file ${opts.passwordFile}`)
  }
  if (opts.acl !== undefined) {
    const acl = join(dir, 'acl')
    await writeFile(acl, opts.acl)
    fixed.push(`acl_file ${acl}`)
  } else if (opts.aclFile !== undefined) {
    fixed.push(`acl_file ${opts.aclFile}`)
  }

  const server = await startServer({
    name: 'mosquitto',
    command: MOSQUITTO,
    dir,
    logFile,
    startTimeoutMs: opts.startTimeoutMs ?? 15_000,
    async argv(port) {
      // listener first: options like allow_anonymous apply to it
      const body = [`listener ${port} 127.0.0.1`, ...fixed, opts.extraConfig ?? ''].join('\n')
      await writeFile(conf, body + '\n')
      return ['-c', conf]
    },
    async probe(port, child) {
      // "running" is logged only after every listener was bound, so it is
      // the real readiness event, and it comes from OUR process's log (a
      // plain connect could reach whoever won a port race). The connect just
      // double-checks the listener from the outside.
      return /mosquitto version \S+ running/.test(child.log()) && (await canConnect(port))
    },
    url: port => `mqtt://127.0.0.1:${port}`
  })

  return {
    port: server.port,
    get pid() {
      return server.pid
    },
    url: server.url,
    dir,
    logFile,
    stop: () => server.stop(),
    kill: signal => server.kill(signal),
    exited: () => server.exited(),
    restart: () => server.restart(),
    log: () => server.log()
  }
}
