// Figures read back from the proxy's own metrics for the admin views (the console's overview
// and time series, doctor's report): connects, certificate expiry, round trips per leg. Read
// when asked, never on the packet path.

import type { GuardMetrics } from './metrics.js'

/** Connects counted since start, all listeners together. */
export function connectCount (metrics: GuardMetrics): number {
  let n = 0
  for (const v of metrics.connects.values()) n += v
  return n
}

/** Seconds to expiry of each listener certificate, from its gauge. */
export async function certificateExpiry (metrics: GuardMetrics): Promise<Array<{ listener: string, subject: string, seconds: number }>> {
  return (await metrics.certExpiry.get()).values.map((v) => ({ listener: String(v.labels.listener), subject: String(v.labels.subject), seconds: v.value }))
}

/** Sum and count of the sampled round trips per leg, from the histogram. */
export async function roundTripLegs (metrics: GuardMetrics): Promise<Record<'client' | 'broker', { sum: number, count: number }>> {
  const legs = { client: { sum: 0, count: 0 }, broker: { sum: 0, count: 0 } }
  for (const v of (await metrics.roundTrip.get()).values) {
    const leg = legs[v.labels.leg as 'client' | 'broker'] as { sum: number, count: number } | undefined
    if (leg === undefined) continue
    if (v.metricName === 'mqtt_guard_round_trip_seconds_sum') leg.sum = v.value
    if (v.metricName === 'mqtt_guard_round_trip_seconds_count') leg.count = v.value
  }
  return legs
}
