// The README's screenshots of the console (docs/images/console-*.png), kept current: a manifest
// holds a hash of the console's sources at the time they were taken, so the console test fails
// when a page changed and nobody took them again. UPDATE_SCREENSHOTS=1 writes them.

import { createHash } from 'node:crypto'
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const IMAGES = path.join(ROOT, 'docs/images')
const MANIFEST = path.join(IMAGES, 'console-screenshots.json')
export const UPDATING = process.env.UPDATE_SCREENSHOTS === '1'
export const HOW_TO_UPDATE = 'run `npm run screenshots` (or `npm run build && UPDATE_SCREENSHOTS=1 npx tap dist/test/integration/console.test.js`) and commit docs/images'

/** What the pages are made of: the console's own files and the server side that feeds them. */
export function consoleSources (): string[] {
  const pages = readdirSync(path.join(ROOT, 'console')).sort().map((f) => `console/${f}`)
  return [...pages, 'src/views.ts', 'src/admin/console.ts', 'src/observe/series.ts']
}

export function sourcesHash (): string {
  const hash = createHash('sha256')
  for (const file of consoleSources()) {
    // Line endings as checked out must not count as a change.
    hash.update(`${file}\n`).update(readFileSync(path.join(ROOT, file), 'utf8').replace(/\r\n/g, '\n'))
  }
  return hash.digest('hex')
}

export interface Manifest { sources: string, files: string[], inputs: string[] }

export function readManifest (): Manifest | undefined {
  try {
    return JSON.parse(readFileSync(MANIFEST, 'utf8')) as Manifest
  } catch {
    return undefined
  }
}

export function writeManifest (files: string[]): void {
  const manifest: Manifest = { sources: sourcesHash(), files: [...files].sort(), inputs: consoleSources() }
  writeFileSync(MANIFEST, `${JSON.stringify(manifest, null, 2)}\n`)
}
