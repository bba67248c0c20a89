// The naming check of test/helpers/metrics-scrape.ts finds each kind of bad name (so the
// metric-name test can fail), and the exposition parser files histogram series under their family.

import t from 'tap'
import { exposedNames, namingProblems, parseExposition, valueOf } from '../helpers/metrics-scrape.js'

const family = (name: string, type: string, help = 'something', sample = `${name} 0`): string => `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${sample}\n`

t.test('each bad name is one problem; good names none', async (t) => {
  const rows: Array<[string, string, string, RegExp | undefined]> = [
    ['mqtt_guard_process_process_cpu_user_seconds_total', 'counter', 'cpu', /doubled prefix/],
    ['mqtt_guard_process_nodejs_heap_size_total_bytes', 'gauge', 'heap', /doubled prefix/],
    ['process_process_open_fds', 'gauge', 'fds', /doubled prefix/],
    ['nodejs_nodejs_version_info', 'gauge', 'version', /doubled prefix/],
    ['mqtt_guard_trace_mqtt_guard_lines_total', 'counter', 'lines', /doubled prefix/],
    ['connections_open', 'gauge', 'open connections', /without the mqtt_guard_ prefix/],
    ['mqtt_guard_refusals', 'counter', 'refusals', /counter whose name does not end in _total/],
    ['mqtt_guard_open_total', 'gauge', 'open now', /gauge whose name ends in _total/],
    ['mqtt_guard_held_ms_total', 'counter', 'time held back, summed', /not in a base unit/],
    ['mqtt_guard_dial', 'histogram', 'dial', /histogram without its unit/],
    ['mqtt_guard_certificate_expiry', 'gauge', 'Seconds until a certificate expires', /gauge of time without _seconds/],
    ['mqtt_guard_connections', 'gauge', 'Open client connections', undefined],
    ['mqtt_guard_round_trip_seconds', 'histogram', 'Sampled round trips', undefined],
    ['nodejs_active_handles_total', 'gauge', 'prom-client names it so', undefined],
    ['process_cpu_user_seconds_total', 'counter', 'cpu', undefined]
  ]
  for (const [name, type, help, want] of rows) {
    const problems = namingProblems(parseExposition(family(name, type, help)))
    if (want === undefined) {
      t.same(problems, [], `${name}: fine`)
      continue
    }
    t.equal(problems.length, 1, `${name}: one problem`)
    t.match(problems[0], want, `${name}: ${String(want)}`)
  }
  t.match(namingProblems(parseExposition(family('mqtt_guard_build_info', 'gauge', 'build', 'mqtt_guard_build_info{version="1"} 2'))), [/info metric is a gauge of 1/])
})

t.test('histogram series belong to their family; labels with escapes', async (t) => {
  const text = [
    '# HELP mqtt_guard_round_trip_seconds rtt', '# TYPE mqtt_guard_round_trip_seconds histogram',
    'mqtt_guard_round_trip_seconds_bucket{le="0.1",leg="client"} 3', 'mqtt_guard_round_trip_seconds_bucket{le="+Inf",leg="client"} 4',
    'mqtt_guard_round_trip_seconds_sum{leg="client"} 0.5', 'mqtt_guard_round_trip_seconds_count{leg="client"} 4',
    '# HELP mqtt_guard_tls_certificate_expiry_seconds left', '# TYPE mqtt_guard_tls_certificate_expiry_seconds gauge',
    'mqtt_guard_tls_certificate_expiry_seconds{listener="mqtts://0.0.0.0:8883",subject="CN=a \\"b\\", O=c"} 86400'
  ].join('\n')
  const families = parseExposition(text)
  t.same([...families.keys()], ['mqtt_guard_round_trip_seconds', 'mqtt_guard_tls_certificate_expiry_seconds'])
  t.equal(families.get('mqtt_guard_round_trip_seconds')?.samples.length, 4)
  t.equal(valueOf(families, 'mqtt_guard_round_trip_seconds_count', { leg: 'client' }), 4)
  t.equal(valueOf(families, 'mqtt_guard_tls_certificate_expiry_seconds', { subject: 'CN=a \\"b\\", O=c' }), 86_400)
  t.ok(exposedNames(families).has('mqtt_guard_round_trip_seconds_bucket'))
  t.notOk(exposedNames(families).has('mqtt_guard_tls_certificate_expiry_seconds_count'), 'a gauge has no _count')
})
