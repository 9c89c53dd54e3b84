// The retry discipline: classification, backoff with full jitter and caps, Retry-After, budget, cancellation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { retry, classify, backoffDelay, parseRetryAfter, RetryBudget } from '@transship/core/retry';
import { TransshipError, isTransshipError } from '@transship/core/errors';
import { mapS3Error } from '../../packages/transship/src/store/s3-errors.js';

const s3err = (name: string, status: number) => Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
const ctx = { store: 's3://b', operation: 'PutObject' };

test('classify: transient network, HTTP and S3 errors are retryable', () => {
  for (const e of [
    Object.assign(new Error('x'), { code: 'ECONNRESET' }),
    Object.assign(new Error('x'), { code: 'ETIMEDOUT' }),
    Object.assign(new Error('x'), { code: 'EPIPE' }),
    new Error('socket hang up'),
    mapS3Error(s3err('SlowDown', 503), ctx),
    mapS3Error(s3err('RequestTimeout', 400), ctx),
    mapS3Error(s3err('InternalError', 500), ctx),
    mapS3Error(s3err('Unknown', 502), ctx),
    mapS3Error(s3err('Unknown', 504), ctx),
    mapS3Error(s3err('Unknown', 429), ctx),
    mapS3Error(s3err('Unknown', 408), ctx),
  ]) assert.equal(classify(e).retryable, true, String((e).name));
});

test('classify: client errors, auth, missing bucket and digest errors are fatal', () => {
  for (const [e, code] of [
    [mapS3Error(s3err('AccessDenied', 403), ctx), 'TS_ACCESS_DENIED'],
    [mapS3Error(s3err('InvalidAccessKeyId', 403), ctx), 'TS_ACCESS_DENIED'],
    [mapS3Error(s3err('NoSuchBucket', 404), ctx), 'TS_NO_SUCH_BUCKET'],
    [mapS3Error(s3err('Whatever', 400), ctx), 'TS_BACKEND_REJECTED'],
    [mapS3Error(s3err('Unknown', 401), ctx), 'TS_ACCESS_DENIED'],
    [new TransshipError('TS_DIGEST_MISMATCH', 'x'), 'TS_DIGEST_MISMATCH'],
    [new TransshipError('TS_INVALID_NAME', 'x'), 'TS_INVALID_NAME'],
  ] as const) {
    assert.equal(classify(e).retryable, false);
    assert.equal((e).code, code);
  }
  assert.equal(classify(new Error('a bug')).retryable, false, 'unknown errors are fatal: retrying a bug only hides it');
});

test('backoff: full jitter under an exponential, capped ceiling; Retry-After raises the delay', () => {
  const opts = { baseDelayMs: 100, maxDelayMs: 1000 };
  assert.equal(backoffDelay(1, { ...opts, random: () => 0.999 }), 99);
  assert.equal(backoffDelay(3, { ...opts, random: () => 0.999 }), 399);
  assert.equal(backoffDelay(10, { ...opts, random: () => 0.999 }), 999, 'capped at maxDelay');
  assert.equal(backoffDelay(2, { ...opts, random: () => 0 }), 0, 'full jitter reaches zero');
  assert.equal(backoffDelay(1, { ...opts, random: () => 0, retryAfterMs: 700 }), 700);
});

test('retry: succeeds after transient failures and reports attempts', async () => {
  let n = 0;
  const failures: string[] = [];
  const r = await retry(
    async () => {
      n++;
      if (n < 3) throw Object.assign(new Error('reset'), { code: 'ECONNRESET' });
      return 'ok';
    },
    { baseDelayMs: 1, maxDelayMs: 2, onFailure: (f) => failures.push(f.verdict.reason) },
  );
  assert.equal(r, 'ok');
  assert.equal(n, 3);
  assert.deepEqual(failures, ['ECONNRESET', 'ECONNRESET']);
});

