// What one source of the auth chain decides about a CONNECT (certificate, JWT, password file,
// Redis users, HTTP): who the client is, or the refusal with its code and cause. index.ts runs
// the chain; jwt.ts and http-auth.ts answer in the same shape.

import type { Identity } from '../../src/plugin/api.js'
import type { ErrorCode } from '../../src/errors.js'

/** Who a connection logged in as: set as `conn.identity`, where acl reads the groups. */
export interface AuthInfo extends Identity {
  readonly source: 'file' | 'redis' | 'anonymous' | 'certificate' | 'jwt' | 'http'
}

/** `count`: the refusal counts towards brute-force blocks; `detail`: for the log only. */
export type Check =
  | { ok: true, info: AuthInfo }
  | { ok: false, code: ErrorCode, reason: string, count: boolean, detail?: string | undefined }
