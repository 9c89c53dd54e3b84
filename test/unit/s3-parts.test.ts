// The part uploader shared by both multipart paths: bounded parts in flight, ordered completion list, the first
// failure cancels the rest, and only its own buffers are recycled.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PartUploader, type SendPart } from '../../packages/transship/src/store/s3-parts.js';

const SIZE = 16;

test('parts: at most `concurrency` in flight; finish() lists every part in order', async () => {
  let inflight = 0;
  let peak = 0;
  const send: SendPart = async (n) => {
    inflight++;
    peak = Math.max(peak, inflight);
    await new Promise((r) => setTimeout(r, 5 * ((n * 7) % 3)));
    inflight--;
    return `etag-${n}`;
  };
  const up = new PartUploader(send, 2, SIZE);
  for (let i = 0; i < 7; i++) await up.add(Buffer.alloc(SIZE, i));
  const parts = await up.finish();
  assert.equal(peak, 2);
  assert.deepEqual(parts.map((p) => p.PartNumber), [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(parts[3]?.ETag, 'etag-4');
  assert.equal(up.bytes, 7 * SIZE);
});

test('parts: a failed part cancels the others and is what add()/finish() throw', async () => {
  const seen: AbortSignal[] = [];
  const send: SendPart = async (n, _b, signal) => {
    seen.push(signal);
    if (n === 2) throw new Error('part 2 failed');
    await new Promise((r) => setTimeout(r, 20));
    return 'x';
  };
  const up = new PartUploader(send, 4, SIZE);
  await up.add(Buffer.alloc(SIZE));
  await up.add(Buffer.alloc(SIZE));
  await assert.rejects(up.finish(), /part 2 failed/);
  assert.ok(seen.every((s) => s.aborted), 'every part saw the cancellation');
  await assert.rejects(up.add(Buffer.alloc(SIZE)), /part 2 failed/);
});

test("parts: buffers from buffer() are reused after their part is answered; a caller's own buffers are not kept", async () => {
  const up = new PartUploader(async () => 'x', 1, SIZE);
  const first = up.buffer();
  await up.add(first);
  await up.finish();
  assert.equal(up.buffer(), first, "the finished part's buffer comes back");
  const own = Buffer.alloc(SIZE);
  await up.add(own);
  await up.finish();
  assert.notEqual(up.buffer(), own, 'a buffer the caller allocated is never handed out again');
});
