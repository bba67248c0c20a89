// What the runner asks of the load generator, and what it answers (over the IPC channel).

import type { Credentials } from './mqtt-bytes.js'

/** Processes whose CPU time and memory the generator reads from /proc, by role. */
export type Watched = Record<string, number>

interface JobBase {
  /** Unique per job: prefixes client IDs and topics. */
  tag: string
  port: number
  watch: Watched
  clkTck: number
  /** User name and password for every CONNECT, when the target requires them. */
  credentials?: Credentials | undefined
  /**
   * Several brokers behind the target (balance client-id), HOST:PORT each: a pair's publisher
   * and subscriber get client IDs that hash to the same broker, as a fleet whose devices talk
   * through one broker each (independent Mosquittos do not pass messages between them).
   */
  brokers?: string[] | undefined
}

/** `pairs` publishers, each with its own subscriber on its own topic. */
export interface ThroughputJob extends JobBase {
  kind: 'throughput'
  qos: 0 | 1
  payloadBytes: number
  pairs: number
  /** QoS 1: PUBLISHes a publisher may have without PUBACK. */
  window: number
  /** Messages a pair may have published and not yet seen delivered (bounds every queue). */
  endToEndWindow: number
  warmupMs: number
  durationMs: number
}

/** One publisher, one subscriber, one message in flight. */
export interface LatencyJob extends JobBase {
  kind: 'latency'
  qos: 0 | 1
  payloadBytes: number
  warmup: number
  samples: number
  maxMs: number
}

/** QoS 1 PUBLISHes at a fixed total rate spread over `pairs` publishers. */
export interface FixedRateJob extends JobBase {
  kind: 'fixed-rate'
  payloadBytes: number
  pairs: number
  rate: number
  window: number
  warmupMs: number
  durationMs: number
}

/** Connections that CONNECT, get CONNACK and then stay silent. */
export interface IdleJob extends JobBase {
  kind: 'idle'
  connections: number
  concurrency: number
  holdMs: number
  timeoutMs: number
}

export type Job = ThroughputJob | LatencyJob | FixedRateJob | IdleJob

/** CPU time of one watched process over a measurement window. */
export interface CpuReading {
  seconds: number
  utilisation: number
  /** CPU µs per message delivered (idle job: per connection opened). */
  usPerMessage: number
}

export interface ThroughputResult {
  delivered: number
  seconds: number
  rate: number
  /** Published but never delivered by the end of the drain. */
  lost: number
  cpu: Record<string, CpuReading>
  generatorUtilisation: number
}

export interface LatencyResult {
  samples: number
  p50Us: number
  p99Us: number
  meanUs: number
  maxUs: number
}

export interface FixedRateResult {
  delivered: number
  seconds: number
  rate: number
  /** Sends skipped because a publisher's window was full: the target fell behind. */
  behind: number
  lost: number
  cpu: Record<string, CpuReading>
  generatorUtilisation: number
  /** The measurement window on the monotonic clock, in µs (a CPU profile's timeline). */
  windowUs: [number, number]
}

export interface IdleResult {
  requested: number
  opened: number
  failed: number
  /** Still open at the end of the hold. */
  held: number
  seconds: number
  rate: number
  /** CPU time while the connections were being opened (until the last CONNACK). */
  cpu: Record<string, CpuReading>
  /** The connect phase on the monotonic clock, in µs. */
  windowUs: [number, number]
  rss: Record<string, { beforeKiB: number, afterKiB: number, perConnectionKiB: number }>
}

export type JobResult = ThroughputResult | LatencyResult | FixedRateResult | IdleResult

export type Request = { id: number, job: Job }
export type Reply = { id: number, ok: true, result: JobResult } | { id: number, ok: false, error: string }
