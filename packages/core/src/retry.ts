// The one retry loop. Every remote call (S3, registries, containerd, the OTLP exporter) goes through `retry`, so
// backoff, budget and cancellation are the same for the whole process; callers reach it through
// `observedRetry` (src/telemetry/observed-retry.ts), which adds the retry metrics, spans and log lines — the linter
// refuses a bare `retry` import outside core/ and telemetry/ (eslint.config.js), so upload_retry_total counts every
// remote retry. (One exception, said where it is: containerd's event subscription, whose attempt is a whole session
// and whose reconnects have their own metric.) The AWS SDK's own retries are switched off (maxAttempts: 1) for the
// same reason.
//
// Policy: exponential backoff with full jitter (delay = random(0, min(maxDelay, base * 2^attempt))), raised to a
// server's Retry-After when it gives one; a token-bucket budget per backend so a dead backend sees at most a
// trickle of retries rather than a storm; cancellation stops both the in-flight attempt (via the signal we pass
// down) and the backoff sleep immediately.
import { setTimeout as sleep } from 'node:timers/promises';
import { TransshipError, cancelledError, isAbortError, isTransshipError, errorSummary, throwIfAborted } from './errors.js';

export type Verdict = { retryable: true; reason: string; retryAfterMs?: number } | { retryable: false; reason: string };

/** Network error codes that mean "the connection broke", never "the request was wrong". */
const TRANSIENT_NET_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH',
  'ECONNABORTED', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT',
  'ERR_STREAM_PREMATURE_CLOSE',
]);
const TRANSIENT_S3_CODES = new Set(['SlowDown', 'RequestTimeout', 'InternalError', 'ServiceUnavailable', 'Throttling', 'ThrottlingException', 'RequestTimeTooSkewed', 'TimeoutError']);
const TRANSIENT_HTTP = new Set([408, 429, 500, 502, 503, 504]);

/**
 * The classification table: what is worth another attempt. Unknown errors are fatal: retrying a bug only hides it.
 * ENOTFOUND is treated as transient because DNS blips are; an endpoint that never resolves exhausts maxElapsed.
 */
export function classify(err: unknown): Verdict {
  if (isAbortError(err)) return { retryable: false, reason: 'cancelled' };
  if (isTransshipError(err)) {
    const reason = err.status ? `${err.code}:${err.status}` : err.code;
    return err.retryable ? { retryable: true, reason, ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}) } : { retryable: false, reason };
  }
  const e = err as { code?: unknown; name?: unknown; message?: unknown; $metadata?: { httpStatusCode?: number }; $retryable?: unknown };
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const name = typeof e?.name === 'string' ? e.name : undefined;
  if (code && TRANSIENT_NET_CODES.has(code)) return { retryable: true, reason: code };
  if (name && TRANSIENT_S3_CODES.has(name)) return { retryable: true, reason: name };
  const status = e?.$metadata?.httpStatusCode;
  if (status !== undefined && TRANSIENT_HTTP.has(status)) return { retryable: true, reason: `http_${status}` };
  if (typeof e?.message === 'string' && /socket hang up|other side closed|ECONNRESET|premature close/i.test(e.message)) {
    return { retryable: true, reason: 'socket_hang_up' };
  }
  return { retryable: false, reason: name ?? code ?? 'unknown' };
}

/** A token bucket shared by every call to one backend: each retry takes a token, each success refills a little. */
export class RetryBudget {
  private tokens: number;
  constructor(
    readonly capacity = 100,
    /** Tokens a retry costs. */
    readonly retryCost = 5,
    /** Tokens a first-attempt success gives back. */
    readonly successRefill = 1,
  ) {
    this.tokens = capacity;
  }
  tryTake(): boolean {
    if (this.tokens < this.retryCost) return false;
    this.tokens -= this.retryCost;
    return true;
  }
  refill(): void {
    this.tokens = Math.min(this.capacity, this.tokens + this.successRefill);
  }
  get available(): number {
    return this.tokens;
  }
}

export interface AttemptInfo {
  attempt: number;
  signal: AbortSignal;
}

export interface RetryEvents {
  /** Called before an attempt starts (attempt numbers start at 1). */
  onAttempt?: (attempt: number) => void;
  /** Called when an attempt failed, with the verdict and the delay before the next one (undefined = giving up). */
  onFailure?: (info: { attempt: number; error: unknown; verdict: Verdict; delayMs: number | undefined }) => void;
  onSuccess?: (info: { attempt: number; elapsedMs: number }) => void;
}

