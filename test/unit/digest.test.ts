import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { parseDigest, VerifyingStream, digestOf } from '@transship/core/digest';
import { isTransshipError } from '@transship/core/errors';

const sink = () => new Writable({ write: (_c, _e, cb) => cb() });

test('parseDigest accepts sha256 and sha512, canonical form', () => {
  const h = 'a'.repeat(64);
  assert.equal(parseDigest(`sha256:${h}`).value, `sha256:${h}`);
  assert.equal(parseDigest(`sha512:${'b'.repeat(128)}`).algorithm, 'sha512');
});

test('parseDigest rejects malformed and hostile input with stable codes', () => {
  for (const bad of ['', 'sha256', 'sha256:', `sha256:${'A'.repeat(64)}`, `sha256:${'a'.repeat(63)}`, 'sha256:../../x', `sha256:${'a'.repeat(64)}/..`, ' sha256:x', `sha512:${'a'.repeat(64)}`]) {
    assert.throws(() => parseDigest(bad), (e) => isTransshipError(e, 'TS_INVALID_DIGEST'), bad);
  }
  assert.throws(() => parseDigest(`md5:${'a'.repeat(32)}`), (e) => isTransshipError(e, 'TS_UNSUPPORTED_ALGORITHM'));
});

test('VerifyingStream passes matching bytes and reports the digest', async () => {
  const data = Buffer.from('hello world');
  const v = new VerifyingStream({ expected: digestOf(data), size: data.length });
  await pipeline(Readable.from([data.subarray(0, 3), data.subarray(3)]), v, sink());
  assert.equal(v.digest, digestOf(data));
});

test('VerifyingStream fails at end on a digest mismatch and on short or long content', async () => {
  const data = Buffer.from('hello world');
  await assert.rejects(pipeline(Readable.from([data]), new VerifyingStream({ expected: digestOf('other') }), sink()), (e) => isTransshipError(e, 'TS_DIGEST_MISMATCH'));
  await assert.rejects(pipeline(Readable.from([data]), new VerifyingStream({ expected: digestOf(data), size: 12 }), sink()), (e) => isTransshipError(e, 'TS_SIZE_MISMATCH'));
  await assert.rejects(pipeline(Readable.from([data]), new VerifyingStream({ expected: digestOf(data), size: 5 }), sink()), (e) => isTransshipError(e, 'TS_SIZE_MISMATCH'));
});