test('retry: fatal errors are thrown at once, never retried', async () => {
  let n = 0;
  await assert.rejects(
    retry(async () => {
      n++;
      throw mapS3Error(s3err('AccessDenied', 403), ctx);
    }, { baseDelayMs: 1 }),
    (e) => isTransshipError(e, 'TS_ACCESS_DENIED'),
  );
  assert.equal(n, 1);
});

test('retry: gives up after maxAttempts with TS_RETRY_EXHAUSTED naming the last error', async () => {
  let n = 0;
  await assert.rejects(
    retry(async () => {
      n++;
      throw Object.assign(new Error('refused'), { code: 'ECONNREFUSED' });
    }, { maxAttempts: 4, baseDelayMs: 1, maxDelayMs: 1 }),
    (e) => isTransshipError(e, 'TS_RETRY_EXHAUSTED') && /ECONNREFUSED/.test(e.message) && e.details.attempts === 4,
  );
  assert.equal(n, 4);
});

test('retry: a shared budget stops a retry storm against a dead backend', async () => {
  const budget = new RetryBudget(10, 5, 1);
  let calls = 0;
  const dead = () => retry(async () => {
    calls++;
    throw Object.assign(new Error('x'), { code: 'ECONNRESET' });
  }, { maxAttempts: 10, baseDelayMs: 0, maxDelayMs: 1, budget });
  await assert.rejects(dead(), (e) => isTransshipError(e, 'TS_RETRY_BUDGET_EXHAUSTED'));
  await assert.rejects(dead(), (e) => isTransshipError(e, 'TS_RETRY_BUDGET_EXHAUSTED'));
  // 10 tokens / 5 per retry = 2 retries in total across both operations, plus each one's first attempt.
  assert.equal(calls, 4);
});

test('retry: cancellation stops the backoff sleep at once and the operation sees the signal', async () => {
  const ac = new AbortController();
  let seen: AbortSignal | undefined;
  const started = Date.now();
  setTimeout(() => ac.abort(new Error('SIGINT')), 30);
  await assert.rejects(
    retry(async ({ signal }) => {
      seen = signal;
      throw Object.assign(new Error('x'), { code: 'ECONNRESET' });
    }, { signal: ac.signal, baseDelayMs: 10_000, maxDelayMs: 10_000, random: () => 0.99 }),
    (e) => isTransshipError(e, 'TS_CANCELLED'),
  );
  assert.ok(Date.now() - started < 1000, 'did not wait for the 10 s backoff');
  assert.equal(seen?.aborted, true);
});

test('retry: validates its options with precise messages', async () => {
  await assert.rejects(retry(async () => 1, { maxAttempts: 0 }), (e) => isTransshipError(e, 'TS_USAGE') && /maxAttempts/.test(e.message));
});

// Two parsers used to disagree (S3 took `1.5` and `-3`, the docker:// source read `1.5` as a calendar date); one now.
test('parseRetryAfter: delay-seconds or an HTTP-date, nothing else', () => {
  const now = Date.parse('Wed, 21 Oct 2026 07:28:00 GMT');
  assert.equal(parseRetryAfter('120', now), 120_000);
  assert.equal(parseRetryAfter(' 0 ', now), 0);
  assert.equal(parseRetryAfter('Wed, 21 Oct 2026 07:28:30 GMT', now), 30_000);
  assert.equal(parseRetryAfter('Wed, 21 Oct 2026 07:00:00 GMT', now), 0, 'a date in the past: now');
  for (const bad of [undefined, null, '', '1.5', '-3', 'soon', '1e3']) assert.equal(parseRetryAfter(bad, now), undefined, String(bad));
  const fromS3 = mapS3Error(Object.assign(new Error('SlowDown'), { name: 'SlowDown', $metadata: { httpStatusCode: 503 }, $response: { headers: { 'retry-after': '7' } } }), ctx);
  assert.equal(fromS3.retryAfterMs, 7000);
});
