// Calls one aedes-style function and turns its answer into a settled result. aedes 1.x
// functions answer through a callback `(error, value)`; as an extension a function may instead
// return a promise (or, for authorizeForward, a value). The callback counts once; later calls
// are ignored. A function that answers synchronously is settled synchronously (no promise, no
// timer), which keeps the PUBLISH paths cheap; one that never answers is timed out.

/** `value`: answered; `denied`: answered with an error; `failed`: threw or timed out. */
export type Settled<T> =
  | { kind: 'value', value: T | undefined }
  | { kind: 'denied', error: unknown }
  | { kind: 'failed', error: Error }

export type Callback<T> = (error?: unknown, value?: T) => void

function isThenable (value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as PromiseLike<unknown>).then === 'function'
}

/**
 * How a function answers: `callback` (it declares the callback parameter: a promise it returns,
 * e.g. from being `async`, only counts when it rejects), `promise` (no callback parameter: the
 * returned promise's value or rejection is the answer), `value` (authorizeForward: the return
 * value, or a promise of it).
 */
export type AnswerStyle = 'callback' | 'promise' | 'value'

/** The style of `fn`, whose callback would be parameter number `callbackIndex` (0-based). */
export function styleOf (fn: (...args: never[]) => unknown, callbackIndex: number): AnswerStyle {
  return fn.length > callbackIndex ? 'callback' : 'promise'
}

/** `invoke` calls the user's function with the callback it is given and returns its result. */
export function callHook<T> (
  what: string,
  timeoutMs: number,
  style: AnswerStyle,
  invoke: (callback: Callback<T>) => unknown
): Settled<T> | Promise<Settled<T>> {
  let settled: Settled<T> | undefined
  let notify: ((s: Settled<T>) => void) | undefined
  const settle = (s: Settled<T>): void => {
    if (settled !== undefined) return
    settled = s
    notify?.(s)
  }
  const callback: Callback<T> = (error, value) => {
    // aedes tests `if (err)`: any truthy error is a refusal.
    settle(error ? { kind: 'denied', error } : { kind: 'value', value })
  }
  let returned: unknown
  try {
    returned = invoke(callback)
  } catch (err) {
    return { kind: 'failed', error: err instanceof Error ? err : new Error(String(err)) }
  }
  if (settled !== undefined) return settled
  if (isThenable(returned)) {
    returned.then((value) => {
      if (style !== 'callback') callback(null, value as T)
    }, (error: unknown) => {
      // An async callback-style function that throws has failed; a promise-style one refuses.
      if (style === 'callback') settle({ kind: 'failed', error: error instanceof Error ? error : new Error(String(error)) })
      else callback(error || new Error(`${what} rejected`))
    })
  } else if (style === 'value') {
    return { kind: 'value', value: returned as T | undefined }
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      settle({ kind: 'failed', error: new Error(`${what} did not answer within ${timeoutMs} ms`) })
    }, timeoutMs)
    timer.unref()
    notify = (s) => { clearTimeout(timer); resolve(s) }
    if (settled !== undefined) notify(settled)
  })
}

/** Applies `next` now, or when the value arrives. */
export function andThen<A, B> (value: A | Promise<A>, next: (a: A) => B | Promise<B>): B | Promise<B> {
  return value instanceof Promise ? value.then(next) : next(value)
}
