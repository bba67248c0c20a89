// The aedes-hooks plugin's options, as a zod schema (also the JSON Schema editors complete
// from), then a module path resolved against the config file's folder and checked (a package
// name is resolved from that folder when the plugin starts).

import { z } from 'zod'
import { expected, parseWith, strictOptions, text } from '../../src/config/zod.js'
import { inputFile, isFilePath } from '../../src/config/paths.js'
import type { OptionsContext } from '../../src/plugin/api.js'

export interface AedesHooksOptions {
  /** Path (absolute once validated) or package name of the module with the functions. */
  hooks: string
  /** How long a function may take to answer before the packet is refused (GUARD_ERR_PLUGIN). */
  timeoutMs: number
}

export const aedesHooksOptions: z.ZodType<AedesHooksOptions> = strictOptions({
  hooks: text('the path or package name of a module exporting aedes functions'),
  timeoutMs: z.int(expected('a positive integer (milliseconds)')).min(1).default(5000)
})

/** What the schema cannot see: a module path on disk. */
export function checkAedesHooksOptions (o: AedesHooksOptions, ctx: OptionsContext): AedesHooksOptions {
  return isFilePath(o.hooks) ? { ...o, hooks: inputFile(ctx.configDir, o.hooks, 'hooks') } : o
}

export function validateOptions (raw: unknown, ctx: OptionsContext = { configDir: process.cwd(), redis: false }): AedesHooksOptions {
  return checkAedesHooksOptions(parseWith(aedesHooksOptions, raw), ctx)
}
