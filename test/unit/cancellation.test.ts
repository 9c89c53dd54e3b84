// One cancellation check (core/errors.ts throwIfAborted): every step boundary answers a fired signal with
// TS_CANCELLED carrying the signal's reason, whichever module checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { throwIfAborted, isAbortError } from '@transship/core/errors';
import { retry } from '@transship/core/retry';
import { BoundedQueue } from '@transship/containerd/watch/queue';

test('throwIfAborted: nothing before the signal fires, TS_CANCELLED with the reason after', () => {
  const ac = new AbortController();
  throwIfAborted(ac.signal);
  throwIfAborted(undefined);
  ac.abort(new Error('SIGTERM received'));
  assert.throws(() => throwIfAborted(ac.signal), (e: unknown) => isAbortError(e) && (e as { code?: string }).code === 'TS_CANCELLED' && (e as Error).message.includes('SIGTERM received'));
});

test('modules that check at step boundaries answer TS_CANCELLED: retry, the watch queue', async () => {
  const ac = new AbortController();
  ac.abort();
  let ran = false;
  await assert.rejects(retry(async () => { ran = true; }, { signal: ac.signal }), { code: 'TS_CANCELLED' });
  assert.equal(ran, false, 'no attempt after cancellation');
  const q = new BoundedQueue<number>(4);
  await assert.rejects(q.wait(ac.signal), { code: 'TS_CANCELLED' });
});
