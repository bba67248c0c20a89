// The plan of the house, checked: src/ is in role folders, each with a README saying what it
// owns; imports between files and between folders have no cycle; nothing imports the command
// line, and src/ imports no plugin; a handful of files at most stay directly in src/. Reads the
// TypeScript sources as text.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const SRC = path.join(ROOT, 'src')

function sources (dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name)
    if (statSync(full).isDirectory()) return sources(full)
    return name.endsWith('.ts') ? [full] : []
  })
}

const SPECIFIER = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*'(\.{1,2}\/[^']+)'/g

/** Every relative import of a file, as repository paths of .ts files. */
function importsOf (file: string): string[] {
  const text = readFileSync(file, 'utf8')
  return [...text.matchAll(SPECIFIER)].map((m) => path.relative(ROOT, path.resolve(path.dirname(file), (m[1] as string).replace(/\.js$/, '.ts'))))
}

/** One cycle of a directed graph, as its nodes, or undefined when it has none. */
export function findCycle (edges: Map<string, Set<string>>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>()
  const stack: string[] = []
  const visit = (node: string): string[] | undefined => {
    if (state.get(node) === 'done') return undefined
    if (state.get(node) === 'open') return [...stack.slice(stack.indexOf(node)), node]
    state.set(node, 'open')
    stack.push(node)
    for (const next of edges.get(node) ?? []) {
      const cycle = visit(next)
      if (cycle !== undefined) return cycle
    }
    stack.pop()
    state.set(node, 'done')
    return undefined
  }
  for (const node of edges.keys()) {
    const cycle = visit(node)
    if (cycle !== undefined) return cycle
  }
  return undefined
}

const add = (edges: Map<string, Set<string>>, from: string, to: string): void => {
  let set = edges.get(from)
  if (set === undefined) edges.set(from, set = new Set())
  set.add(to)
}

/** src/wire/codec.ts → 'wire'; src/server.ts → 'server.ts'. */
const folderOf = (file: string): string => {
  const parts = path.relative('src', file).split(path.sep)
  return parts.length > 1 ? parts[0] as string : parts[0] as string
}

const files = [...sources(SRC), ...sources(path.join(ROOT, 'plugins'))].map((f) => path.relative(ROOT, f))
const fileEdges = new Map<string, Set<string>>()
const folderEdges = new Map<string, Set<string>>()
for (const file of files) {
  for (const target of importsOf(path.join(ROOT, file))) {
    add(fileEdges, file, target)
    if (file.startsWith('src/') && target.startsWith('src/') && folderOf(file) !== folderOf(target)) add(folderEdges, folderOf(file), folderOf(target))
  }
}

t.test('the cycle finder finds a cycle and only a cycle', async (t) => {
  t.same(findCycle(new Map([['a', new Set(['b'])], ['b', new Set(['c'])], ['c', new Set(['a'])]])), ['a', 'b', 'c', 'a'])
  t.equal(findCycle(new Map([['a', new Set(['b', 'c'])], ['b', new Set(['c'])]])), undefined)
})

t.test('no import cycle between files of src/ and plugins/', async (t) => {
  t.equal(findCycle(fileEdges)?.join(' → '), undefined)
})

t.test('no import cycle between the folders of src/', async (t) => {
  t.equal(findCycle(folderEdges)?.join(' → '), undefined)
})

t.test('nothing outside src/cli imports it', async (t) => {
  const offenders = files.filter((f) => !f.startsWith('src/cli/') && importsOf(path.join(ROOT, f)).some((i) => i.startsWith('src/cli/')))
  t.same(offenders, [])
})

t.test('nothing in src/ imports plugins/: plugins reach the core through src/plugin/api.ts, never the other way', async (t) => {
  const offenders = files.filter((f) => f.startsWith('src/') && importsOf(path.join(ROOT, f)).some((i) => i.startsWith('plugins/')))
  t.same(offenders, [])
})

t.test('src/ is in role folders, each with a README that opens with its job', async (t) => {
  const loose = readdirSync(SRC).filter((n) => n.endsWith('.ts'))
  t.ok(loose.length <= 4, `at most a handful of files directly in src/: ${loose.join(', ')}`)
  for (const name of readdirSync(SRC).filter((n) => statSync(path.join(SRC, n)).isDirectory())) {
    const readme = path.join(SRC, name, 'README.md')
    t.ok(existsSync(readme), `src/${name}/README.md`)
    if (existsSync(readme)) t.match(readFileSync(readme, 'utf8'), new RegExp(`^# src/${name}: \\S`), `src/${name}/README.md says what the folder is for`)
  }
})

t.test('every source file opens with a comment saying what it owns', async (t) => {
  const silent = files.filter((f) => !readFileSync(path.join(ROOT, f), 'utf8').startsWith('//'))
  t.same(silent, [])
})
