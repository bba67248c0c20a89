// One Redis call with a deadline. A client that already knows Redis is gone (reconnecting)
// fails at once instead of queueing the call: a login must not wait for a dead Redis.

import type { Redis, Cluster } from 'ioredis'

const GONE = new Set(['reconnecting', 'end', 'close'])

export async function redisCall<T> (redis: Redis | Cluster, timeoutMs: number, work: (redis: Redis | Cluster) => Promise<T>): Promise<T> {
  if (GONE.has(redis.status)) throw new Error(`not connected (${redis.status})`)
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([work(redis), new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new Error(`no answer within ${timeoutMs} ms`)) }, timeoutMs)
    })])
  } finally {
    clearTimeout(timer)
  }
}
