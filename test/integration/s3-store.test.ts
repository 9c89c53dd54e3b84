// The S3 store against real Ceph RGW: the shared conformance suite (small multipart threshold so multipart runs
// too), plus S3-specific claims: conditional writes, bodies damaged in transit, multipart abort, batch existence cost, errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { S3Store, type S3StoreOptions } from '../../src/store/s3-store.js';
import { digestOf } from '../../src/core/digest.js';
import { isTransshipError, type ErrorCode } from '../../src/core/errors.js';
import { fileStream } from '../../src/core/file-stream.js';
import { blobStoreConformance } from '../support/store-conformance.js';
import { createTestBucket, s3TestConfig, testS3Client } from '../support/rgw.js';

const cfg = s3TestConfig();
if (!cfg) throw new Error('TRANSSHIP_TEST_S3_* not set: run through `npm test`');
const MiB = 1024 * 1024;
const stores: S3Store[] = [];

function storeOn(bucket: string, extra: Partial<S3StoreOptions> = {}): S3Store {
  const s = new S3Store({
    bucket,
    prefix: 'ts',
    endpoint: cfg!.endpoint,
    accessKeyId: cfg!.accessKeyId,
    secretAccessKey: cfg!.secretAccessKey,
    s3Region: cfg!.region,
    multipartThreshold: 8 * MiB,
    partSize: 5 * MiB,
    partConcurrency: 3,
    retry: { baseDelayMs: 10, maxDelayMs: 100, maxElapsedMs: 5000 },
    ...extra,
  });
  stores.push(s);
  return s;
}

blobStoreConformance('s3 store (RGW)', { make: async () => storeOn(await createTestBucket('conf')), largeBlobSize: 8 * MiB });

async function multipartUploads(bucket: string): Promise<number> {
  const c = testS3Client();
  try {
    const out = await c.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    return out.Uploads?.length ?? 0;
  } finally {
    c.destroy();
  }
}

async function keys(bucket: string): Promise<string[]> {
  const c = testS3Client();
  try {
    const out = await c.send(new ListObjectsV2Command({ Bucket: bucket }));
    return (out.Contents ?? []).map((o) => o.Key ?? '').sort();
  } finally {
    c.destroy();
  }
}

test('s3: a small blob costs exactly one PutObject; a second writer gets 412 → exists, no second transfer', async () => {
  const bucket = await createTestBucket('cond');
  const a = storeOn(bucket);
  const b = storeOn(bucket);
  const data = randomBytes(200_000);
  const d = digestOf(data);
  assert.equal((await a.putBlob(d, () => Readable.from([data]))).status, 'written');
  assert.deepEqual(a.requestCounts(), { PutObject: 1 });
  assert.equal((await b.putBlob(d, () => Readable.from([data]))).status, 'exists');
  assert.deepEqual(b.requestCounts(), { PutObject: 1 });
  assert.deepEqual(await keys(bucket), [`ts/blobs/sha256/${d.slice(7)}`], 'no temporary objects');
});

test('s3: a digest mismatch on a multipart blob aborts the upload (nothing billing, nothing visible, no claim left)', async () => {
  const bucket = await createTestBucket('mpabort');
  const s = storeOn(bucket);
  const data = randomBytes(12 * MiB);
  await assert.rejects(s.putBlob(digestOf('wrong'), () => Readable.from([data]), { size: data.length }), (e) => isTransshipError(e, 'TS_DIGEST_MISMATCH'));
  assert.equal(await multipartUploads(bucket), 0);
  assert.deepEqual(await keys(bucket), []);
  assert.equal(s.requestCounts().AbortMultipartUpload, 1);
});

test('s3: cancelling a multipart upload mid-stream aborts it within 2 s', async () => {
  const bucket = await createTestBucket('mpcancel');
  const s = storeOn(bucket);
  const ac = new AbortController();
  const total = 40 * MiB;
  const slow = () =>
    Readable.from(
      (async function* () {
        for (let sent = 0; sent < total; sent += MiB) {
          if (sent === 12 * MiB) setTimeout(() => ac.abort(new Error('SIGINT')), 0);
          yield randomBytes(MiB);
          await new Promise((r) => setTimeout(r, 20));
        }
      })(),
    );
  const started = Date.now();
  await assert.rejects(s.putBlob(digestOf('x'), slow, { size: total, signal: ac.signal }), (e) => isTransshipError(e, 'TS_CANCELLED'));
  const abortedAt = Date.now();
  assert.ok(abortedAt - started < 10_000);
  assert.equal(await multipartUploads(bucket), 0, 'multipart upload aborted');
  assert.deepEqual(await keys(bucket), [], 'claim released, nothing visible');
});

