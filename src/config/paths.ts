// Paths in the config: each resolves against the config file's folder (the working directory
// without a config file) and is checked when the config is, so a file that is not there, or a
// folder a trace cannot be written to, is a config error naming the key, found by
// `check-config` as well as by `start` (exit 78), never a bare ENOENT later.

import { accessSync, constants, statSync, type Stats } from 'node:fs'
import path from 'node:path'
import { configError } from '../errors.js'

function stat (file: string): Stats | undefined {
  try {
    return statSync(file)
  } catch {
    return undefined
  }
}

function accessible (file: string, mode: number): boolean {
  try {
    accessSync(file, mode)
    return true
  } catch {
    return false
  }
}

/** A path, not a package name: `./x.js`, `../x`, `/abs/x` (how `module:` and `hooks:` tell them apart). */
export function isFilePath (value: string): boolean {
  return value.startsWith('.') || path.isAbsolute(value)
}

/** A file the proxy reads (certificates, password and ACL files, modules): absolute, existing. */
export function inputFile (configDir: string, value: string, key: string): string {
  const file = path.resolve(configDir, value)
  const found = stat(file)
  if (found === undefined) throw configError(key, `file ${file} does not exist`)
  if (found.isDirectory()) throw configError(key, `${file} is a folder, expected a file`)
  if (!accessible(file, constants.R_OK)) throw configError(key, `file ${file} is not readable`)
  return file
}

/**
 * A file the proxy writes (trace): absolute, in a folder that exists and may be written to.
 * The folder is not created: a typo in it must not grow a new tree somewhere.
 */
export function outputFile (configDir: string, value: string, key: string): string {
  const file = path.resolve(configDir, value)
  const folder = path.dirname(file)
  const dir = stat(folder)
  if (dir === undefined) throw configError(key, `folder ${folder} does not exist (create it, or give stdout)`)
  if (!dir.isDirectory()) throw configError(key, `${folder} is not a folder`)
  const existing = stat(file)
  if (existing?.isDirectory() === true) throw configError(key, `${file} is a folder, expected a file`)
  // The folder too when the file exists: rotation renames files in it.
  if (!accessible(folder, constants.W_OK | constants.X_OK)) throw configError(key, `folder ${folder} is not writable`)
  if (existing !== undefined && !accessible(file, constants.W_OK)) throw configError(key, `file ${file} is not writable`)
  return file
}

/** What option validation knows about the config it is part of (plugins get it too). */
export interface OptionsContext {
  /** Folder of the config file (the working directory without one): relative paths resolve against it. */
  readonly configDir: string
  /** The top-level `redis` is set (options that need shared state can say so at check time). */
  readonly redis: boolean
}
