// Key names that Redis Cluster can serve: a key's slot is the CRC16 of its hash tag, the text
// between the first `{` and the next `}` (the whole name when there is none, or when it is
// empty). The keys one script or one pipeline touches carry the same tag, so they share a slot
// and a node; a Cluster refuses anything else (CROSSSLOT). On one server, or with Sentinel, a
// tag is just part of the name. docs/design.md "Redis key layout" lists every key.

/**
 * `{kind:value}`. `%`, `{` and `}` in the value are %-escaped, so a value cannot end the tag
 * early, and two values never give one tag; everything else stays readable.
 */
export function hashTag (kind: string, value: string): string {
  return `{${kind}:${value.replace(/[%{}]/g, (c) => c === '%' ? '%25' : c === '{' ? '%7B' : '%7D')}}`
}

/**
 * Why `prefix` (the configured `redis.keyPrefix`, and a plugin's prefix built from it) cannot
 * start hash-tagged keys, or undefined when it can. Redis takes the first `{`: one in the
 * prefix would make the prefix (or a part of the key up to our tag's `}`) every key's tag, so
 * the keys of one client would no longer share a slot, or all keys would share one.
 * For the config's check on a Cluster; on one server or Sentinel such a prefix still works.
 */
export function keyPrefixProblem (prefix: string): string | undefined {
  if (!/[{}]/.test(prefix)) return undefined
  return 'must not contain "{" or "}" on a Redis Cluster: the cluster hashes the first {…} of a key name, so a brace in the prefix would replace the hash tag that keeps the keys of one client in one slot'
}
