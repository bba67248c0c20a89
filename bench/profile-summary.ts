// Summarises a V8 .cpuprofile (from `node --cpu-prof`): the functions with the most self time,
// and self time by file. Usage: node dist/bench/profile-summary.js FILE.cpuprofile [TOP]

import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

interface CallFrame { functionName: string, url: string, lineNumber: number, columnNumber: number }
interface ProfileNode { id: number, callFrame: CallFrame }
interface CpuProfile { nodes: ProfileNode[], samples: number[], timeDeltas: number[], startTime: number, endTime: number }

export interface SelfTime { name: string, where: string, ms: number, share: number }

export interface Summary {
  /** Wall time summarised: the measurement window, or the whole profile. */
  totalMs: number
  /** True when only the measurement window was summarised. */
  windowed: boolean
  /** Time not spent idle (the process was on a CPU, or waiting in native code). */
  busyMs: number
  idleMs: number
  functions: SelfTime[]
  files: SelfTime[]
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** node:internal/..., dist/src/x.js, node_modules/pkg/x.js (also from a build snapshot). */
function shortUrl (url: string): string {
  if (url === '') return '(native)'
  const path = url.startsWith('file://') ? fileURLToPath(url) : url
  const modules = path.lastIndexOf('/node_modules/')
  if (modules >= 0) return path.slice(modules + 1)
  if (path.startsWith(ROOT)) return path.slice(ROOT.length)
  const dist = path.indexOf('/dist/')
  return dist >= 0 ? path.slice(dist + 1) : path
}

/**
 * Self time per sample: the time until the next sample (as Chrome DevTools counts it); the
 * last sample gets the mean interval.
 */
export function summarise (profile: CpuProfile, top = 15, windowUs?: [number, number]): Summary {
  const byId = new Map<number, ProfileNode>()
  for (const node of profile.nodes) byId.set(node.id, node)
  const fnTime = new Map<string, { name: string, where: string, us: number }>()
  const fileTime = new Map<string, number>()
  const n = profile.samples.length
  const mean = n > 0 ? (profile.endTime - profile.startTime) / n : 0
  // Only samples inside the window count, when the window lies within the profile (both are
  // on the monotonic clock); otherwise the whole profile does.
  const window = windowUs !== undefined && windowUs[0] >= profile.startTime && windowUs[1] <= profile.endTime ? windowUs : undefined
  let idle = 0
  let busy = 0
  let at = profile.startTime
  for (let i = 0; i < n; i++) {
    at += profile.timeDeltas[i] as number
    if (window !== undefined && (at < window[0] || at > window[1])) continue
    const node = byId.get(profile.samples[i] as number)
    if (node === undefined) continue
    const us = i + 1 < n ? (profile.timeDeltas[i + 1] as number) : mean
    const { functionName, url, lineNumber } = node.callFrame
    if (functionName === '(idle)') { idle += us; continue }
    busy += us
    const file = shortUrl(url)
    const where = url === '' ? file : `${file}:${lineNumber + 1}`
    const name = functionName === '' ? '(anonymous)' : functionName
    const key = `${name} ${where}`
    const entry = fnTime.get(key) ?? { name, where, us: 0 }
    entry.us += us
    fnTime.set(key, entry)
    const fileKey = url === '' ? name.startsWith('(') ? name : '(native)' : file
    fileTime.set(fileKey, (fileTime.get(fileKey) ?? 0) + us)
  }
  const share = (us: number): number => busy > 0 ? us / busy : 0
  const functions = [...fnTime.values()].sort((a, b) => b.us - a.us).slice(0, top)
    .map((f) => ({ name: f.name, where: f.where, ms: f.us / 1000, share: share(f.us) }))
  const files = [...fileTime.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)
    .map(([file, us]) => ({ name: file, where: '', ms: us / 1000, share: share(us) }))
  const totalMs = (window === undefined ? profile.endTime - profile.startTime : window[1] - window[0]) / 1000
  return { totalMs, windowed: window !== undefined, busyMs: busy / 1000, idleMs: idle / 1000, functions, files }
}

export function summariseFile (file: string, top = 15, windowUs?: [number, number]): Summary {
  return summarise(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, top, windowUs)
}

export function renderSummary (summary: Summary, title: string): string {
  const lines = [
    `### ${title}`,
    '',
    `${summary.windowed ? 'Measurement window' : 'Whole profile'}: ${(summary.totalMs / 1000).toFixed(1)} s; busy ${(summary.busyMs / 1000).toFixed(1)} s, idle ${(summary.idleMs / 1000).toFixed(1)} s. Shares are of busy time.`,
    '',
    '| # | self ms | share | function | where |',
    '| ---: | ---: | ---: | --- | --- |',
    ...summary.functions.map((f, i) => `| ${i + 1} | ${f.ms.toFixed(0)} | ${(f.share * 100).toFixed(1)} % | \`${f.name}\` | ${f.where} |`),
    '',
    '| self ms | share | file |',
    '| ---: | ---: | --- |',
    ...summary.files.map((f) => `| ${f.ms.toFixed(0)} | ${(f.share * 100).toFixed(1)} % | ${f.name} |`)
  ]
  return lines.join('\n') + '\n'
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [file, top] = process.argv.slice(2)
  if (file === undefined) {
    process.stderr.write('usage: profile-summary.js FILE.cpuprofile [TOP]\n')
    process.exit(2)
  }
  process.stdout.write(renderSummary(summariseFile(file, top === undefined ? 15 : Number(top)), file))
}
