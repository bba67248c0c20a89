// What the test suite writes (proxy logs, CLI output, trace files and captures) is kept under
// .tap/artifacts/ so that one scan after the run (test/scan-artifacts.ts, part of `npm test`)
// can prove that no test password reached any of it. Test passwords that matter start with
// `pw-` (PASSWORD_PATTERN); the scan looks for that shape everywhere.

import { appendFileSync, copyFileSync, mkdirSync, readdirSync, statSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ARTIFACTS = process.env.MQTT_GUARD_TEST_ARTIFACTS ?? fileURLToPath(new URL('../../../.tap/artifacts/', import.meta.url))
export const PASSWORD_PATTERN = /pw-[A-Za-z]+-[A-Za-z0-9-]*[0-9][A-Za-z0-9]*/

const MAX_FILE = 8 * 1024 * 1024
let made = false
let n = 0

function folder (): string {
  if (!made) {
    mkdirSync(ARTIFACTS, { recursive: true })
    made = true
  }
  return ARTIFACTS
}

/** A unique file name for this process. */
export function artifactName (kind: string): string {
  return path.join(folder(), `${kind}-${process.pid}-${++n}`)
}

/** Appends text (a log, a CLI's output) to a new artifact. */
export function keepText (kind: string, text: string): void {
  if (text === '') return
  try {
    appendFileSync(`${artifactName(kind)}.txt`, text)
  } catch {
    // Keeping artifacts must never fail a test.
  }
}

/** Copies the files of a temporary folder (not its subfolders) before it is removed. */
export function keepFolder (dir: string): void {
  try {
    for (const name of readdirSync(dir)) {
      const file = path.join(dir, name)
      const st = statSync(file)
      if (st.isFile() && st.size <= MAX_FILE) copyFileSync(file, `${artifactName('file')}-${name}`)
    }
  } catch {
    // as above
  }
}
