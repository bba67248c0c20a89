// The contract between the proxy and its plugins, and the one module plugin authors import:
// package.json publishes it as `mqtt-guard/plugin` (with its .d.ts). A plugin module's default
// export is a PluginDefinition; the host validates its options, calls create() once, and runs
// its hooks for every packet of the types it names, in config order.

import type { Packet, PacketCmd } from 'mqtt-packet'
import type { Logger } from 'pino'
import type { Redis, Cluster } from 'ioredis'
import type { Registry } from 'prom-client'
import type { z } from 'zod'
import type { CloseReason, ErrorCode } from '../errors.js'
import type { ProtocolVersion } from '../wire/codec.js'
import type { Finding, Overview } from '../views.js'
import type { OptionsContext } from '../config/paths.js'

export type { Finding } from '../views.js'
// The argument convention of every command, for a plugin's own (PluginDefinition.commands).
export { EXIT, commandArgs, parseCommand, usageError, type Command } from './args.js'

/** `in`: client → broker. `out`: broker → client. */
export type Direction = 'in' | 'out'

export type PacketOf<C extends PacketCmd> = Extract<Packet, { cmd: C }>

/**
 * Who a connection is, as the plugin that admitted it says (auth: from the password file, Redis
 * users, a certificate). Set in a `connect` hook; later hooks read it (acl adds `groups` to the
 * groups of its own `groups` map).
 */
export interface Identity {
  readonly username: string | undefined
  readonly groups: readonly string[]
  /** Where the plugin found the user, e.g. `file`, `redis`, `certificate`, `jwt`, `http`, `anonymous`. */
  readonly source: string
  /** An HTTP hook's `is_superuser: true`: the acl plugin allows such a client everything. */
  readonly superuser?: boolean | undefined
  /**
   * Rules the credential itself carries (auth: a JWT's `aclClaim`). The acl plugin asks them
   * before its own rules; absent, nothing changes. Topics hold `%u` / `%c` like acl's rules.
   */
  readonly acl?: TokenAcl | undefined
}

/** Per-credential ACL rules, in order: the first that matches decides. */
export interface TokenAcl {
  readonly rules: readonly TokenAclRule[]
  /** No rule matched: `next` lets the acl plugin's own rules decide, `deny` refuses (EMQX's old `{pub, sub, all}` form). */
  readonly noMatch: 'next' | 'deny'
}

export interface TokenAclRule {
  readonly permission: 'allow' | 'deny'
  /** `subscribe` here also covers receiving what the subscription delivers. */
  readonly actions: ReadonlyArray<'publish' | 'subscribe' | 'receive'>
  /** `exact`: EMQX's `eq FILTER`, the filter itself, wildcards taken literally. */
  readonly topics: ReadonlyArray<{ readonly filter: string, readonly exact: boolean }>
  readonly qos?: readonly number[] | undefined
  /** A publish's retain flag must equal it. */
  readonly retain?: boolean | undefined
}

/** What a plugin sees of one client connection. */
export interface ConnectionInfo {
  /** Proxy-local connection ID, unique per process: the key in logs and traces. */
  readonly id: string
  readonly address: string
  readonly port: number
  readonly listener: string
  readonly openedAt: number
  /** A client certificate the TLS listener verified (its CA is configured), if the client sent one. */
  readonly certificate?: { commonName: string | undefined, subjectAltName: string | undefined } | undefined
  /** Several brokers (upstream.brokers): the URL of the broker this connection is on now. */
  readonly broker?: string | undefined
  /** Known from CONNECT on (or from CONNACK when the broker assigns it). */
  clientId: string
  username: string | undefined
  protocolVersion: ProtocolVersion
  /** Set by the plugin that authenticated the connection (see Identity); undefined before. */
  identity?: Identity | undefined
  /**
   * This connection's logger: it binds `conn`, `address`, `clientId` and `username`, so a line
   * names them once (give `plugin` and the rest). Its lines count against the connection's
   * log budget (src/log/budget.ts): a line per packet is cut to 20 a minute plus a summary.
   */
  readonly log: Logger
  /** Closes the connection; MQTT 5 clients get DISCONNECT with the error's reason code. */
  close (code: ErrorCode, reason: string): void
}

