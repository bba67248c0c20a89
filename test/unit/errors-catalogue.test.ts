// The error catalogue tests itself (as fastify's does): every GUARD_ERR_* code is documented in
// docs/troubleshooting.md "Error codes and how connections end" with the MQTT answers the
// catalogue gives it, every code the documentation names exists, and every code is raised
// somewhere in src/ or plugins/, unless it is marked `reserved` for a later issue (then it must
// not be raised yet). The non-error ends of a connection are documented in the same section.

import { readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { ERRORS, PEER_ENDS, type ErrorCode } from '../../src/errors.js'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const CODES = Object.keys(ERRORS) as ErrorCode[]

function files (dir: string, ext: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name)
    if (name === 'node_modules') return []
    if (statSync(full).isDirectory()) return files(full, ext)
    return name.endsWith(ext) ? [full] : []
  })
}

const troubleshooting = readFileSync(path.join(ROOT, 'docs/troubleshooting.md'), 'utf8')
const section = (/^## Error codes and how connections end\n([\s\S]*?)(?=^## )/m.exec(troubleshooting)?.[1]) ?? ''

/** The table's rows: code → its MQTT 5 and 3.1.1 columns. */
const rows = new Map([...section.matchAll(/^\| `(GUARD_ERR_[A-Z_]+)` \| ([^|]+) \| ([^|]+) \|/gm)]
  .map((m) => [m[1] as string, { reason: (m[2] as string).trim(), connack: (m[3] as string).trim() }]))

const hex = (n: number | undefined): string => n === undefined ? '–' : `0x${n.toString(16).toUpperCase().padStart(2, '0')}`

t.test('every code is in the table, with the catalogue\'s MQTT answers', async (t) => {
  t.ok(section.length > 0, 'docs/troubleshooting.md has the section')
  for (const code of CODES) {
    const row = rows.get(code)
    if (row === undefined) { t.fail(`${code} is not documented`); continue }
    const { reason, connack } = ERRORS[code]
    t.same(row, { reason: hex(reason), connack: connack === undefined ? '–' : String(connack) }, code)
  }
})

t.test('every documented code exists', async (t) => {
  const docs = [path.join(ROOT, 'README.md'), ...files(path.join(ROOT, 'docs'), '.md'), ...files(path.join(ROOT, 'plugins'), '.md'), ...files(path.join(ROOT, 'src'), '.md')]
  for (const file of docs) {
    for (const m of readFileSync(file, 'utf8').matchAll(/GUARD_ERR_[A-Z][A-Z_]*[A-Z]/g)) {
      t.ok(m[0] in ERRORS, `${m[0]} in ${path.relative(ROOT, file)} is a code of src/errors.ts`)
    }
  }
})

t.test('every code is raised somewhere, or marked reserved and not raised yet', async (t) => {
  const sources = [...files(path.join(ROOT, 'src'), '.ts'), ...files(path.join(ROOT, 'plugins'), '.ts')]
    .filter((f) => path.relative(ROOT, f) !== path.join('src', 'errors.ts'))
    .map((f) => readFileSync(f, 'utf8'))
  for (const code of CODES) {
    const used = sources.some((text) => text.includes(`'${code}'`))
    const entry = ERRORS[code] as { reserved?: string }
    if (entry.reserved === undefined) t.ok(used, `${code} is used in src/ or plugins/`)
    else t.notOk(used, `${code} is reserved (${entry.reserved}): drop the marker once it is raised`)
  }
})

t.test('every way a connection ends without an error is documented', async (t) => {
  for (const end of PEER_ENDS) t.match(section, new RegExp(`^\\| \`${end}\` \\|`, 'm'), end)
})
