// What the ACL is asked and what it answers: the actions, a request, and a decision with the rule
// that made it. Shared by the YAML rules (rules.ts) and the Mosquitto acl_file (mosquitto-acl.ts)
// without either importing the other's module.

export const ACTIONS = ['publish', 'subscribe', 'receive'] as const
export type Action = typeof ACTIONS[number]
export type Effect = 'allow' | 'deny'

export interface AclRequest {
  readonly action: Action
  /** A topic name (publish, receive) or a topic filter (subscribe, `$share/g/` allowed). */
  readonly topic: string
  readonly qos: number
  /** Ignored for subscribe. */
  readonly retain: boolean
}

export interface Decision {
  readonly allow: boolean
  /** `rules[i]`, `FILE:LINE` or `default deny`: what decided. */
  readonly rule: string
  /** The deciding rule as written, for humans. */
  readonly text: string
}
