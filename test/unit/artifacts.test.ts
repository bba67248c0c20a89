// The artifact scan that ends `npm test` fails when a test password reached a file, and
// passes otherwise.

import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'

const SCAN = fileURLToPath(new URL('../scan-artifacts.js', import.meta.url))

async function scan (files: Record<string, string>): Promise<{ code: number, out: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mqtt-guard-scan-'))
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text)
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [SCAN], { env: { ...process.env, MQTT_GUARD_TEST_ARTIFACTS: dir } })
    return { code: 0, out: stdout }
  } catch (err) {
    const e = err as { code: number, stderr: string }
    return { code: e.code, out: e.stderr }
  }
}

t.test('a test password in a kept file fails the run; none passes', async (t) => {
  const clean = await scan({ 'log-1.txt': '{"msg":"auth refused","username":"rita"}\n', 'file-2-trace.jsonl': '{"hasPassword":true}\n' })
  t.equal(clean.code, 0)
  t.match(clean.out, /2 files the tests wrote, no test password/)
  const leaked = await scan({ 'cli-3.txt': 'connect with pw-Rita-h3s9 failed\n' })
  t.equal(leaked.code, 1)
  t.match(leaked.out, /cli-3\.txt: pw-Rita-h3s9/)
})
