// What a blob GET costs on S3 (Ceph RGW): a plain GET of a blob the instance has not seen lately is ONE GetObject
// (its size comes from the same response), never a HEAD or a listing first; ranges and unknown blobs stay correct.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createTestBucket, requestsDuring, s3TestConfig } from '../support/rgw.js';
import { startTestRegistry, type TestRegistry } from '../support/registry.js';
import { S3Store } from '../../packages/transship/src/store/s3-store.js';
import { StoreMetaStore } from '../../packages/transship/src/registry/meta.js';

const s3 = s3TestConfig();
const cleanups: Array<() => Promise<unknown>> = [];
const data = randomBytes(300 * 1024);
const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
let bucket = '';

function open(): S3Store {
  if (!s3) throw new Error('no test S3');
  const store = new S3Store({ bucket, prefix: 'g', endpoint: s3.endpoint, s3Region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey });
  cleanups.push(() => store.close());
  return store;
}

async function registry(store: S3Store): Promise<TestRegistry> {
  const reg = await startTestRegistry({ store, meta: new StoreMetaStore(store) });
  cleanups.push(() => reg.close());
  await reg.ctx.sweepStaged(); // the start-up sweep's two listings are not what these tests count
  return reg;
}

before(async () => {
  if (!s3) return;
  bucket = await createTestBucket('reg-gets');
  const store = open();
  const put = await store.putBlob(digest, async () => (await import('node:stream')).Readable.from([data]));
  assert.equal(put.status, 'written');
});
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

test('a cold plain GET is one GetObject; the next one too (no HEAD, no listing)', { skip: !s3 }, async () => {
  const store = open();
  const reg = await registry(store);
  for (let i = 0; i < 2; i++) {
    const ops = await requestsDuring(store, async () => {
      const r = await fetch(`${reg.url}/v2/any/repo/blobs/${digest}`);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('content-length'), String(data.length));
      assert.equal(r.headers.get('docker-content-digest'), digest);
      assert.ok(Buffer.from(await r.arrayBuffer()).equals(data));
    });
    assert.deepEqual(ops, { GetObject: 1 }, `GET #${i + 1}`);
  }
});

test('a range GET on a cold instance still answers 206 with the right bytes and Content-Range', { skip: !s3 }, async () => {
  const store = open();
  const reg = await registry(store);
  const r = await fetch(`${reg.url}/v2/any/repo/blobs/${digest}`, { headers: { range: 'bytes=100-199' } });
  assert.equal(r.status, 206);
  assert.equal(r.headers.get('content-range'), `bytes 100-199/${data.length}`);
  assert.ok(Buffer.from(await r.arrayBuffer()).equals(data.subarray(100, 200)));
});

test('an unknown blob: 404 BLOB_UNKNOWN after one GetObject', { skip: !s3 }, async () => {
  const store = open();
  const reg = await registry(store);
  const unknown = `sha256:${'1'.repeat(64)}`;
  const ops = await requestsDuring(store, async () => {
    const r = await fetch(`${reg.url}/v2/any/repo/blobs/${unknown}`);
    assert.equal(r.status, 404);
    assert.equal((JSON.parse(await r.text()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'BLOB_UNKNOWN');
  });
  assert.deepEqual(ops, { GetObject: 1 });
});
