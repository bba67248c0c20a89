#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm ci` (the `prepare` script). It also owns
// what belongs to the process rather than to a command: the exit code, and a reader that
// closes our output early.
import { main } from '../dist/src/cli/main.js'

// `mqtt-guard doctor | head -1`, `trace view big.jsonl | head`: the reader has what it wanted
// and closed the pipe; the next write fails with EPIPE (Node ignores SIGPIPE), which unhandled
// is a stack trace. End at once and quietly with 0: the reader chose to stop, nothing failed.
// Not the shell's 141 (a death by SIGPIPE), which under `set -o pipefail` would fail a script
// for reading only what it needed; any other stream error stays an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(0)
    throw err
  })
}

main(process.argv.slice(2)).then((code) => {
  if (typeof code === 'number') process.exitCode = code
}, (err) => {
  console.error(err instanceof Error ? err.message : String(err))
  process.exitCode = 1
})
