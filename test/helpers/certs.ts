// A throwaway PKI for TLS tests, made with the openssl CLI (3.0): one CA, then server and
// client certificates signed by it, all P-256 EC keys in one temp dir.
//
// Every certificate is signed with `openssl ca` rather than `openssl x509 -req`, because
// only `ca` takes explicit -startdate/-enddate in 3.0, and that is how an already expired
// certificate is made without faking the clock.

import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const OPENSSL = process.env['OPENSSL_BIN'] ?? '/usr/bin/openssl'
const DAY_MS = 24 * 60 * 60 * 1000
const HOUR_MS = 60 * 60 * 1000

export interface CertFiles { cert: string, key: string }

export interface Pki {
  /** Temp dir holding everything (removed by cleanup). */
  dir: string
  /** Path to the CA certificate PEM. */
  ca: string
  /** Path to the CA private key PEM. */
  caKey: string
  /**
   * A server certificate for `names` (DNS names and IP addresses) as SANs, subject CN the first
   * name, signed by the CA, valid `days` from now (default 30). `days` <= 0 makes one that has
   * already expired. `name` is the file stem in `dir` (`<name>.pem`, `<name>.key`).
   */
  server: (names: string[], options?: { days?: number, name?: string }) => Promise<CertFiles>
  /** A client certificate with subject CN `commonName` and SAN entries given verbatim (`email:...`, `DNS:...`). */
  client: (commonName: string, options?: { days?: number, san?: string[] }) => Promise<CertFiles>
  /** Removes `dir`; safe to call more than once. */
  cleanup: () => Promise<void>
}

// `openssl ca` needs a config for its database and policy; cwd is the PKI dir, so every
// path is relative and nothing from os.tmpdir() is ever parsed as config syntax.
const CONFIG = `[ ca ]
default_ca = test_ca

[ test_ca ]
database = ./index.txt
new_certs_dir = ./issued
rand_serial = yes
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no

[ policy_any ]
commonName = supplied

[ req ]
distinguished_name = req_dn
string_mask = utf8only

[ req_dn ]

[ v3_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
`

/** Runs openssl in `cwd`; a failure becomes an Error carrying openssl's stderr. */
async function openssl (cwd: string, args: string[]): Promise<void> {
  try {
    await promisify(execFile)(OPENSSL, args, { cwd })
  } catch (err) {
    const stderr = (err as { stderr?: unknown }).stderr
    const text = typeof stderr === 'string' && stderr.trim() !== '' ? stderr.trim() : String(err)
    throw new Error(`openssl ${args[0] ?? ''} failed: ${text}`, { cause: err })
  }
}

async function newKey (cwd: string, file: string): Promise<void> {
  await openssl(cwd, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file])
}

/** `/CN=<cn>` with the characters -subj treats as syntax escaped. */
function subject (commonName: string): string {
  return `/CN=${commonName.replace(/[\\/+=]/g, (c) => `\\${c}`)}`
}

/** Time in the GeneralizedTime form -startdate/-enddate take: YYYYMMDDHHMMSSZ. */
function asn1Time (ms: number): string {
  return new Date(ms).toISOString().replace(/[-:T]/g, '').replace(/\.\d{3}/, '')
}

/**
 * notAfter is `days` from now; a positive validity starts an hour ago (clock skew), an expired
 * one spans the 30 days before its end. 0 ends a minute ago so it is expired already.
 */
function validity (days: number): { start: string, end: string } {
  const now = Date.now()
  const end = days === 0 ? now - 60_000 : now + days * DAY_MS
  const start = days > 0 ? now - HOUR_MS : end - 30 * DAY_MS
  return { start: asn1Time(start), end: asn1Time(end) }
}

function sanEntry (name: string): string {
  return `${isIP(name) === 0 ? 'DNS' : 'IP'}:${name}`
}

function checkSan (entries: string[]): void {
  for (const entry of entries) {
    // a comma would split the entry, a newline would start a new config line
    if (/[,\r\n]/.test(entry)) throw new Error(`SAN entry ${JSON.stringify(entry)} holds a comma or newline`)
  }
}

/** Makes a CA in a fresh temp dir; with `t`, cleanup runs in t.teardown. */
export async function makePki (t?: { teardown: (fn: () => unknown) => void }): Promise<Pki> {
  const dir = await mkdtemp(join(tmpdir(), 'mqtt-guard-pki-'))
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true })
  t?.teardown(cleanup)

  await writeFile(join(dir, 'openssl.cnf'), CONFIG)
  await writeFile(join(dir, 'index.txt'), '')
  await mkdir(join(dir, 'issued'))
  await newKey(dir, 'ca.key')
  await openssl(dir, [
    'req', '-config', 'openssl.cnf', '-new', '-x509', '-key', 'ca.key', '-subj', '/CN=mqtt-guard test CA',
    '-days', '3650', '-extensions', 'v3_ca', '-out', 'ca.pem'
  ])

  const used = new Set<string>(['ca', 'openssl'])
  let count = 0
  // `openssl ca` rewrites index.txt on every signing, so signings run one at a time
  let queue: Promise<unknown> = Promise.resolve()

  async function issue (stem: string, commonName: string, extensions: string[], days: number): Promise<CertFiles> {
    if (!/^[\w.-]+$/.test(stem)) throw new Error(`certificate name ${JSON.stringify(stem)} is not a plain file name`)
    if (used.has(stem)) throw new Error(`certificate name ${stem} already used in ${dir}`)
    used.add(stem)
    const { start, end } = validity(days)
    await newKey(dir, `${stem}.key`)
    await openssl(dir, ['req', '-config', 'openssl.cnf', '-new', '-utf8', '-key', `${stem}.key`, '-subj', subject(commonName), '-out', `${stem}.csr`])
    await writeFile(join(dir, `${stem}.ext`), `[ ext ]\n${extensions.join('\n')}\n`)
    await openssl(dir, [
      'ca', '-config', 'openssl.cnf', '-batch', '-notext', '-utf8', '-in', `${stem}.csr`, '-cert', 'ca.pem', '-keyfile', 'ca.key',
      '-startdate', start, '-enddate', end, '-extfile', `${stem}.ext`, '-extensions', 'ext', '-out', `${stem}.pem`
    ])
    return { cert: join(dir, `${stem}.pem`), key: join(dir, `${stem}.key`) }
  }

  function serialized (stem: string, commonName: string, extensions: string[], days: number): Promise<CertFiles> {
    const result = queue.then(() => issue(stem, commonName, extensions, days))
    queue = result.catch(() => undefined)
    return result
  }

  const leaf = ['basicConstraints = critical,CA:FALSE', 'keyUsage = critical,digitalSignature,keyEncipherment']

  return {
    dir,
    ca: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca.key'),
    async server (names, options = {}) {
      const first = names[0]
      if (first === undefined) throw new Error('server certificate needs at least one name')
      checkSan(names)
      const stem = options.name ?? `server-${++count}`
      const ext = [...leaf, 'extendedKeyUsage = serverAuth', `subjectAltName = ${names.map(sanEntry).join(',')}`]
      return await serialized(stem, first, ext, options.days ?? 30)
    },
    async client (commonName, options = {}) {
      const san = options.san ?? []
      checkSan(san)
      const ext = [...leaf, 'extendedKeyUsage = clientAuth']
      if (san.length > 0) ext.push(`subjectAltName = ${san.join(',')}`)
      return await serialized(`client-${++count}`, commonName, ext, options.days ?? 30)
    },
    cleanup
  }
}
