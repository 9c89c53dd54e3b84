// The transfer core end to end on real Ceph RGW: request budgets per push, dedup across images, byte-identical
// round trips, faults injected by a loopback proxy, concurrent copies of one image, and bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { S3Store } from '../../packages/transship/src/store/s3-store.js';
import { StoreDestination } from '../../packages/transship/src/transfer/store-destination.js';
import { StoreSource } from '../../packages/transship/src/transfer/store-source.js';
import { copyImage } from '../../packages/transship/src/transfer/copy.js';
import { openOciLayoutSource, OciLayoutDestination } from '../../packages/transship/src/transfer/sources/oci-layout.js';
import { PresenceCache } from '../../packages/transship/src/index/presence-cache.js';
import { isTransshipError } from '@transship/core/errors';
import '../../packages/transship/src/telemetry/metrics.js';
import '@transship/core/retry-metrics';
import { processMetrics } from '@transship/core/metrics-registry';

const registry = processMetrics();
import { makeOciLayout, type BuiltImage } from '../support/images.js';
import { createTestBucket, s3TestConfig } from '../support/rgw.js';
import { startS3Proxy } from '../support/s3-proxy.js';

const cfg = s3TestConfig();
if (!cfg) throw new Error('TRANSSHIP_TEST_S3_* not set: run through `npm test`');
const tmp = await mkdtemp(join(tmpdir(), 'ts-copy-'));
test.after(() => rm(tmp, { recursive: true, force: true }));

function s3(bucket: string, endpoint = cfg!.endpoint): S3Store {
  return new S3Store({
    bucket, prefix: 'reg', endpoint, accessKeyId: cfg!.accessKeyId, secretAccessKey: cfg!.secretAccessKey, s3Region: cfg!.region,
    retry: { baseDelayMs: 5, maxDelayMs: 50, maxElapsedMs: 30_000, maxAttempts: 10 },
  });
}

async function push(img: BuiltImage, store: S3Store, repo: string, tag: string, cache?: PresenceCache) {
  const src = await openOciLayoutSource(img.path, { tag: img.tag });
  try {
    return await copyImage(src, new StoreDestination(store, repo, tag, cache));
  } finally {
    await src.close();
  }
}

const total = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);

// ~30 MB: three ~10 MB layers + config, as in the benchmark.
const layerA = { seed: 'layer-a', size: 10_000_000, gzip: false };
const layerB = { seed: 'layer-b', size: 10_000_000, gzip: false };
const layerC = { seed: 'layer-c', size: 10_000_000, gzip: false };
const layerD = { seed: 'layer-d', size: 3_000_000, gzip: false };

test('push budget: fresh image ≤ 8 requests, sharing 2 layers ≤ 6, identical re-copy ≤ 2 (cold cache)', async () => {
  const bucket = await createTestBucket('budget');
  const first = await makeOciLayout(join(tmp, 'first'), { tag: 'v1', layers: [layerA, layerB, layerC], seed: 'first' });
  const second = await makeOciLayout(join(tmp, 'second'), { tag: 'v1', layers: [layerA, layerB, layerD], seed: 'second' });

  let store = s3(bucket);
  const s1 = await push(first, store, 'app/one', 'v1');
  assert.equal(s1.blobs.uploaded, 4);
  assert.ok(total(store.requestCounts()) <= 8, `fresh image: ${JSON.stringify(store.requestCounts())}`);
  await store.close();

  store = s3(bucket);
  const s2 = await push(second, store, 'app/two', 'v1');
  assert.equal(s2.blobs.uploaded, 2, 'config and the new layer only');
  assert.equal(s2.blobs.skipped.exists, 2);
  assert.ok(total(store.requestCounts()) <= 6, `shared layers: ${JSON.stringify(store.requestCounts())}`);
  await store.close();

  store = s3(bucket);
  const s3again = await push(first, store, 'app/one', 'v1');
  assert.equal(s3again.blobs.uploaded, 0);
  assert.ok(total(store.requestCounts()) <= 2, `re-copy: ${JSON.stringify(store.requestCounts())}`);
  assert.equal(store.requestCounts().PutObject, undefined, 'nothing written on an identical re-copy');
  await store.close();

  // Warm cache: the blob check is skipped entirely.
  const cache = new PresenceCache();
  store = s3(bucket);
  await push(first, store, 'app/one', 'v1', cache);
  await store.close();
  store = s3(bucket);
  await push(first, store, 'app/one', 'v1', cache);
  assert.ok(total(store.requestCounts()) <= 1, `warm re-copy: ${JSON.stringify(store.requestCounts())}`);
  await store.close();
});

test('round trip: oci → s3 → oci gives byte-identical blobs, multi-arch index walked whole', async () => {
  const bucket = await createTestBucket('roundtrip');
  const img = await makeOciLayout(join(tmp, 'multi'), { tag: 'multi', multiArch: true, layers: 2, layerSize: 300_000, seed: 'multi' });
  const store = s3(bucket);
  const summary = await push(img, store, 'multi/arch', 'latest');
  assert.equal(summary.manifests, 3, 'index + two platform manifests');
  assert.equal(summary.blobs.total, img.blobs.length);
  const out = join(tmp, 'multi-out');
  const dest = await OciLayoutDestination.open(out, { tag: 'back' });
  const back = await copyImage(new StoreSource(store, 'multi/arch', 'latest'), dest);
  assert.equal(back.digest, img.manifestDigest);
  for (const b of [...img.blobs, ...img.manifests.map((m) => m.descriptor), img.root.descriptor]) {
    const [alg, hex] = b.digest.split(':') as [string, string];
    assert.deepEqual(await readFile(join(out, 'blobs', alg, hex)), await readFile(join(img.path, 'blobs', alg, hex)), b.digest);
  }
  await store.close();
});

