// A file that a plugin keeps in memory and re-reads when it changes (or on SIGHUP): the new
// content replaces the old only if it parses; otherwise the old stays in force and the error
// is logged. Editors that save by rename are handled by watching the folder.

import { readFileSync, watch, type FSWatcher } from 'node:fs'
import path from 'node:path'
import type { Logger } from 'pino'

export class WatchedFile<T> {
  private current: T
  private watcher: FSWatcher | null = null
  private timer: NodeJS.Timeout | null = null

  /** Reads and parses now; throws (with the parser's error) if the first read fails. */
  constructor (
    readonly file: string,
    private readonly parse: (text: string, file: string) => T,
    private readonly log: Logger,
    private readonly onChange?: (value: T) => void
  ) {
    this.current = parse(readFileSync(file, 'utf8'), file)
  }

  get value (): T {
    return this.current
  }

  /** Re-reads now. Returns true when the new content is in force. */
  reload (): boolean {
    let next: T
    try {
      next = this.parse(readFileSync(this.file, 'utf8'), this.file)
    } catch (err) {
      this.log.error({ file: this.file, err: (err as Error).message }, 'file not reloaded: previous content stays in force')
      return false
    }
    this.current = next
    this.log.info({ file: this.file }, 'file reloaded')
    this.onChange?.(next)
    return true
  }

  /** Re-reads on change, debounced (an editor's save is several events). */
  watch (debounceMs = 100): void {
    if (this.watcher !== null) return
    const name = path.basename(this.file)
    this.watcher = watch(path.dirname(this.file), (_event, changed) => {
      if (changed !== null && changed !== name) return
      if (this.timer !== null) clearTimeout(this.timer)
      this.timer = setTimeout(() => { this.timer = null; this.reload() }, debounceMs)
    })
    this.watcher.on('error', (err) => { this.log.warn({ file: this.file, err: err.message }, 'cannot watch file; reload with SIGHUP') })
  }

  close (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.watcher?.close()
    this.watcher = null
  }
}
