// Staying subscribed to containerd's event stream across containerd restarts, with the project's one retry loop
// (src/core/retry.ts): exponential backoff with full jitter, cancellation that stops the backoff sleep at once.
//
// One "session" = open the stream (event-stream.ts: node:http2, not grpc-js), prove containerd answers (a Version
// call on the same connection: containerd sends no stream headers until the first event, so the stream alone cannot
// say it is established), tell the caller
// (who reconciles what it missed), then read until the stream breaks. A session that failed before it was
// established is retried with growing delays; a session that was established and then lost starts a fresh retry,
// so a containerd restart after a week of uptime is retried from the base delay, not from the cap.
import { TransshipError, errorSummary } from '@transship/core/errors';
// Bare retry on purpose: an attempt here is a whole session (hours), not a request, so upload.retry.* spans and
// upload_retry_total would misreport it; reconnects are counted by containerd_watch_resubscriptions_total.
// eslint-disable-next-line no-restricted-imports
import { classify, retry, type Verdict } from '@transship/core/retry';
import { log } from '@transship/core/log';
import { openEventStream } from './event-stream.js';
import type { WatchEvent } from './events.js';

export interface SubscriptionOptions {
  /** containerd's socket path. */
  address: string;
  /** containerd event filters (empty: every namespace and topic). */
  filters: string[];
  signal: AbortSignal;
  /** Deadline of the Version call that proves a session. */
  timeoutMs: number;
  /** Read coalescing window (event-stream.ts); 0 reads every event as it comes. */
  coalesceMs: number;
  /** Called for every event, synchronously on the stream's data path: must not block. */
  onEvent(ev: WatchEvent): void;
  /** After the events of one socket read were delivered. */
  onBatch?(): void;
  /** See event-stream.ts: whether the stream's polling timer keeps the process awake every `coalesceMs`. */
  onPacing?(paced: boolean): void;
  onPoll?(): void;
  /** The stream is established; `resumed` after a loss. The caller reconciles. */
  onSubscribed(info: { resumed: boolean }): void;
  /** The stream was lost after it was established. */
  onLost(err: unknown): void;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Give up when containerd stays unreachable this long (default: never, a node agent waits). */
  maxElapsedMs?: number;
  /** Jitter source, [0, 1) (tests pin it to make a reconnect delay predictable). */
  random?: () => number;
}

/** Unwraps a client's own retry wrapper, so "unreachable" stays retryable here. */
function verdictOf(err: unknown): Verdict {
  let e: unknown = err;
  while (e instanceof TransshipError && (e.code === 'TS_RETRY_EXHAUSTED' || e.code === 'TS_RETRY_BUDGET_EXHAUSTED') && e.cause !== undefined) e = e.cause;
  return classify(e);
}

/** Runs until the signal fires (resolves) or containerd refuses us for a reason retrying cannot fix (rejects). */
export async function runSubscription(o: SubscriptionOptions): Promise<void> {
  let resumed = false;
  while (!o.signal.aborted) {
    let established = false;
    try {
      await retry(
        async ({ signal }) => {
          const stream = openEventStream({ address: o.address, filters: o.filters, coalesceMs: o.coalesceMs, onEvent: (ev) => o.onEvent(ev), onBatch: () => o.onBatch?.(), onPacing: (p) => o.onPacing?.(p), onPoll: () => o.onPoll?.() });
          const onAbort = (): void => stream.close();
          signal.addEventListener('abort', onAbort, { once: true });
          try {
            // Events go to the caller straight from the stream's read path: no per-message promise hops.
            await Promise.race([stream.version(o.timeoutMs, signal), stream.ended]);
            established = true;
            o.onSubscribed({ resumed });
            await stream.ended;
          } finally {
            signal.removeEventListener('abort', onAbort);
            stream.close(); // whatever happened, no stream outlives the session
          }
        },
        {
          signal: o.signal,
          maxAttempts: Number.MAX_SAFE_INTEGER,
          maxElapsedMs: o.maxElapsedMs ?? Number.POSITIVE_INFINITY,
          baseDelayMs: o.baseDelayMs ?? 100,
          maxDelayMs: o.maxDelayMs ?? 5000,
          ...(o.random ? { random: o.random } : {}),
          // An established session that broke is not retried here: the loop below starts a fresh retry.
          classify: (err) => (established ? { retryable: false, reason: 'session_lost' } : verdictOf(err)),
          onFailure: ({ attempt, error, verdict, delayMs }) => {
            if (established) return;
            const fields = { attempt, error: errorSummary(error), delayMs };
            if (verdict.retryable) log.warn(fields, 'containerd event stream: not connected, retrying');
            else if (verdict.reason !== 'cancelled') log.error(fields, 'containerd event stream: giving up');
          },
        },
      );
    } catch (err) {
      if (o.signal.aborted) return;
      if (!established) throw err;
      log.warn({ error: errorSummary(err) }, 'containerd event stream lost; resubscribing');
      o.onLost(err);
      resumed = true;
    }
  }
}
