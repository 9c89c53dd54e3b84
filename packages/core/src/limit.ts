// Bounded concurrency (p-limit's idea, written small): at most `n` tasks run at once; the rest wait in order.
import { throwIfAborted } from './errors.js';

export function limiter(n: number): <T>(task: () => Promise<T>, signal?: AbortSignal) => Promise<T> {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`concurrency must be an integer ≥ 1, got ${n}`);
  let active = 0;
  const queue: Array<() => void> = [];
  const next = (): void => {
    active--;
    queue.shift()?.();
  };
  return async <T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> => {
    if (active >= n) await new Promise<void>((resolve) => queue.push(resolve));
    active++;
    try {
      throwIfAborted(signal);
      return await task();
    } finally {
      next();
    }
  };
}

/** Runs `fn` over items with at most `n` in flight; the first failure aborts the rest and is rethrown. */
export async function forEachLimit<T>(items: readonly T[], n: number, fn: (item: T, signal: AbortSignal) => Promise<void>, signal?: AbortSignal): Promise<void> {
  const inner = new AbortController();
  const onAbort = () => inner.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  const run = limiter(n);
  let first: { err: unknown } | undefined;
  try {
    await Promise.all(
      items.map((item) =>
        run(() => fn(item, inner.signal), inner.signal).catch((err: unknown) => {
          if (!first) {
            first = { err };
            inner.abort(err);
          }
        }),
      ),
    );
    if (first) throw first.err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