test('s3: concurrent writers of one large blob transfer it once (claim), all succeed', async () => {
  const bucket = await createTestBucket('claim');
  const data = randomBytes(10 * MiB);
  const d = digestOf(data);
  const writers = [storeOn(bucket), storeOn(bucket), storeOn(bucket)];
  const results = await Promise.all(writers.map((w) => w.putBlob(d, () => Readable.from([data]), { size: data.length })));
  assert.equal(results.filter((r) => r.status === 'written').length, 1);
  assert.equal(writers.reduce((n, w) => n + (w.requestCounts().CompleteMultipartUpload ?? 0), 0), 1);
  assert.deepEqual(await keys(bucket), [`ts/blobs/sha256/${d.slice(7)}`]);
});

test('s3: batch existence check of many digests costs one ListObjectsV2 page in a small store', async () => {
  const bucket = await createTestBucket('batch');
  const s = storeOn(bucket);
  const present: string[] = [];
  for (let i = 0; i < 20; i++) {
    const b = Buffer.from(`b${i}`);
    present.push(digestOf(b));
    await s.putBlob(digestOf(b), () => Readable.from([b]));
  }
  const checker = storeOn(bucket);
  const wanted = [...present, ...Array.from({ length: 30 }, (_, i) => digestOf(`absent${i}`))];
  const found = await checker.statBlobs(wanted);
  assert.equal(found.size, 20);
  assert.deepEqual(checker.requestCounts(), { ListObjectsV2: 1 });
});

test('s3: wrong credentials are fatal at once (no retries), missing bucket and unreachable endpoint have clear codes', async () => {
  const bucket = await createTestBucket('errs');
  const bad = storeOn(bucket, { secretAccessKey: 'wrong-secret-wrong-secret-wrong-secret00' });
  await assert.rejects(bad.statBlob(digestOf('x')), (e) => isTransshipError(e) && (e.code === 'TS_ACCESS_DENIED' || e.code === 'TS_BACKEND_REJECTED'));
  assert.equal(bad.retries, 0);
  const data = Buffer.from('x');
  await assert.rejects(bad.putBlob(digestOf(data), () => Readable.from([data])), (e) => isTransshipError(e, 'TS_ACCESS_DENIED'));
  assert.equal(bad.requestCounts().PutObject, 1, 'a 403 is never retried');
  const nobucket = storeOn('no-such-bucket-here');
  await assert.rejects(nobucket.putBlob(digestOf(data), () => Readable.from([data])), (e) => isTransshipError(e, 'TS_NO_SUCH_BUCKET') && /bucket does not exist/.test(e.message));
  const down = storeOn(bucket, { endpoint: 'http://127.0.0.1:9', retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 5 } });
  await assert.rejects(down.statBlob(digestOf('x')), (e) => isTransshipError(e, 'TS_RETRY_EXHAUSTED') && /ECONNREFUSED|cannot reach/.test(e.message));
  assert.equal(down.requestCounts().HeadObject, 3);
});

test.after(async () => {
  for (const s of stores) await s.close();
});

test('a backend that stops answering: the idle socket times out and the request is retried; for good, TS_RETRY_EXHAUSTED naming the timeout', async () => {
  const { startS3Proxy } = await import('../support/s3-proxy.js');
  const bucket = await createTestBucket('idle');
  const data = randomBytes(64 * 1024);
  // The first PutObject gets no answer for 20 s; the store gives up on it after 2 s of silence and retries. (2 s,
  // not less: on a loaded CI machine RGW itself can be silent for a few hundred ms.)
  const once = await startS3Proxy({ target: cfg.endpoint, faults: { rate: 1, kinds: ['delay'], delayMs: 20_000, operations: ['PutObject'], limit: 1 } });
  try {
    const store = storeOn(bucket, { endpoint: once.url, idleTimeoutMs: 2000 });
    const out = await store.putBlob(digestOf(data), () => Readable.from([data]));
    assert.equal(out.status, 'written');
    assert.ok(store.retries >= 1, 'the silent attempt timed out and was retried');
    assert.equal(once.counts().faultedByKind.delay, 1);
    const back = Buffer.concat(await (await store.getBlob(digestOf(data))).toArray());
    assert.ok(back.equals(data));
  } finally {
    await once.close();
  }
  const never = await startS3Proxy({ target: cfg.endpoint, faults: { rate: 1, kinds: ['delay'], delayMs: 60_000, operations: ['HeadObject'] } });
  try {
    const store = storeOn(bucket, { endpoint: never.url, idleTimeoutMs: 1000, retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 5 } });
    await assert.rejects(store.statBlob(digestOf(data)), (e) => isTransshipError(e, 'TS_RETRY_EXHAUSTED') && /timed out/.test(e.message));
    assert.equal(store.requestCounts().HeadObject, 2);
  } finally {
    await never.close();
  }
});

