// The one argument convention of every command, the core's and the plugins': node:util
// parseArgs (strict, with positionals); `-h`/`--help` prints the command's usage to stdout and
// exits 0; a usage error (unknown flag, missing argument, bad value) prints the problem and the
// usage to stderr and exits 2, as getopt tools do. The exit codes every command shares are
// named here.

import { parseArgs, type ParseArgsConfig } from 'node:util'

/**
 * Shared exit codes. 1 is "the command ran and the answer is no" where a command has such an
 * answer (acl-check: deny; probe: a step failed; doctor: a warning), so it never means a usage
 * error; 78 is sysexits' EX_CONFIG.
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, config: 78 } as const

type Options = NonNullable<ParseArgsConfig['options']>
type Parsed<T extends Options> = ReturnType<typeof parseArgs<{ args: string[], options: T, allowPositionals: true, strict: true }>>

/** What a usage error or `--help` prints: the name in messages (`mqtt-guard doctor`) and the usage text. */
export interface Command { name: string, usage: string }

const HELP = { help: { type: 'boolean', short: 'h' } } as const

/** parseArgs' message, without the advice on `--` that follows an unknown option's name. */
function problem (err: unknown): string {
  const { code, message } = err as Error & { code?: string }
  return code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? message.replace(/\. To specify a positional argument.*$/s, '') : message
}

/** Writes the problem and the usage to stderr; returns EXIT.usage. */
export function usageError (command: Command, problem: string): number {
  process.stderr.write(`${command.name}: ${problem}\n\n${command.usage}`)
  return EXIT.usage
}

/**
 * The parsed arguments; or, when they asked for help or were wrong, the exit code, the usage
 * already written. `-h`/`--help` is added to `options`.
 */
export function parseCommand<T extends Options> (args: string[], command: Command, options: T): Parsed<T & typeof HELP> | number {
  let parsed: Parsed<T & typeof HELP>
  try {
    parsed = parseArgs({ args, options: { ...options, ...HELP }, allowPositionals: true, strict: true })
  } catch (err) {
    return usageError(command, problem(err))
  }
  // parseArgs' result type cannot see `help` through the generic spread.
  if ((parsed.values as { help?: boolean }).help === true) {
    process.stdout.write(command.usage)
    return EXIT.ok
  }
  return parsed
}

/** The parsed arguments, or the exit code `usage` gave for what was wrong with them. */
export function commandArgs<T extends Options> (args: string[], options: T, usage: (problem: string) => number): Parsed<T> | number {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true })
  } catch (err) {
    return usage(problem(err))
  }
}
