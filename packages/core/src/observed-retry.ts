// The one retry loop (core/retry) with the project's telemetry attached, used by every remote call — S3, docker://
// registries, the containerd API, the OTLP exporter: an `upload.retry.attempt` span per attempt,
// `upload.retry.success` / `upload.retry.failure` marks, `upload_retry_total{status,reason}` and
// `upload_retry_latency_seconds` for operations that needed more than one attempt, and a log line per failed
// attempt carrying digest, attempt, store and the error summary. `store` names the remote (an S3 store, a registry
// host, the containerd socket, the collector) and `operation` what was asked; both go to spans and logs, not to
// metric labels, so the series stay those DESIGN.md names.
import { retry, type RetryBudget, type RetryOptions } from './retry.js';
import { errorSummary } from './errors.js';
import { uploadRetryLatencySeconds, uploadRetryTotal } from './retry-metrics.js';
import { log, uploadLog } from './log.js';
import { markSpan, withSpan } from './tracing.js';

/** Outcomes that are answers, not failures (the caller turns them into results). */
const QUIET = new Set(['TS_BLOB_UNKNOWN', 'TS_NOT_FOUND', 'TS_TAG_UNKNOWN']);

export interface ObservedCall {
  store: string;
  operation: string;
  digest?: string | undefined;
  signal?: AbortSignal | undefined;
  budget?: RetryBudget | undefined;
  retry?: Pick<RetryOptions, 'maxAttempts' | 'baseDelayMs' | 'maxDelayMs' | 'maxElapsedMs' | 'random'> | undefined;
  /** A caller-specific verdict (e.g. containerd mutations are not retried); default core/retry's classify. */
  classify?: RetryOptions['classify'] | undefined;
  /** Counts retries for summaries (--json). */
  onRetry?: (() => void) | undefined;
}

export async function observedRetry<T>(call: ObservedCall, op: (signal: AbortSignal) => Promise<T>): Promise<T> {
  let lastReason = '';
  let attempts = 0;
  const started = performance.now();
  const attrs = { 'transship.store': call.store, 'transship.operation': call.operation, ...(call.digest ? { 'transship.digest': call.digest } : {}) };
  try {
    const result = await retry(
      ({ attempt, signal }) =>
        withSpan('upload.retry.attempt', { ...attrs, 'transship.attempt': attempt }, () => op(signal)),
      {
        ...call.retry,
        signal: call.signal,
        budget: call.budget,
        ...(call.classify ? { classify: call.classify } : {}),
        onAttempt: (attempt) => {
          attempts = attempt;
          if (attempt > 1) call.onRetry?.();
        },
        onFailure: ({ attempt, error, verdict, delayMs }) => {
          lastReason = verdict.reason;
          const fields = { ...uploadLog({ digest: call.digest ?? '', attempt, store: call.store, err: error }), operation: call.operation, retryable: verdict.retryable, delayMs };
          if (verdict.retryable && delayMs !== undefined) log.warn(fields, `${call.operation} failed, retrying`);
          else if (verdict.reason === 'cancelled' || QUIET.has(verdict.reason)) log.debug(fields, `${call.operation}: ${verdict.reason}`);
          else log.error(fields, `${call.operation} failed`);
        },
      },
    );
    if (attempts > 1) {
      uploadRetryTotal.inc({ status: 'success', reason: lastReason });
      uploadRetryLatencySeconds.observe((performance.now() - started) / 1000);
      markSpan('upload.retry.success', { ...attrs, 'transship.attempts': attempts });
    }
    return result;
  } catch (err) {
    if (attempts > 1 || lastReason) {
      uploadRetryTotal.inc({ status: 'fail', reason: lastReason || errorSummary(err).code });
      if (attempts > 1) uploadRetryLatencySeconds.observe((performance.now() - started) / 1000);
      markSpan('upload.retry.failure', { ...attrs, 'transship.attempts': attempts, 'transship.error': errorSummary(err).code }, true);
    }
    throw err;
  }
}
