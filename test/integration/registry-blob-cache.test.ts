// The registry's local blob cache on S3 (Ceph RGW): a blob pushed through an instance is pulled from that
// instance's disk with no S3 request; another instance on the same bucket reads it from S3 once and then from its
// own disk; bytes that do not match their digest are served as the store has them but never cached.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { createTestBucket, requestsDuring, s3TestConfig, testS3Client } from '../support/rgw.js';
import { startTestRegistry, type TestRegistry } from '../support/registry.js';
import { S3Store } from '../../packages/transship/src/store/s3-store.js';
import { StoreMetaStore } from '../../packages/transship/src/registry/meta.js';

const s3 = s3TestConfig();
const cleanups: Array<() => Promise<unknown>> = [];
let bucket = '';
let work = '';

function blob(size: number): { data: Buffer; digest: string } {
  const data = randomBytes(size);
  return { data, digest: `sha256:${createHash('sha256').update(data).digest('hex')}` };
}

function open(): S3Store {
  if (!s3) throw new Error('no test S3');
  const store = new S3Store({ bucket, prefix: 'c', endpoint: s3.endpoint, s3Region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey });
  cleanups.push(() => store.close());
  return store;
}

async function registry(store: S3Store, name: string): Promise<TestRegistry & { cacheDir: string }> {
  const cacheDir = join(work, name, 'cache');
  const reg = await startTestRegistry({ store, meta: new StoreMetaStore(store), uploadDir: join(work, name), blobCache: { dir: cacheDir, maxBytes: 256 * 1024 * 1024 } });
  cleanups.push(() => reg.close());
  await reg.ctx.sweepStaged(); // the start-up sweep's listings are not what these tests count
  return { ...reg, cacheDir };
}

async function get(reg: TestRegistry, digest: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; range: string | null }> {
  const r = await fetch(`${reg.url}/v2/team/app/blobs/${digest}`, { headers });
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()), range: r.headers.get('content-range') };
}

async function push(reg: TestRegistry, b: { data: Buffer; digest: string }): Promise<void> {
  const r = await fetch(`${reg.url}/v2/team/app/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: b.data, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(r.status, 201, await r.text());
}

before(async () => {
  if (!s3) return;
  bucket = await createTestBucket('reg-cache');
  work = await mkdtemp(join(tmpdir(), 'ts-reg-cache-'));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
});
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

test('a blob pushed through an instance is pulled from its disk: no S3 request, whole or by range', { skip: !s3 }, async () => {
  const store = open();
  const reg = await registry(store, 'a');
  // Over the streaming threshold too: the staged (multipart) commit path adopts its spool the same way.
  for (const b of [blob(300 * 1024), blob(40 * 1024 * 1024)]) {
    await push(reg, b);
    assert.equal(reg.ctx.blobCache?.has(b.digest), b.data.length);
    const ops = await requestsDuring(store, async () => {
      const whole = await get(reg, b.digest);
      assert.equal(whole.status, 200);
      assert.ok(whole.body.equals(b.data));
      const part = await get(reg, b.digest, { range: 'bytes=1000-1999' });
      assert.equal(part.status, 206);
      assert.equal(part.range, `bytes 1000-1999/${b.data.length}`);
      assert.ok(part.body.equals(b.data.subarray(1000, 2000)));
    });
    assert.deepEqual(ops, {}, `${b.data.length} bytes: no S3 request`);
  }
});

for (const size of [2 * 1024 * 1024, 60 * 1024 * 1024]) {
  // 60 MiB, read at full speed: S3 delivers in bursts the page cache takes more slowly for a moment; the fill must
  // hold the client back a little rather than give up (it gave up on every large blob before).
  test(`another instance on the bucket reads a ${size >> 20} MiB blob from S3 once, then from its own disk`, { skip: !s3 }, async () => {
    const b = blob(size);
    const storeA = open();
    await push(await registry(storeA, `push-${size}`), b);
    const storeB = open();
    const reg = await registry(storeB, `cold-${size}`);
    const first = await requestsDuring(storeB, async () => {
      const r = await get(reg, b.digest);
      assert.ok(r.body.equals(b.data));
    });
    assert.deepEqual(first, { GetObject: 1 });
    for (let i = 0; i < 500 && reg.ctx.blobCache?.has(b.digest) === undefined; i++) await sleep(10);
    const second = await requestsDuring(storeB, async () => {
      const r = await get(reg, b.digest);
      assert.ok(r.body.equals(b.data));
    });
    assert.deepEqual(second, {}, 'the second read came from the disk');
  });
}

test('bytes in S3 that do not match their digest are served as they are but not cached', { skip: !s3 }, async () => {
  const b = blob(100_000);
  const damaged = Buffer.from(b.data);
  damaged[0] = (damaged[0] ?? 0) ^ 0xff;
  // Written around transship, as a damaged backend or a foreign writer would leave it.
  const raw = testS3Client();
  cleanups.push(async () => raw.destroy());
  await raw.send(new PutObjectCommand({ Bucket: bucket, Key: `c/blobs/sha256/${b.digest.slice(7)}`, Body: damaged }));
  const store = open();
  const reg = await registry(store, 'damaged');
  const r = await get(reg, b.digest);
  assert.ok(r.body.equals(damaged), 'served as the store has them (the client checks digests too)');
  await sleep(200);
  assert.equal(reg.ctx.blobCache?.has(b.digest), undefined);
  assert.deepEqual(await readdir(reg.cacheDir), [], 'no blob and no fill file left');
});
