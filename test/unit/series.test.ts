// The console's time series (src/observe/series.ts) on a clock and counters the test moves: a point a
// second holding the deltas, round-trip means with gaps, refusals by code aligned with the
// rest, the window bounded, and the part of a window after a time (what the feed appends).

import t from 'tap'
import { SeriesRecorder, seriesAfter, type Counters } from '../../src/observe/series.js'
import { pollUntil } from '../helpers/processes.js'

interface Moved { now: number, counters: Counters }

function recorder (keep = 3600): { rec: SeriesRecorder, at: Moved, set: (c: Partial<Counters>) => void } {
  const at: Moved = {
    now: 1_700_000_000_000,
    counters: { connections: 0, connects: 0, refusals: new Map(), publishIn: 0, publishOut: 0, roundTrips: { client: { sum: 0, count: 0 }, broker: { sum: 0, count: 0 } } }
  }
  const rec = new SeriesRecorder(async () => at.counters, keep, () => at.now)
  return { rec, at, set: (c) => { at.counters = { ...at.counters, ...c } } }
}

t.test('each point holds what happened in its second', async (t) => {
  const { rec, at, set } = recorder()
  set({ connections: 2, connects: 3, publishIn: 10, publishOut: 7 })
  await rec.sample()
  at.now += 1000
  set({ connections: 1, connects: 4, publishIn: 25, publishOut: 7 })
  await rec.sample()
  const w = rec.window()
  t.same(w.t, [1_700_000_000, 1_700_000_001], 'whole seconds')
  t.same(w.connections, [2, 1], 'connections: the level at that second')
  t.same(w.connects, [3, 1])
  t.same(w.publishIn, [10, 15])
  t.same(w.publishOut, [7, 0])
  t.equal(w.whole, true)
  t.equal(rec.latest('publishIn'), 15, 'the newest second, for the cards')
})

t.test('a second already recorded is not recorded twice', async (t) => {
  const { rec, at, set } = recorder()
  set({ publishIn: 5 })
  await rec.sample()
  at.now += 400
  set({ publishIn: 9 })
  await rec.sample()
  t.same(rec.window().publishIn, [5], 'one point')
  at.now += 700
  await rec.sample()
  t.same(rec.window().publishIn, [5, 4], 'the next second counts what the skipped sample saw')
})

t.test('round trips: the mean of the second\'s samples in ms, null without one', async (t) => {
  const { rec, at, set } = recorder()
  set({ roundTrips: { broker: { sum: 0.003, count: 2 }, client: { sum: 0, count: 0 } } })
  await rec.sample()
  at.now += 1000
  await rec.sample()
  at.now += 1000
  set({ roundTrips: { broker: { sum: 0.0034, count: 3 }, client: { sum: 0.0001, count: 1 } } })
  await rec.sample()
  const w = rec.window()
  t.same(w.rttBroker, [1.5, null, 0.4])
  t.same(w.rttClient, [null, null, 0.1])
})

t.test('refusals, in all and by code, aligned with the other columns', async (t) => {
  const { rec, at, set } = recorder()
  await rec.sample()
  at.now += 1000
  set({ refusals: new Map([['GUARD_ERR_NOT_AUTHORIZED', 2]]) })
  await rec.sample()
  at.now += 1000
  set({ refusals: new Map([['GUARD_ERR_NOT_AUTHORIZED', 2], ['broker', 1]]) })
  await rec.sample()
  const w = rec.window()
  t.same(w.refusals, [0, 2, 1])
  t.same(w.refusalsByCode, { GUARD_ERR_NOT_AUTHORIZED: [0, 2, 0], broker: [0, 0, 1] }, 'zeros before a code first occurred')
})

t.test('the window keeps the newest points, and drops a code none of whose refusals is left', async (t) => {
  const { rec, at, set } = recorder(3)
  set({ refusals: new Map([['GUARD_ERR_BANNED', 1]]) })
  for (let i = 1; i <= 5; i++) {
    set({ publishIn: i * i })
    await rec.sample()
    at.now += 1000
  }
  const w = rec.window()
  t.same(w.t, [1_700_000_002, 1_700_000_003, 1_700_000_004])
  t.same(w.publishIn, [5, 7, 9])
  t.same(w.refusalsByCode, {}, 'its one refusal was in the first second')
  t.same(w.refusals, [0, 0, 0])
})

t.test('seriesAfter: the points a page does not have yet', async (t) => {
  const { rec, at, set } = recorder()
  for (let i = 1; i <= 4; i++) {
    set({ publishIn: i * 10, refusals: new Map([['broker', i]]) })
    await rec.sample()
    at.now += 1000
  }
  const part = seriesAfter(rec.window(), 1_700_000_001)
  t.equal(part.whole, false)
  t.same(part.t, [1_700_000_002, 1_700_000_003])
  t.same(part.publishIn, [10, 10])
  t.same(part.refusalsByCode, { broker: [1, 1] })
  t.same(seriesAfter(rec.window(), 1_700_000_003).t, [], 'nothing new')
  t.same(seriesAfter(rec.window(), 0).t.length, 4, 'all of it')
})

t.test('start() samples once a second on the real clock until close()', async (t) => {
  let reads = 0
  const rec = new SeriesRecorder(async () => {
    reads++
    return { connections: reads, connects: 0, refusals: new Map(), publishIn: 0, publishOut: 0, roundTrips: { client: { sum: 0, count: 0 }, broker: { sum: 0, count: 0 } } }
  }).start()
  t.teardown(() => { rec.close() })
  await pollUntil('two points', 5000, () => rec.window().t.length >= 2 ? true : undefined)
  const [first, second] = rec.window().t as [number, number]
  t.ok(Number.isInteger(first) && second > first, 'whole seconds, increasing')
  t.ok(Math.abs(first * 1000 - Date.now()) < 3000, 'the wall clock\'s seconds')
  rec.close()
  const n = reads
  // An absence can only be shown by waiting past when the next sample was due.
  await new Promise((resolve) => setTimeout(resolve, 1100))
  t.equal(reads, n, 'no sample after close()')
})
