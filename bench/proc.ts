// Readings from /proc for the processes under test, and a description of the machine.

import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import os from 'node:os'

/** utime + stime of a process, in clock ticks (see `getconf CLK_TCK`). */
export function cpuTicks (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  return Number(fields[11]) + Number(fields[12])
}

/** Children of every process, by parent PID: one pass over /proc (the ones ending meanwhile are left out). */
function childrenByParent (): Map<number, number[]> {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let stat: string
    try { stat = readFileSync(`/proc/${entry}/stat`, 'utf8') } catch { continue }
    // Field 4, the parent's PID, is the second field after the command name.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
    const list = children.get(ppid)
    if (list === undefined) children.set(ppid, [Number(entry)])
    else list.push(Number(entry))
  }
  return children
}

/** The PID and its descendants (`workers: N`: the primary and the workers node:cluster forked). */
export function processTree (pid: number, children = childrenByParent()): number[] {
  const out: number[] = []
  const todo = [pid]
  while (todo.length > 0) {
    const next = todo.pop() as number
    out.push(next)
    todo.push(...(children.get(next) ?? []))
  }
  return out
}

/** The watched process itself must be there (it throws, as before); a descendant may be gone. */
const sumOver = ([root, ...rest]: number[], read: (pid: number) => number): number => rest.reduce((sum, p) => {
  try { return sum + read(p) } catch { return sum }
}, read(root as number))

/**
 * Per role, utime + stime (clock ticks) of the watched process and all its descendants, so a
 * target with worker processes is measured whole. One pass over /proc for all roles.
 */
export function treeCpuTicks (watch: Record<string, number>): Record<string, number> {
  const children = childrenByParent()
  return Object.fromEntries(Object.entries(watch).map(([role, pid]) => [role, sumOver(processTree(pid, children), cpuTicks)]))
}

/** Per role, VmRSS (KiB) of the watched process and its descendants (shared pages count in each). */
export function treeRssKiB (watch: Record<string, number>): Record<string, number> {
  const children = childrenByParent()
  return Object.fromEntries(Object.entries(watch).map(([role, pid]) => [role, sumOver(processTree(pid, children), rssKiB)]))
}

/** Resident set size of a process in KiB (VmRSS). */
export function rssKiB (pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status)
  if (match === null) throw new Error(`no VmRSS for pid ${pid}`)
  return Number(match[1])
}

export function clockTicksPerSecond (): number {
  try {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    return Number.isFinite(value) && value > 0 ? value : 100
  } catch {
    return 100
  }
}

function firstLine (command: string, args: string[]): string {
  try {
    // `mosquitto -h` exits with status 3 after printing its version: take the output anyway.
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0] ?? ''
  } catch (err) {
    const out = (err as { stdout?: string }).stdout ?? ''
    return out.split('\n')[0] ?? ''
  }
}

export interface MachineInfo {
  cpuModel: string
  cores: number
  memoryGiB: number
  kernel: string
  node: string
  mosquitto: string
  aedes: string
  fdLimit: string
  commit: string
  /** 1/5/15-minute load averages when the run started: other work on a shared machine. */
  loadAverage: number[]
}

export function machineInfo (mosquittoBin: string, root: string): MachineInfo {
  const cpus = os.cpus()
  let aedes = 'unknown'
  try {
    aedes = (JSON.parse(readFileSync(`${root}/node_modules/aedes/package.json`, 'utf8')) as { version: string }).version
  } catch { /* not installed */ }
  const commit = firstLine('git', ['-C', root, 'rev-parse', '--short', 'HEAD'])
  const dirty = firstLine('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no']) !== ''
  return {
    cpuModel: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    mosquitto: firstLine(mosquittoBin, ['-h']).replace(/^mosquitto version /, ''),
    aedes,
    fdLimit: firstLine('bash', ['-c', 'echo "$(ulimit -Sn) soft / $(ulimit -Hn) hard"']),
    commit: commit === '' ? 'unknown' : `${commit}${dirty ? ' (with uncommitted changes)' : ''}`,
    loadAverage: os.loadavg().map((v) => Math.round(v * 100) / 100)
  }
}
