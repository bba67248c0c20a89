// Topic names, topic filters and the three relations the ACL needs between a rule's pattern P
// and what a client asks for (a topic name, or a subscription's filter F):
//   covers(P, F):   every topic F matches is matched by P (an allow rule must cover it);
//   overlaps(P, F): some topic is matched by both (a deny rule applies as soon as it overlaps);
// For a topic name (no wildcards) both are plain matching.
// `+` matches one level, `#` the rest including the parent level [MQTT-4.7.1-2], and a
// wildcard at the first level never matches a topic whose first level starts with `$`
// [MQTT-4.7.2-1].

export { filterProblem, unshare } from '../../src/wire/topic-filter.js'

export type Levels = readonly string[]

export function levels (topic: string): string[] {
  return topic.split('/')
}

const isWild = (level: string): boolean => level === '+' || level === '#'
const isDollar = (level: string | undefined): boolean => level !== undefined && level.startsWith('$')

/** Why `topic` is not a valid topic name (no wildcards), or undefined when it is. */
export function topicNameProblem (topic: string): string | undefined {
  if (topic === '') return 'empty topic name'
  if (/[+#]/.test(topic) || topic.includes('\u0000')) return `topic name "${topic}" contains a wildcard or U+0000`
  return undefined
}

/** True when every topic matched by filter `f` is matched by pattern `p`. */
export function covers (p: Levels, f: Levels): boolean {
  for (let i = 0; ; i++) {
    const pl = p[i]
    const fl = f[i]
    if (pl === '#') return !(i === 0 && isDollar(fl) && !isWild(fl as string))
    if (fl === undefined) return pl === undefined
    if (pl === undefined) return false
    if (fl === '#') return false
    if (pl === '+') {
      if (i === 0 && isDollar(fl)) return false
      continue
    }
    if (fl === '+' || pl !== fl) return false
  }
}

/** True when some topic is matched by both `p` and `f`. */
export function overlaps (p: Levels, f: Levels): boolean {
  for (let i = 0; ; i++) {
    const pl = p[i]
    const fl = f[i]
    if (pl === '#' || fl === '#') {
      const other = pl === '#' ? fl : pl
      return !(i === 0 && other !== undefined && isDollar(other))
    }
    if (pl === undefined || fl === undefined) return pl === fl
    if (pl === '+' || fl === '+') {
      const other = pl === '+' ? fl : pl
      if (i === 0 && isDollar(other)) return false
      continue
    }
    if (pl !== fl) return false
  }
}

/** MQTT matching of a topic name against a filter. */
export function matches (filter: Levels, topic: Levels): boolean {
  return covers(filter, topic)
}