export type Verdict =
  /** Go on with the next plugin; `packet` replaces the packet (it is then re-encoded). */
  | { action: 'continue', packet?: Packet }
  /** Forward nothing, answer nothing. */
  | { action: 'drop', reason?: string }
  /** Forward nothing; send `packets` back to where the packet came from (e.g. a PUBACK). */
  | { action: 'answer', packets: Packet[], reason?: string }
  /** Refuse: the host turns `code` into the right answer for the packet and protocol version. */
  | { action: 'reject', code: ErrorCode, reason?: string }

export type HookResult = Verdict | undefined | void

/** A hook may return a value or a promise; the host stays synchronous when it returns a value. */
export type Hook<P extends Packet> = (conn: ConnectionInfo, packet: P) => HookResult | Promise<HookResult>

export type PacketHooks = { [C in PacketCmd]?: Hook<PacketOf<C>> }

/** What an observer is told about each packet after the chain decided. */
export interface PacketEvent {
  readonly conn: ConnectionInfo
  readonly direction: Direction
  readonly packet: Packet
  readonly size: number
  readonly verdict: Verdict['action']
  readonly plugin: string | undefined
}

export interface CloseInfo {
  /** Stable reason: an error code, or how a peer ended it (`client-disconnect`, `broker-closed`, …). */
  readonly reason: CloseReason
  readonly detail: string | undefined
  /** Time since the client last sent anything: a keepalive timeout shows here. */
  readonly clientIdleMs: number
}

/** Leg of a connection: `client` is client ↔ proxy, `broker` is proxy ↔ broker. */
export type Leg = 'client' | 'broker'

/** What became of a packet the proxy read. */
export type ReceivedVerdict = 'forwarded' | 'dropped' | 'answered' | 'refused'

/**
 * Sees the bytes of every packet of one connection on both legs (tracing). The proxy asks for
 * a tap once the CONNECT is read (and again when `retap` is called), and calls nothing when
 * no plugin returns one: a connection nobody traces pays one null check per packet.
 */
export interface PacketTap {
  /** A packet the proxy read on `leg`, and what became of it (and which plugin decided). */
  received: (leg: Leg, frame: Buffer, verdict: ReceivedVerdict, plugin: string | undefined, packet: Packet | undefined) => void
  /** A packet the proxy wrote on `leg`: passed on, or `made` by the proxy itself. */
  sent: (leg: Leg, frame: Buffer, made: boolean) => void
}

/** An admin API request a plugin may answer (routes the core does not know). */
export interface AdminRequest { method: string, path: string, query: URLSearchParams, body: unknown }
export interface AdminResponse {
  status: number
  body: unknown
  /**
   * Server-Sent Events instead of a body (a live feed): called once with a sender; returns
   * the function that stops the feed when the client goes away.
   */
  events?: (send: (event: string, data: string) => void) => () => void
}

export interface Plugin {
  readonly name: string
  /** Answers admin API requests under its own paths; undefined: not mine. */
  admin?: (req: AdminRequest) => Promise<AdminResponse | undefined> | AdminResponse | undefined
  /** A tap for this connection's packets, or undefined (the usual case: nothing to trace). */
  tap?: (conn: ConnectionInfo) => PacketTap | undefined
  readonly in?: PacketHooks
  readonly out?: PacketHooks
  /** Sees every packet and the final verdict. Must not throw or block. */
  observe?: (event: PacketEvent) => void
  onClose?: (conn: ConnectionInfo, info: CloseInfo) => void
  /**
   * A client with a will is going without DISCONNECT: may the broker still publish the will?
   * false (the rules changed since CONNECT) makes the proxy end its broker session with a
   * normal DISCONNECT first, so the broker discards the will [MQTT-3.1.2-10]. Synchronous.
   */
  willAtClose?: (conn: ConnectionInfo) => boolean
  /**
   * Re-read what can change at run time (password and ACL files) on SIGHUP. Must be atomic:
   * on any error keep the old state in force, log why, and resolve.
   */
  reload?: () => void | Promise<void>
  /**
   * SIGHUP with a changed entry in the config file: the plugin's new options, validated.
   * Plugins without it keep their options until a restart (the log says so).
   */
  reconfigure?: (options: unknown) => void | Promise<void>
  /** Findings for `mqtt-guard doctor` (admin `GET /diagnostics`): what this plugin saw lately. */
  diagnose?: () => Finding[]
  /** The console overview's figures that this plugin counts (dedupe: duplicates removed). */
  overview?: () => OverviewPart
  close?: () => void | Promise<void>
}

