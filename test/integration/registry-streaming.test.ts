// Large upload sessions stream to S3 (Ceph RGW) while they arrive: parts go up before the client has sent the last
// byte, the blob appears only after its digest is verified, and every way a session can end (success, wrong digest,
// a chunk cut off, an existing blob, a crash) leaves no multipart upload and no temporary object behind.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ListMultipartUploadsCommand, ListObjectsV2Command, ListPartsCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { createTestBucket, s3TestConfig, testS3Client } from '../support/rgw.js';
import { seededBytes as bytes } from '../support/s3-proxy.js';
import { startTestRegistry, type TestRegistry } from '../support/registry.js';
import { S3Store } from '../../packages/transship/src/store/s3-store.js';
import { StoreMetaStore } from '../../packages/transship/src/registry/meta.js';

const MiB = 1024 * 1024;
const s3 = s3TestConfig();
const cleanups: Array<() => Promise<unknown>> = [];
let bucket = '';
let store: S3Store;
let reg: TestRegistry;

before(async () => {
  if (!s3) return;
  bucket = await createTestBucket('reg-stream');
  store = new S3Store({ bucket, endpoint: s3.endpoint, s3Region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, multipartThreshold: 8 * MiB, partSize: 5 * MiB });
  const spool = await mkdtemp(join(tmpdir(), 'ts-stream-spool-'));
  // Sessions local to this instance (serve.sharedUploads.enabled: false); shared sessions: registry-shared-uploads.test.ts.
  reg = await startTestRegistry({ store, meta: new StoreMetaStore(store), uploadDir: spool, streamUploadsAfterBytes: 8 * MiB, sharedUploads: { enabled: false } });
  cleanups.push(() => store.close(), () => reg.close(), () => rm(spool, { recursive: true, force: true }));
});
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function http(method: string, path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const r = await fetch(`${reg.url}${path}`, { method, headers: { 'content-type': 'application/octet-stream', ...headers }, ...(body ? { body } : {}) });
  return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
}

async function startSession(repo: string): Promise<string> {
  const r = await http('POST', `/v2/${repo}/blobs/uploads/`);
  assert.equal(r.status, 202);
  const location = r.headers.get('location');
  assert.ok(location);
  return location;
}

async function patch(location: string, data: Buffer, start: number): Promise<void> {
  const r = await http('PATCH', location, data, { 'content-range': `${start}-${start + data.length - 1}` });
  assert.equal(r.status, 202, r.body.toString());
}

async function staged(): Promise<Array<{ key: string; parts: number }>> {
  const client = testS3Client();
  try {
    const uploads = (await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? [];
    const out = [];
    for (const u of uploads) {
      // An upload aborted between the two calls is gone: NoSuchUpload (RGW says NoSuchKey).
      const parts = await client.send(new ListPartsCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId })).catch(() => undefined);
      if (parts) out.push({ key: u.Key ?? '', parts: parts.Parts?.length ?? 0 });
    }
    return out;
  } finally {
    client.destroy();
  }
}

async function keys(prefix: string): Promise<string[]> {
  const client = testS3Client();
  try {
    return ((await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))).Contents ?? []).map((o) => o.Key ?? '');
  } finally {
    client.destroy();
  }
}

/** Polls `check` until it returns true (background work finishing), failing with `what` after a while. */
async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await check()) return;
    await sleep(100);
  }
  assert.fail(`timed out waiting until ${what}`);
}

async function nothingStaged(): Promise<void> {
  await eventually('no multipart upload is left', async () => (await staged()).length === 0);
  assert.deepEqual(await keys('_uploads/'), [], 'no temporary object left');
  assert.deepEqual(await keys('claims/'), [], 'no claim marker left');
}

test('a large chunked upload streams its parts to S3 before the last byte arrives; the blob appears only after PUT verifies it', { skip: !s3 }, async () => {
  const data = bytes(1, 23 * MiB);
  const location = await startSession('stream/a');
  await patch(location, data.subarray(0, 12 * MiB), 0);
  await patch(location, data.subarray(12 * MiB), 12 * MiB);
  // Before the digest is known, the whole parts already on disk are in S3 as an invisible staged upload.
  await eventually('4 whole 5 MiB parts are staged', async () => (await staged()).some((u) => u.key.startsWith('_uploads/') && u.parts === 4));
  assert.equal(await store.statBlob(sha(data)), undefined, 'nothing is visible before the digest is verified');
  const copiesBefore = store.requestCounts().CopyObject ?? 0;
  const put = await http('PUT', `${location}?digest=${sha(data)}`);
  assert.equal(put.status, 201, put.body.toString());
  assert.equal((store.requestCounts().CopyObject ?? 0) - copiesBefore, 1, 'the staged upload became the blob by one server-side copy');
  const got = await http('GET', `/v2/stream/a/blobs/${sha(data)}`);
  assert.equal(got.status, 200);
  assert.ok(got.body.equals(data), 'the stored blob is byte-identical');
  await nothingStaged();
});

