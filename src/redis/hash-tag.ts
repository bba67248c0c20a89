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