/** The figures of the console's overview (admin `GET /overview`) that plugins, not the core, count. */
export type OverviewPart = Partial<Pick<Overview, 'duplicatesRemoved'>>

/**
 * A command of the plugin's own: `mqtt-guard NAME ARGS…` runs `run(ARGS)`, and
 * `mqtt-guard --help` lists it as `NAME synopsis` and `summary`. Follow the shared convention
 * (parseCommand, usageError, EXIT): `--help` exits 0, a usage error 2, a config error 78.
 */
export interface PluginCommand {
  /** The arguments after the name; a line break continues them on the next line. */
  readonly synopsis: string
  /** What it does, in a line or two (line breaks kept). */
  readonly summary: string
  readonly run: (args: string[]) => Promise<number> | number
}

export interface PluginContext<Options> {
  readonly name: string
  readonly options: Options
  readonly log: Logger
  /** The shared Redis client when `redis` is configured, else undefined (use in-memory state). */
  readonly redis: Redis | Cluster | undefined
  /** Key prefix for this plugin's Redis keys. */
  readonly keyPrefix: string
  /** Unique per proxy process, e.g. for lease owner tokens. */
  readonly instanceId: string
  /** Folder of the config file: path options arrive resolved against it (absolute) after `validate`. */
  readonly configDir: string
  /** The proxy's Prometheus registry: a plugin registers its own metrics (`mqtt_guard_<plugin>_…`). */
  readonly metrics: Registry
  /** Asks every live connection for its taps again (a trace started or stopped). */
  readonly retap: () => void
  /**
   * `workers: N` without Redis: this plugin's state in the primary, shared by every worker (the
   * side its definition's `primary` made). Undefined in one process, or with Redis.
   */
  readonly primary?: PrimaryChannel | undefined
  /** A worker of `workers: N`: its number, from 1 (a file of its own is named with it); undefined in one process. */
  readonly worker?: number | undefined
}

/** A worker's way to the state its plugin keeps in the primary (calls batched over IPC). */
export interface PrimaryChannel {
  /** Runs `method` of the plugin's primary side with JSON arguments; its JSON result. */
  call: (method: string, ...args: unknown[]) => Promise<unknown>
  /** What the primary side tells every worker (its `tell`). */
  on: (event: string, listener: (data: unknown) => void) => () => void
}

/** The state a plugin keeps in the primary for every worker: methods its workers call. */
export type PrimarySide = Record<string, (...args: never[]) => unknown> & {
  /** A worker ended: what its connections held (`owner` prefix `<instanceId>:`) is freed. */
  workerGone?: (instanceId: string) => void
}

/** What option checks may look at besides the options: where paths start, what else is configured. */
export type { OptionsContext }

export interface PluginDefinition<Options = unknown> {
  readonly name: string
  /**
   * The options as a user writes them (everything in the entry but `name`/`module`), as a zod
   * schema whose output is Options. The host parses with it, so errors name `plugins[i].key`
   * in one style, and config/mqtt-guard.schema.json is generated from it.
   */
  readonly options?: z.ZodType<Options>
  /**
   * After `options`: what a schema cannot say (paths resolved against ctx.configDir and checked,
   * checks across options). Without `options` it gets the raw entry and checks it all. Throw
   * configError(key, problem) with the key relative to the entry.
   */
  validate? (options: Options, ctx: OptionsContext): Options
  create: (ctx: PluginContext<Options>) => Plugin | Promise<Plugin>
  /**
   * It decides who may connect (and sets `conn.identity`): a listener on a non-loopback address
   * needs a plugin that says so, or `allowAnonymous: true`.
   */
  readonly authenticates?: boolean
  /** Commands of its own, by name (`passwd`, `acl-check`); the built-in plugins' are listed by `--help`. */
  readonly commands?: Readonly<Record<string, PluginCommand>>
  /**
   * `workers: N` without Redis: the state one process would keep in memory, made once in the
   * primary and reached by every worker through `ctx.primary`. `tell` reaches every worker.
   */
  readonly primary?: (options: Options, tell: (event: string, data: unknown) => void) => PrimarySide
}

export function definePlugin<Options> (definition: PluginDefinition<Options>): PluginDefinition<Options> {
  return definition
}
