// The Docker files agree with each other and with config/docker.yaml (no Docker runs here, so
// they are read): a current LTS Node base, a HEALTHCHECK on the admin port's /healthz, the
// admin endpoint open to the compose network with a token, a stop_grace_period longer than
// the drain, the observability profile with its files mounted, and a .dockerignore.

import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { loadConfig } from '../../src/config/config.js'
import { isGuardError } from '../../src/errors.js'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const read = (file: string): string => readFileSync(path.join(ROOT, file), 'utf8')

interface Service { image?: string, profiles?: string[], volumes?: string[], ports?: string[], environment?: Record<string, string>, stop_grace_period?: string, configs?: Array<{ source: string, target: string }> }
const compose = parseYaml(read('docker-compose.yml')) as { services: Record<string, Service>, configs?: Record<string, { content?: string }> }
const dockerfile = read('Dockerfile')
const TOKEN = 'a-token-for-the-test-0123456789'
const docker = loadConfig({ config: path.join(ROOT, 'config/docker.yaml') }, { adminToken: TOKEN })

/** Compose durations: `20s`, `1m30s`, `1500ms`. */
function durationMs (text: string): number {
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001 }
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us)/g)]
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text) throw new Error(`not a compose duration: ${text}`)
  return parts.reduce((ms, p) => ms + Number(p[1]) * (units[p[2] as string] as number), 0)
}

/** `${NAME:-default}` → default. */
const defaultOf = (value: string | undefined): string | undefined => /^\$\{[A-Z_]+:-(.+)\}$/.exec(value ?? '')?.[1]

t.test('Dockerfile: Node LTS 24 or later in every stage, HEALTHCHECK on the admin /healthz', async (t) => {
  const bases = [...dockerfile.matchAll(/^FROM node:(\d+)-/gm)].map((m) => Number(m[1]))
  t.ok(bases.length >= 2, 'both stages are node images')
  for (const major of bases) t.ok(major >= 24 && major % 2 === 0, `node:${major} is an LTS line (even) at or past 24`)
  t.match((JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node, '>=20', 'engines stay >= 20, which CI runs')
  const check = /^HEALTHCHECK .*\\\n\s+CMD (.+)$/m.exec(dockerfile)?.[1] ?? /^HEALTHCHECK .* CMD (.+)$/m.exec(dockerfile)?.[1]
  t.ok(check !== undefined, 'a HEALTHCHECK')
  t.match(check, `http://127.0.0.1:${docker.admin?.port}/healthz`, 'on the admin port of config/docker.yaml')
  t.match(dockerfile, new RegExp(`^EXPOSE .*\\b${docker.admin?.port}\\b`, 'm'), 'the admin port exposed')
})

t.test('config/docker.yaml: admin on 0.0.0.0 with the token from MQTT_GUARD_ADMIN_TOKEN, refused without', async (t) => {
  t.match(docker.admin, { host: '0.0.0.0', port: 9884, token: TOKEN }, 'listens on every address with the token (the bounds keep their defaults)')
  let refused: unknown
  try {
    loadConfig({ config: path.join(ROOT, 'config/docker.yaml') })
  } catch (err) {
    refused = err
  }
  t.ok(isGuardError(refused), 'no token: the config is refused')
  t.match((refused as Error | undefined)?.message, /admin\.token/, 'naming admin.token')
  const env = compose.services.proxy?.environment?.MQTT_GUARD_ADMIN_TOKEN
  t.ok((defaultOf(env) ?? '').length >= 16, `compose sets it, with a local default of 16+ characters (${env})`)
  t.equal(compose.configs?.['admin-token']?.content, env, 'and gives Prometheus the same value')
})

t.test('docker-compose.yml: stop_grace_period past the drain; nothing public but MQTT', async (t) => {
  const grace = durationMs(compose.services.proxy?.stop_grace_period ?? '10s')
  t.ok(grace > docker.limits.drainTimeoutMs, `stop_grace_period ${grace} ms > drainTimeoutMs ${docker.limits.drainTimeoutMs} ms`)
  for (const [name, service] of Object.entries(compose.services)) {
    for (const port of service.ports ?? []) {
      if (port === '1883:1883' && name === 'lb') continue
      t.match(port, /^127\.0\.0\.1:/, `${name}: ${port} is bound to the host's loopback only`)
    }
  }
})

t.test('the observability profile: prometheus and grafana, their files mounted and consistent', async (t) => {
  const profiled = Object.entries(compose.services).filter(([, s]) => s.profiles?.includes('observability')).map(([n]) => n).sort()
  t.same(profiled, ['grafana', 'prometheus'])
  for (const name of ['redis', 'mosquitto', 'proxy', 'lb']) t.equal(compose.services[name]?.profiles, undefined, `${name} runs without a profile`)
  const mounts = Object.values(compose.services).flatMap((s) => s.volumes ?? []).filter((v) => v.startsWith('./'))
  t.ok(mounts.length >= 7, `${mounts.length} files mounted from the repository`)
  for (const mount of mounts) t.ok(existsSync(path.join(ROOT, mount.split(':')[0] as string)), `${mount.split(':')[0]} exists`)
  const prometheus = parseYaml(read('deploy/prometheus/prometheus.yml')) as { scrape_configs: Array<{ job_name: string, authorization?: { credentials_file?: string }, dns_sd_configs?: Array<{ names: string[], port: number }> }> }
  const job = prometheus.scrape_configs.find((s) => s.job_name === 'mqtt-guard')
  t.same(job?.dns_sd_configs?.[0], { names: ['proxy'], type: 'A', port: docker.admin?.port, refresh_interval: '15s' }, 'each replica of the proxy service, on the admin port')
  t.equal(job?.authorization?.credentials_file, compose.services.prometheus?.configs?.[0]?.target, 'the token file is the one compose mounts')
  const provider = parseYaml(read('deploy/grafana/provisioning/dashboards/mqtt-guard.yml')) as { providers: Array<{ options: { path: string } }> }
  const dashboard = compose.services.grafana?.volumes?.find((v) => v.startsWith('./deploy/grafana/mqtt-guard.json:'))
  t.equal(path.posix.dirname(dashboard?.split(':')[1] ?? ''), provider.providers[0]?.options.path, 'the dashboard is mounted where the provider looks')
  const datasource = parseYaml(read('deploy/grafana/provisioning/datasources/prometheus.yml')) as { datasources: Array<{ url: string }> }
  t.equal(datasource.datasources[0]?.url, 'http://prometheus:9090', 'Grafana reads the prometheus service')
})

t.test('.dockerignore keeps local trees out of the build context', async (t) => {
  const ignored = read('.dockerignore').split('\n').map((l) => l.trim())
  for (const entry of ['node_modules', 'dist', '.git', '.tap', 'bench/results']) t.ok(ignored.includes(entry), entry)
})
