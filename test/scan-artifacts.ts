// Run after the whole suite (`npm test`): no test password may appear in anything the tests
// had the proxy write: logs, CLI output, trace files, captures. `clear` empties the folder
// before a run. Exit 1 names each file and what was found.

import { readdirSync, readFileSync, rmSync } from 'node:fs'
import path from 'node:path'
import { ARTIFACTS, PASSWORD_PATTERN } from './helpers/artifacts.js'

function scan (): number {
  let files: string[] = []
  try {
    files = readdirSync(ARTIFACTS)
  } catch {
    files = []
  }
  const found: string[] = []
  const pattern = new RegExp(PASSWORD_PATTERN.source, 'g')
  for (const name of files) {
    const text = readFileSync(path.join(ARTIFACTS, name)).toString('latin1')
    const hits = new Set(text.match(pattern) ?? [])
    if (hits.size > 0) found.push(`${name}: ${[...hits].join(', ')}`)
  }
  if (found.length > 0) {
    process.stderr.write(`test passwords found in what the tests wrote:\n  ${found.join('\n  ')}\n`)
    return 1
  }
  process.stdout.write(`artifact scan: ${files.length} files the tests wrote, no test password in any\n`)
  return 0
}

if (process.argv[2] === 'clear') {
  rmSync(ARTIFACTS, { recursive: true, force: true })
} else {
  process.exitCode = scan()
}
