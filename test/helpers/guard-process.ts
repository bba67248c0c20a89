// Starts `mqtt-guard start` as a child process with a config written to a temp file, for tests
// that need several proxy instances sharing one Redis, or one to kill -9. Stopped (SIGTERM,
// then SIGKILL) in t.teardown.

import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { Test } from 'tap'
import { runCli, type CliProcess } from './cli-process.js'

export interface GuardProcess {
  proc: CliProcess
  port: number
  url: string
  /** The JSON log lines so far whose msg starts with `prefix`. */
  logged: (prefix: string) => Array<Record<string, unknown>>
}

/** `config` is the YAML file's content as an object; listen defaults to a free loopback port. */
export async function startGuard (t: Pick<Test, 'teardown'>, config: Record<string, unknown>): Promise<GuardProcess> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-proc-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const file = path.join(dir, 'config.json')
  // JSON is YAML: the config loader reads it as such.
  await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', log: { level: 'info' }, ...config }))
  const proc = runCli(['start', '--config', file])
  t.teardown(async () => { await proc.stop() })
  const port = await proc.listening()
  return {
    proc,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    logged: (prefix) => proc.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(prefix))
  }
}