export interface RetryOptions extends RetryEvents {
  signal?: AbortSignal | undefined;
  classify?: (err: unknown) => Verdict;
  maxAttempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Stop retrying when this much time has passed since the first attempt. */
  maxElapsedMs?: number;
  budget?: RetryBudget | undefined;
  /** Injectable for tests: returns a number in [0, 1). */
  random?: () => number;
}

/**
 * A Retry-After header (RFC 9110 §10.2.3) in milliseconds from `now`: delay-seconds (`120`) or an HTTP-date
 * (`Wed, 21 Oct 2026 07:28:00 GMT`; a date in the past is 0). Undefined when absent or neither form — a fraction or
 * a negative number is not a Retry-After, and Date.parse would otherwise read `1.5` as a calendar date.
 */
export function parseRetryAfter(value: string | null | undefined, now: number = Date.now()): number | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  if (!/[a-z]/i.test(v)) return undefined;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export const DEFAULT_RETRY = { maxAttempts: 6, baseDelayMs: 100, maxDelayMs: 10_000, maxElapsedMs: 120_000 } as const;

export function backoffDelay(attempt: number, opts: { baseDelayMs: number; maxDelayMs: number; random: () => number; retryAfterMs?: number | undefined }): number {
  const ceiling = Math.min(opts.maxDelayMs, opts.baseDelayMs * 2 ** (attempt - 1));
  const jittered = Math.floor(opts.random() * ceiling);
  // A server that says when to come back knows better than our jitter; still cap it so one header cannot stall us.
  return opts.retryAfterMs !== undefined ? Math.min(Math.max(jittered, opts.retryAfterMs), Math.max(opts.maxDelayMs, opts.retryAfterMs)) : jittered;
}

export async function retry<T>(operation: (info: AttemptInfo) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const maxAttempts = options.maxAttempts ?? DEFAULT_RETRY.maxAttempts;
  const baseDelayMs = options.baseDelayMs ?? DEFAULT_RETRY.baseDelayMs;
  const maxDelayMs = options.maxDelayMs ?? DEFAULT_RETRY.maxDelayMs;
  const maxElapsedMs = options.maxElapsedMs ?? DEFAULT_RETRY.maxElapsedMs;
  const classifier = options.classify ?? classify;
  const random = options.random ?? Math.random;
  const signal = options.signal ?? new AbortController().signal;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) throw new TransshipError('TS_USAGE', `retry: maxAttempts must be an integer ≥ 1, got ${maxAttempts}`);
  if (baseDelayMs < 0 || maxDelayMs < baseDelayMs) throw new TransshipError('TS_USAGE', `retry: need 0 ≤ baseDelayMs ≤ maxDelayMs, got ${baseDelayMs} and ${maxDelayMs}`);

  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    throwIfAborted(signal);
    options.onAttempt?.(attempt);
    try {
      const result = await operation({ attempt, signal });
      if (attempt === 1) options.budget?.refill();
      options.onSuccess?.({ attempt, elapsedMs: Date.now() - started });
      return result;
    } catch (error) {
      throwIfAborted(signal);
      const verdict = classifier(error);
      let delayMs: number | undefined;
      let giveUp: TransshipError | undefined;
      if (!verdict.retryable) {
        giveUp = undefined;
      } else if (attempt >= maxAttempts) {
        giveUp = exhausted('TS_RETRY_EXHAUSTED', `gave up after ${attempt} attempts`, error, attempt);
      } else if (options.budget && !options.budget.tryTake()) {
        giveUp = exhausted('TS_RETRY_BUDGET_EXHAUSTED', `retry budget exhausted after ${attempt} attempt(s): the backend is failing too often`, error, attempt);
      } else {
        delayMs = backoffDelay(attempt, { baseDelayMs, maxDelayMs, random, retryAfterMs: verdict.retryAfterMs });
        if (Date.now() - started + delayMs > maxElapsedMs) {
          delayMs = undefined;
          giveUp = exhausted('TS_RETRY_EXHAUSTED', `gave up after ${attempt} attempts and ${Date.now() - started} ms`, error, attempt);
        }
      }
      options.onFailure?.({ attempt, error, verdict, delayMs });
      if (delayMs === undefined) throw giveUp ?? error;
      try {
        await sleep(delayMs, undefined, { signal });
      } catch {
        throw cancelledError(signal);
      }
    }
  }
}

function exhausted(code: 'TS_RETRY_EXHAUSTED' | 'TS_RETRY_BUDGET_EXHAUSTED', what: string, last: unknown, attempts: number): TransshipError {
  const s = errorSummary(last);
  return new TransshipError(code, `${what}; last error: ${s.code}: ${s.message}`, { cause: last, details: { attempts, lastError: s.code } });
}