test('faults: 20% of requests answered 503 SlowDown, reset or delayed — the copy completes byte-identical and retries are counted', async () => {
  const bucket = await createTestBucket('faults');
  const proxy = await startS3Proxy({ target: cfg.endpoint, faults: { rate: 0.2, kinds: ['slowdown503', 'reset', 'delay'], delayMs: 300, seed: 7 } });
  const img = await makeOciLayout(join(tmp, 'faulty'), { tag: 'f', layers: 6, layerSize: 500_000, seed: 'faulty' });
  const before = (await registry.getSingleMetric('upload_retry_total')?.get())?.values.filter((v) => v.labels.status === 'success').reduce((a, v) => a + v.value, 0) ?? 0;
  const store = s3(bucket, proxy.url);
  const summary = await push(img, store, 'faulty', 'f');
  assert.equal(summary.blobs.total, img.blobs.length);
  assert.ok(proxy.counts().faulted > 0, 'faults were injected');
  assert.ok(store.retries > 0, 'retries happened');
  const after = (await registry.getSingleMetric('upload_retry_total')?.get())?.values.filter((v) => v.labels.status === 'success').reduce((a, v) => a + v.value, 0) ?? 0;
  assert.ok(after > before, 'upload_retry_total{status="success"} counted the recoveries');
  await store.close();
  await proxy.close();
  // Verify through a clean path: every byte as in the source.
  const clean = s3(bucket);
  const out = join(tmp, 'faulty-out');
  await copyImage(new StoreSource(clean, 'faulty', 'f'), await OciLayoutDestination.open(out, { tag: 'f' }));
  for (const b of img.blobs) {
    const [alg, hex] = b.digest.split(':') as [string, string];
    assert.deepEqual(await readFile(join(out, 'blobs', alg, hex)), await readFile(join(img.path, 'blobs', alg, hex)));
  }
  await clean.close();
});

test('faults: 403s stop the copy at once with TS_ACCESS_DENIED, no retries, nothing tagged', async () => {
  const bucket = await createTestBucket('denied');
  const proxy = await startS3Proxy({ target: cfg.endpoint, faults: { rate: 1, kinds: ['forbidden403'], seed: 1 } });
  const img = await makeOciLayout(join(tmp, 'denied'), { tag: 'd', layers: 3, layerSize: 10_000, seed: 'denied' });
  const store = s3(bucket, proxy.url);
  await assert.rejects(push(img, store, 'denied', 'd'), (e) => isTransshipError(e, 'TS_ACCESS_DENIED'));
  assert.equal(proxy.counts().total, 1, 'the first 403 ended the copy');
  assert.equal(store.retries, 0);
  await store.close();
  await proxy.close();
  const clean = s3(bucket);
  assert.equal(await clean.getTag('denied', 'd'), undefined);
  await clean.close();
});

test('four concurrent copies of one image into one bucket all succeed; every blob is PUT successfully exactly once', async () => {
  const bucket = await createTestBucket('race');
  const proxy = await startS3Proxy({ target: cfg.endpoint });
  const img = await makeOciLayout(join(tmp, 'race'), { tag: 'r', layers: 4, layerSize: 2_000_000, seed: 'race' });
  const stores = [0, 1, 2, 3].map(() => s3(bucket, proxy.url));
  const results = await Promise.all(stores.map((s, i) => push(img, s, `race/c${i}`, 'r')));
  for (const r of results) assert.equal(r.digest, img.manifestDigest);
  const successfulBlobPuts = new Map<string, number>();
  for (const entry of proxy.log) {
    if (entry.operation === 'PutObject' && entry.status === 200 && entry.path.includes('/blobs/sha256/')) {
      successfulBlobPuts.set(entry.path, (successfulBlobPuts.get(entry.path) ?? 0) + 1);
    }
  }
  assert.equal(successfulBlobPuts.size, img.blobs.length + 1, 'every blob and the manifest stored');
  for (const [path, n] of successfulBlobPuts) assert.equal(n, 1, `${path} PUT ${n} times`);
  for (const s of stores) await s.close();
  await proxy.close();
});

test('bad input: a layout missing a blob fails with TS_BLOB_UNKNOWN/TS_NOT_FOUND and nothing becomes visible', async () => {
  const bucket = await createTestBucket('missing');
  const img = await makeOciLayout(join(tmp, 'missing'), { tag: 'm', layers: 2, layerSize: 1000, seed: 'missing' });
  const victim = img.layers[1]!;
  await unlink(join(img.path, 'blobs', 'sha256', victim.digest.slice(7)));
  const store = s3(bucket);
  await assert.rejects(push(img, store, 'missing', 'm'), (e) => isTransshipError(e) && ['TS_BLOB_UNKNOWN', 'TS_NOT_FOUND', 'TS_LAYOUT_INVALID'].includes(e.code));
  assert.equal(await store.getTag('missing', 'm'), undefined, 'no tag');
  assert.equal(await store.statBlob(img.manifestDigest), undefined, 'no manifest');
  await store.close();
});
