// Helpers for the auth plugin's integration tests: MQTT.js logins that resolve with the
// outcome, password files made by Debian's mosquitto_passwd, and a check that no test
// password ever reached a log line.

import type { Test } from 'tap'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { keepFolder } from './artifacts.js'
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { LogLine } from './log-sink.js'

const MOSQUITTO_PASSWD = process.env['MOSQUITTO_PASSWD_BIN'] ?? 'mosquitto_passwd'

export type Login = { ok: true, client: MqttClient } | { ok: false, code: number | undefined }

/** Connects once (no reconnects); resolves with the client, or the CONNACK code of the refusal. */
export async function login (t: Test, url: string, version: 4 | 5, options: IClientOptions = {}): Promise<Login> {
  const client = mqtt.connect(url, { protocolVersion: version, reconnectPeriod: 0, connectTimeout: 5000, ...options })
  t.teardown(() => { client.end(true) })
  return await new Promise((resolve) => {
    client.once('connect', () => { resolve({ ok: true, client }) })
    client.once('error', (err: Error & { code?: number | string }) => { resolve({ ok: false, code: typeof err.code === 'number' ? err.code : undefined }) })
    client.once('close', () => { resolve({ ok: false, code: undefined }) })
  })
}

/** The CONNACK code a login got: 0 when admitted. */
export async function loginCode (t: Test, url: string, version: 4 | 5, username?: string, password?: string): Promise<number | undefined> {
  const options: IClientOptions = {}
  if (username !== undefined) options.username = username
  if (password !== undefined) options.password = password
  const result = await login(t, url, version, options)
  if (result.ok) { result.client.end(true); return 0 }
  return result.code
}

export async function tempDir (t: Pick<Test, 'teardown'>, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  t.teardown(async () => {
    keepFolder(dir)
    await rm(dir, { recursive: true, force: true })
  })
  return dir
}

/** A password file written by Debian's mosquitto_passwd -b; `sha512` selects $6$ per user. */
export async function mosquittoPasswdFile (file: string, users: Array<{ user: string, password: string, sha512?: boolean }>): Promise<string> {
  let first = true
  for (const { user, password, sha512 } of users) {
    const args = [...(sha512 === true ? ['-H', 'sha512'] : []), ...(first ? ['-c'] : []), '-b', file, user, password]
    await promisify(execFile)(MOSQUITTO_PASSWD, args)
    first = false
  }
  return file
}

/** Fails the test if any log line holds one of the passwords (anywhere in its JSON). */
export function assertNoPasswordsLogged (t: Test, lines: LogLine[], passwords: string[]): void {
  const leaks = lines.filter((line) => passwords.some((p) => JSON.stringify(line).includes(p)))
  t.same(leaks, [], `no password in ${lines.length} log lines`)
}