test('a body damaged on its way to S3 is refused by RGW (SigV4 signs its sha256), retried, and never stored damaged', async () => {
  const { startS3Proxy } = await import('../support/s3-proxy.js');
  const bucket = await createTestBucket('damage');
  const small = randomBytes(64 * 1024);
  const large = randomBytes(12 * MiB); // multipart: 3 parts of ≤ 5 MiB
  const once = await startS3Proxy({ target: cfg.endpoint, faults: { rate: 1, kinds: ['corruptUpload'], operations: ['UploadPart'], limit: 1 } });
  const onceSmall = await startS3Proxy({ target: cfg.endpoint, faults: { rate: 1, kinds: ['corruptUpload'], operations: ['PutObject'], limit: 1 } });
  const always = await startS3Proxy({ target: cfg.endpoint, faults: { rate: 1, kinds: ['corruptUpload'], operations: ['PutObject'] } });
  try {
    for (const [proxy, data] of [[onceSmall, small], [once, large]] as const) {
      const store = storeOn(bucket, { endpoint: proxy.url });
      assert.equal((await store.putBlob(digestOf(data), () => Readable.from([data]))).status, 'written');
      assert.equal(proxy.counts().faultedByKind.corruptUpload, 1, 'one request body was damaged');
      assert.equal(store.retries, 1, 'the refused request was retried once');
      const back = Buffer.concat(await (await store.getBlob(digestOf(data))).toArray());
      assert.ok(back.equals(data), 'what is stored is what was sent, not the damaged bytes');
    }
    const other = randomBytes(1000);
    const store = storeOn(bucket, { endpoint: always.url, retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 5 } });
    await assert.rejects(store.putBlob(digestOf(other), () => Readable.from([other])), (e) => isTransshipError(e, 'TS_RETRY_EXHAUSTED') && /damaged in transit/.test(e.message));
    assert.equal(await storeOn(bucket).statBlob(digestOf(other)), undefined, 'nothing stored');
  } finally {
    await Promise.all([once.close(), onceSmall.close(), always.close()]);
  }
});

test('blob GETs: S3 errors keep their codes, 503s and silent sockets are retried, ranges work, each attempt counts once', async () => {
  const { startS3Proxy } = await import('../support/s3-proxy.js');
  const bucket = await createTestBucket('gets');
  const data = randomBytes(3 * MiB);
  const d = digestOf(data);
  await storeOn(bucket).putBlob(d, () => Readable.from([data]));

  const bad = storeOn(bucket, { secretAccessKey: 'wrong-secret-wrong-secret-wrong-secret00' });
  await assert.rejects(bad.getBlob(d), (e) => isTransshipError(e, 'TS_ACCESS_DENIED'));
  assert.deepEqual([bad.retries, bad.requestCounts().GetObject], [0, 1], 'a 403 is not retried');
  await assert.rejects(storeOn('no-such-bucket-here').getBlob(d), (e) => isTransshipError(e, 'TS_NO_SUCH_BUCKET'));
  await assert.rejects(storeOn(bucket).getBlob(digestOf('absent')), (e) => isTransshipError(e, 'TS_BLOB_UNKNOWN'));
  const ranged = Buffer.concat(await (await storeOn(bucket).getBlob(d, { range: { start: 100, end: 199 } })).toArray());
  assert.ok(ranged.equals(data.subarray(100, 200)), 'a range GET returns exactly the range');

  const flaky = await startS3Proxy({ target: cfg.endpoint, faults: { rate: 1, kinds: ['slowdown503'], operations: ['GetObject'], limit: 2 } });
  const silent = await startS3Proxy({ target: cfg.endpoint, faults: { rate: 1, kinds: ['delay'], delayMs: 20_000, operations: ['GetObject'], limit: 1 } });
  try {
    const s = storeOn(bucket, { endpoint: flaky.url });
    const { stream, size } = await s.openBlob(d);
    assert.equal(size, data.length);
    assert.ok(Buffer.concat(await stream.toArray()).equals(data));
    assert.deepEqual([s.retries, s.requestCounts().GetObject, flaky.counts().byOperation.GetObject], [2, 3, 3], 'two 503s retried; every attempt counted once');
    const quiet = storeOn(bucket, { endpoint: silent.url, idleTimeoutMs: 1500 });
    assert.ok(Buffer.concat(await (await quiet.getBlob(d)).toArray()).equals(data));
    assert.equal(quiet.retries, 1, 'the silent attempt timed out and was retried');
  } finally {
    await Promise.all([flaky.close(), silent.close()]);
  }
});

