// One Redis call with a deadline. A client that already knows Redis is gone (reconnecting)
// fails at once instead of queueing the call: a login must not wait for a dead Redis.

import type { Redis, Cluster } from 'ioredis'

const GONE = new Set(['reconnecting', 'end', 'close'])

export async function redisCall<T> (redis: Redis | Cluster, timeoutMs: number, work: (redis: Redis | Cluster) => Promise<T>): Promise<T> {
  if (GONE.has(redis.status)) throw new Error(`not connected (${redis.status})`)
  let timer: NodeJS.Timeout | undefined
  try {
    // The call goes on after the deadline: its rejection, then, is nobody's (handled here).
    const call = work(redis)
    call.catch(() => {})
    return await Promise.race([call, new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new Error(`no answer within ${timeoutMs} ms`)) }, timeoutMs)
    })])
  } finally {
    clearTimeout(timer)
  }
}

/** `work`'s answer, or undefined when it fails or takes longer than `ms` (a probe, a QUIT). */
export async function within<T> (ms: number, work: Promise<T>): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<undefined>((resolve) => { timer = setTimeout(() => { resolve(undefined) }, ms) })
  return await Promise.race([work.catch(() => undefined), late]).finally(() => { clearTimeout(timer) })
}

/**
 * A subscription to one channel, on a connection of its own (a subscribed client can send
 * nothing else). Not awaited, so a proxy starts while Redis is away; and made again on every
 * (re)connect, because a subscribe that failed while Redis was away would otherwise leave this
 * instance deaf. Connection errors are the shared client's to log.
 */
export function subscribeChannel (redis: Redis | Cluster, channel: string, onMessage: (message: string) => void): Redis | Cluster {
  const subscriber = redis.duplicate()
  subscriber.on('error', () => {})
  subscriber.on('message', (_channel: string, message: string) => { onMessage(message) })
  const subscribe = (): void => { subscriber.subscribe(channel).catch(() => {}) }
  subscriber.on('ready', subscribe)
  subscribe()
  return subscriber
}
