// The config's JSON Schema (config/mqtt-guard.schema.json), for editors' YAML completion and
// checks: generated from the zod schemas the proxy itself validates with (the core's fileSchema
// and each built-in plugin's `options`), so it cannot promise what the proxy refuses.
// `node dist/src/cli/schema.js` rewrites the file; a unit test fails when it is stale.

import { readdirSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { z } from 'zod'
import { fileSchema } from '../config/config.js'
import type { PluginDefinition } from '../plugin/api.js'

type JsonSchema = Record<string, unknown> & { properties?: Record<string, JsonSchema>, required?: string[] }

export const SCHEMA_FILE = fileURLToPath(new URL('../../../config/mqtt-guard.schema.json', import.meta.url))
const BUILTIN_ROOT = new URL('../../plugins/', import.meta.url)

/** Every folder under plugins/ with a compiled index.js, by name. */
export async function builtinDefinitions (): Promise<PluginDefinition[]> {
  const names = readdirSync(BUILTIN_ROOT, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort()
  const loaded = await Promise.all(names.map(async (name) => (await import(new URL(`${name}/index.js`, BUILTIN_ROOT).href) as { default: PluginDefinition }).default))
  return loaded
}

function toJson (schema: z.ZodType): JsonSchema {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io: 'input' }) as JsonSchema
  return rest
}

/** A plugin entry: `name` names the plugin, the other keys are its options. */
function pluginEntry (definition: PluginDefinition): JsonSchema {
  const options = definition.options === undefined ? { type: 'object', additionalProperties: true } : toJson(definition.options)
  return {
    ...options,
    description: `The ${definition.name} plugin: see plugins/${definition.name}/README.md`,
    properties: { name: { const: definition.name }, ...options.properties },
    required: ['name', ...(options.required ?? [])]
  }
}

const MODULE_ENTRY: JsonSchema = {
  type: 'object',
  description: 'A plugin from a file (relative to this config file) or a package; its other keys are its options',
  properties: { module: { type: 'string', minLength: 1 } },
  required: ['module'],
  not: { required: ['name'] },
  additionalProperties: true
}

export async function configJsonSchema (): Promise<JsonSchema> {
  const core = toJson(fileSchema)
  const plugins = (await builtinDefinitions()).map(pluginEntry)
  const properties = { ...core.properties, plugins: { type: 'array', description: 'Run in this order for every packet', items: { anyOf: [...plugins, MODULE_ENTRY] } } }
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'mqtt-guard configuration',
    description: 'Generated from the zod schemas in src/config/config.ts and plugins/*/options.ts by `node dist/src/cli/schema.js`; do not edit.',
    ...core,
    properties
  }
}

/** The file's text: stable key order, two-space indent, a final newline. */
export async function configJsonSchemaText (): Promise<string> {
  return `${JSON.stringify(await configJsonSchema(), null, 2)}\n`
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await writeFile(SCHEMA_FILE, await configJsonSchemaText())
  process.stdout.write(`wrote ${SCHEMA_FILE}\n`)
}