test('a file source is read straight into the part buffers (the stream is never started); wrong bytes, short and long files still fail and leave nothing', async () => {
  const bucket = await createTestBucket('file');
  const dir = await mkdtemp(join(tmpdir(), 'transship-file-src-'));
  const data = randomBytes(12 * MiB + 12345); // 3 parts of 5 MiB, the last one short
  const path = join(dir, 'blob');
  await writeFile(path, Buffer.concat([Buffer.from('HEADER'), data, Buffer.from('TRAILER')]));
  const store = storeOn(bucket);
  // A range of the file, as an archive entry is read.
  const range = { start: 6, end: 6 + data.length - 1 };
  const src = fileStream(await open(path, 'r'), range);
  const seen: number[] = [];
  const out = await store.putBlob(digestOf(data), () => src, { size: data.length, onProgress: (n) => seen.push(n) });
  assert.equal(out.status, 'written');
  assert.equal(src.readableDidRead, false, 'the stream itself was never read: the parts were filled from the file');
  assert.ok(src.destroyed, 'the file is closed');
  assert.equal(seen.at(-1), data.length);
  assert.ok(Buffer.concat(await (await store.getBlob(digestOf(data))).toArray()).equals(data));

  const other = randomBytes(10 * MiB);
  const cases: Array<[string, Parameters<typeof fileStream>[1], number, ErrorCode]> = [
    ['wrong bytes', range, data.length, 'TS_DIGEST_MISMATCH'],
    ['a file shorter than declared', { start: 6, end: 6 + 9 * MiB }, 10 * MiB, 'TS_SIZE_MISMATCH'],
    ['a file longer than declared', undefined, 10 * MiB, 'TS_SIZE_MISMATCH'],
  ];
  for (const [what, r, size, code] of cases) {
    const s = fileStream(await open(path, 'r'), r);
    await assert.rejects(store.putBlob(digestOf(other), () => s, { size }), (e) => isTransshipError(e, code), what);
    assert.ok(s.destroyed, `${what}: the file is closed`);
  }
  assert.equal(await store.statBlob(digestOf(other)), undefined, 'nothing visible');
  assert.equal(await multipartUploads(bucket), 0, 'no multipart upload left billing');
});

test('a staged blob whose last part fails during commit: the error surfaces, no claim is left to block writers, nothing is visible', async () => {
  const { startS3Proxy } = await import('../support/s3-proxy.js');
  const bucket = await createTestBucket('stagefail');
  const data = randomBytes(7 * MiB); // one whole 5 MiB part while streaming, the 2 MiB rest at commit
  // 403 is fatal (not retried): the part sent by commit's finish() is the second UploadPart.
  const proxy = await startS3Proxy({ target: cfg.endpoint });
  try {
    const store = storeOn(bucket, { endpoint: proxy.url });
    const stage = await store.stageBlob();
    await stage.addPart(data.subarray(0, 5 * MiB));
    proxy.setFaults({ rate: 1, kinds: ['forbidden403'], operations: ['UploadPart'] });
    await stage.addPart(data.subarray(5 * MiB));
    await assert.rejects(stage.commit(digestOf(data), data.length), (e: unknown) => isTransshipError(e) && e.code !== 'TS_INTERNAL');
    proxy.setFaults(undefined);
    assert.ok(proxy.log.some((e) => e.operation === 'PutObject' && e.path.includes('/claims/')), 'the claim was taken while the part went out');
    assert.deepEqual((await keys(bucket)).filter((k) => !k.startsWith('ts/_uploads/')), [], 'no claim marker, no blob');
    assert.equal(await multipartUploads(bucket), 0, 'the multipart upload was aborted');
    // The digest is free for the next writer at once (a leaked claim would make it wait for the lease).
    const t0 = Date.now();
    assert.equal((await storeOn(bucket).putBlob(digestOf(data), () => Readable.from([data]), { size: data.length })).status, 'written');
    assert.ok(Date.now() - t0 < 30_000, 'no wait for a lease');
  } finally {
    await proxy.close();
  }
});
