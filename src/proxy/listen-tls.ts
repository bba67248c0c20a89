// A TLS listener's certificate: read with its key into a SecureContext, re-read when either
// file changes (or on SIGHUP) without dropping connections, and watched for expiry: a warning
// at 30 and at 7 days, and a gauge of seconds left.

import { readFileSync } from 'node:fs'
import tls from 'node:tls'
import { X509Certificate } from 'node:crypto'
import type { Logger } from 'pino'
import type { ListenSpec } from '../config/listen.js'
import type { GuardMetrics } from '../observe/metrics.js'
import { WatchedFile } from '../plugin/watched-file.js'

interface Loaded { options: tls.SecureContextOptions, subject: string, validTo: Date }

const DAY_MS = 86_400_000

export class ListenerCertificate {
  private readonly cert: WatchedFile<Loaded>
  private readonly key: WatchedFile<string>
  private readonly timer: NodeJS.Timeout
  private shownSubject: string | undefined

  /** `onChange`: the new pair, for the TLS server's setSecureContext(). */
  constructor (private readonly spec: ListenSpec, private readonly log: Logger, private readonly metrics: GuardMetrics, onChange: (options: tls.SecureContextOptions) => void) {
    const files = spec.tls as NonNullable<ListenSpec['tls']>
    const load = (): Loaded => {
      const certPem = readFileSync(files.cert)
      const x509 = new X509Certificate(certPem)
      const options: tls.SecureContextOptions = {
        cert: certPem, key: readFileSync(files.key), ca: files.ca === undefined ? undefined : readFileSync(files.ca), minVersion: 'TLSv1.2'
      }
      // Throws when the key does not match the certificate: the old pair stays in force.
      tls.createSecureContext(options)
      return { options, subject: x509.subject.replace(/\n/g, ', '), validTo: new Date(x509.validTo) }
    }
    this.cert = new WatchedFile(files.cert, load, log, (loaded) => { onChange(loaded.options); this.checkExpiry() })
    this.key = new WatchedFile(files.key, (text) => text, log, () => { this.cert.reload() })
    this.cert.watch()
    this.key.watch()
    this.checkExpiry()
    this.timer = setInterval(() => { this.checkExpiry() }, DAY_MS / 4)
    this.timer.unref()
  }

  get options (): tls.SecureContextOptions {
    return this.cert.value.options
  }

  reload (): void {
    this.cert.reload()
  }

  private checkExpiry (): void {
    const { subject, validTo } = this.cert.value
    const left = validTo.getTime() - Date.now()
    if (this.shownSubject !== undefined && this.shownSubject !== subject) this.metrics.certExpiry.remove({ listener: this.spec.url, subject: this.shownSubject })
    this.shownSubject = subject
    this.metrics.certExpiry.set({ listener: this.spec.url, subject }, Math.round(left / 1000))
    const days = Math.floor(left / DAY_MS)
    const fields = { listener: this.spec.url, subject, validTo: validTo.toISOString(), days }
    if (left <= 0) this.log.error(fields, 'TLS certificate expired')
    else if (days < 7) this.log.warn(fields, 'TLS certificate expires within 7 days')
    else if (days < 30) this.log.warn(fields, 'TLS certificate expires within 30 days')
  }

  close (): void {
    clearInterval(this.timer)
    // A listener a reload removed (or replaced with another certificate): its series goes too,
    // or expiry alerts and the console would go on showing a certificate nobody serves.
    if (this.shownSubject !== undefined) this.metrics.certExpiry.remove({ listener: this.spec.url, subject: this.shownSubject })
    this.shownSubject = undefined
    this.cert.close()
    this.key.close()
  }
}
