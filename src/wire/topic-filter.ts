// Topic filters as a client sends them in SUBSCRIBE and UNSUBSCRIBE: the codec refuses one
// that is not valid, and the ACL judges the filter inside a shared subscription.

/** Why `filter` is not a valid topic filter [MQTT-4.7.1-1..3], or undefined when it is. */
export function filterProblem (filter: string): string | undefined {
  if (filter === '') return 'empty topic filter' // [MQTT-4.7.3-1]
  if (filter.includes('\u0000')) return 'topic filter contains U+0000'
  const parts = filter.split('/')
  for (const [i, level] of parts.entries()) {
    if (level.includes('#') && (level !== '#' || i !== parts.length - 1)) return `"#" must be a whole level and the last one in "${filter}"`
    if (level.includes('+') && level !== '+') return `"+" must be a whole level in "${filter}"`
  }
  return undefined
}

/**
 * `$share/{group}/{filter}` → `{filter}` [MQTT-4.8.2]: the ACL judges the filter, never the
 * share name. Returns null for a malformed shared subscription, the filter itself otherwise.
 */
export function unshare (filter: string): string | null {
  if (!filter.startsWith('$share/')) return filter
  const rest = filter.slice('$share/'.length)
  const slash = rest.indexOf('/')
  if (slash <= 0) return null
  const group = rest.slice(0, slash)
  if (group.includes('+') || group.includes('#')) return null
  const inner = rest.slice(slash + 1)
  return inner === '' ? null : inner
}

/** Why a filter from SUBSCRIBE or UNSUBSCRIBE, shared or not, is not valid; undefined when it is. */
export function subscriptionFilterProblem (filter: string): string | undefined {
  const inner = unshare(filter)
  return inner === null ? `malformed shared subscription "${filter}" [MQTT-4.8.2]` : filterProblem(inner)
}

/**
 * Whether `filter` (shared or not) matches the topic name `topic` [MQTT-4.7]: `+` one level,
 * `#` the rest and the parent, and no wildcard at the first level matches a `$` topic.
 */
export function topicMatches (filter: string, topic: string): boolean {
  const inner = unshare(filter)
  if (inner === null) return false
  const f = inner.split('/')
  const t = topic.split('/')
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length) return false
    if (f[i] !== '+' && f[i] !== t[i]) return false
  }
  return f.length === t.length
}