test('wrong digest on PUT: DIGEST_INVALID, nothing stored, the staged upload aborted', { skip: !s3 }, async () => {
  const data = bytes(2, 14 * MiB);
  const location = await startSession('stream/b');
  await patch(location, data, 0);
  await eventually('parts are staged', async () => (await staged()).length === 1);
  const wrong = sha(Buffer.from('something else'));
  const put = await http('PUT', `${location}?digest=${wrong}`);
  assert.equal(put.status, 400);
  assert.equal((JSON.parse(put.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'DIGEST_INVALID');
  assert.equal(await store.statBlob(sha(data)), undefined);
  assert.equal(await store.statBlob(wrong), undefined);
  await nothingStaged();
});

test('a chunk cut off mid-way: the staged copy is dropped, the session resumes from the spool, the blob is right', { skip: !s3 }, async () => {
  const data = bytes(3, 20 * MiB);
  const location = await startSession('stream/c');
  await patch(location, data.subarray(0, 11 * MiB), 0);
  await eventually('parts are staged', async () => (await staged()).length === 1);
  // Send 3 MiB of the next chunk, then drop the connection.
  await new Promise<void>((resolve) => {
    const url = new URL(`${reg.url}${location}`);
    const req = request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method: 'PATCH', headers: { 'content-type': 'application/octet-stream', 'content-range': `${11 * MiB}-${20 * MiB - 1}`, 'content-length': String(9 * MiB) } });
    req.on('error', () => resolve());
    req.write(data.subarray(11 * MiB, 14 * MiB), () => setTimeout(() => req.destroy(), 200));
    req.on('close', () => resolve());
  });
  await eventually('the session is back at 11 MiB', async () => {
    const status = await http('GET', location);
    return status.headers.get('range') === `0-${11 * MiB - 1}`;
  });
  await eventually('the staged copy is dropped', async () => (await staged()).length === 0);
  await patch(location, data.subarray(11 * MiB), 11 * MiB);
  const put = await http('PUT', `${location}?digest=${sha(data)}`);
  assert.equal(put.status, 201, put.body.toString());
  const got = await http('GET', `/v2/stream/c/blobs/${sha(data)}`);
  assert.ok(got.body.equals(data), 'the blob is the bytes the client meant, not the cut-off chunk');
  await nothingStaged();
});

test('a blob that already exists is not written again when a second session streams it', { skip: !s3 }, async () => {
  const data = bytes(4, 12 * MiB);
  for (const repo of ['stream/d1', 'stream/d2']) {
    const copies = store.requestCounts().CopyObject ?? 0;
    const location = await startSession(repo);
    await patch(location, data, 0);
    const put = await http('PUT', `${location}?digest=${sha(data)}`);
    assert.equal(put.status, 201);
    assert.equal((store.requestCounts().CopyObject ?? 0) - copies, repo.endsWith('1') ? 1 : 0, `${repo}: blob written ${repo.endsWith('1') ? 'once' : 'not again'}`);
  }
  await nothingStaged();
});

test('sweepStaged removes what a crashed instance left (old multipart uploads and temporary objects), not live ones', { skip: !s3 }, async () => {
  const stage = await store.stageBlob();
  await stage.addPart(bytes(5, 5 * MiB));
  const client = testS3Client();
  try {
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `_uploads/${randomUUID()}`, Body: 'left by a crash' }));
    // The old layout's staging prefix is swept too, for one release (a crash before the upgrade).
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `uploads/${randomUUID()}`, Body: 'left by an old version' }));
  } finally {
    client.destroy();
  }
  assert.deepEqual(await store.sweepStaged(3_600_000), { multipart: 0, objects: 0 }, 'young uploads are somebody\'s live push');
  await sleep(1100); // S3 timestamps have one-second resolution
  assert.deepEqual(await store.sweepStaged(0), { multipart: 1, objects: 2 });
  await nothingStaged();
  await stage.abort(); // the sweep got there first; aborting again is harmless
});
