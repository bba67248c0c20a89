// The subcommands' argument parsing: node:util parseArgs with positionals, strict, and a
// parse error turned into the command's usage answer (exit code 2).

import { parseArgs, type ParseArgsConfig } from 'node:util'

type Options = NonNullable<ParseArgsConfig['options']>
type Parsed<T extends Options> = ReturnType<typeof parseArgs<{ args: string[], options: T, allowPositionals: true, strict: true }>>

/** The parsed arguments, or the exit code `usage` gave for what was wrong with them. */
export function commandArgs<T extends Options> (args: string[], options: T, usage: (problem: string) => number): Parsed<T> | number {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true })
  } catch (err) {
    return usage((err as Error).message)
  }
}
