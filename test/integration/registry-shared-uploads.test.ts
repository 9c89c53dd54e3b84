// Issue 17 item 4: upload sessions continue on any instance sharing the store (Ceph RGW). Two registry instances on
// one bucket, each with its own spool directory and S3 connection: a session started on one is continued and
// finished on the other — raw chunked uploads alternating instances, and real skopeo pushing through a load balancer
// that sends each request to the next instance. Checked: the blob is byte-identical, a wrong digest stores nothing,
// an altered or outdated state token is refused, a stopped instance's session continues elsewhere, and nothing is
// left in the bucket (no multipart upload, no tail) once a session ends — including one abandoned and expired.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ListMultipartUploadsCommand, ListObjectsV2Command, UploadPartCommand } from '@aws-sdk/client-s3';
import { createTestBucket, s3TestConfig, testS3Client } from '../support/rgw.js';
import { seededBytes as bytes } from '../support/s3-proxy.js';
import { layoutBlobs, scrapeMetric, skopeo, spawnServe, startTestRegistry, type TestRegistry } from '../support/registry.js';
import { makeOciLayout } from '../support/images.js';
import { startRoundRobinProxy } from '../support/round-robin-proxy.js';
import { S3Store } from '../../packages/transship/src/store/s3-store.js';
import { StoreMetaStore } from '../../packages/transship/src/registry/meta.js';
import type { RegistryOptions } from '../../packages/transship/src/registry/context.js';

const MiB = 1024 * 1024;
const s3 = s3TestConfig();
const cleanups: Array<() => Promise<unknown>> = [];
let bucket = '';

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

before(async () => {
  if (!s3) return;
  bucket = await createTestBucket('reg-shared');
});

/** One registry instance on the shared bucket: its own S3 connection and its own spool directory. */
async function instance(extra: Partial<RegistryOptions> = {}): Promise<{ reg: TestRegistry; store: S3Store }> {
  if (!s3) throw new Error('no test S3');
  const store = new S3Store({ bucket, endpoint: s3.endpoint, s3Region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, multipartThreshold: 8 * MiB, partSize: 5 * MiB });
  const spool = await mkdtemp(join(tmpdir(), 'ts-shared-spool-'));
  const reg = await startTestRegistry({ store, meta: new StoreMetaStore(store), uploadDir: spool, streamUploadsAfterBytes: 8 * MiB, ...extra });
  cleanups.push(() => store.close(), () => reg.close(), () => rm(spool, { recursive: true, force: true }));
  await reg.ctx.sweepStaged(); // the start-up sweep of crashed instances' leftovers: not part of what is counted
  return { reg, store };
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Answer {
  status: number;
  headers: Headers;
  body: Buffer;
}

async function http(reg: TestRegistry, method: string, path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<Answer> {
  const r = await fetch(`${reg.url}${path}`, { method, headers: { 'content-type': 'application/octet-stream', ...headers }, ...(body ? { body } : {}) });
  return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
}

function errorCode(a: Answer): string | undefined {
  return (JSON.parse(a.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code;
}

/**
 * PATCHes `data` from `start` on `reg` and returns the Location to continue from. `streamed`: no Content-Range, the
 * way skopeo, docker and podman send a whole blob in one PATCH (a chunked client sends Content-Range).
 */
async function patch(reg: TestRegistry, location: string, data: Buffer, start: number, streamed = false): Promise<string> {
  const r = await http(reg, 'PATCH', location, data, streamed ? {} : { 'content-range': `${start}-${start + data.length - 1}` });
  assert.equal(r.status, 202, r.body.toString());
  assert.equal(r.headers.get('range'), `0-${start + data.length - 1}`);
  const next = r.headers.get('location');
  if (!next?.includes('_state=')) assert.fail(`the Location carries the session state: ${next}`);
  return next;
}

async function start(reg: TestRegistry, repo: string): Promise<string> {
  const r = await http(reg, 'POST', `/v2/${repo}/blobs/uploads/`);
  assert.equal(r.status, 202, r.body.toString());
  const location = r.headers.get('location');
  assert.ok(location);
  return location;
}

async function leftovers(): Promise<{ multipart: string[]; staged: string[] }> {
  const client = testS3Client();
  try {
    const multipart = ((await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).map((u) => u.Key ?? '');
    const staged = ((await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: '_uploads/' }))).Contents ?? []).map((o) => o.Key ?? '');
    return { multipart, staged };
  } finally {
    client.destroy();
  }
}

async function nothingLeft(what: string): Promise<void> {
  let left = await leftovers();
  for (let i = 0; i < 50 && left.multipart.length + left.staged.length > 0; i++) {
    await sleep(100);
    left = await leftovers();
  }
  assert.deepEqual(left, { multipart: [], staged: [] }, `${what}: no multipart upload and no staged object left`);
}

test('raw chunked upload: POST on A, PATCHes alternating A/B across part boundaries, PUT on B; byte-identical on both, nothing left', { skip: !s3 }, async () => {
  const a = await instance();
  const b = await instance();
  const data = bytes(11, 27 * MiB + 12_344);
  let location = await start(a.reg, 'shared/raw');
  const chunk = 3 * MiB;
  const regs = [a.reg, b.reg];
  let n = 0;
  for (let offset = 0; offset < data.length - chunk; offset += chunk) {
    location = await patch(regs[n++ % 2] as TestRegistry, location, data.subarray(offset, offset + chunk), offset);
  }
  const lastStart = Math.floor((data.length - 1) / chunk) * chunk;
  const reads = { a: a.store.requestCounts().GetObject ?? 0, b: b.store.requestCounts().GetObject ?? 0 };
  // The final chunk rides on the PUT, on B.
  const put = await http(b.reg, 'PUT', `${location}&digest=${sha(data)}`, data.subarray(lastStart), { 'content-range': `${lastStart}-${data.length - 1}` });
  assert.equal(put.status, 201, put.body.toString());
  // B never saw the first bytes, so it read the staged blob back once to check the digest.
  assert.ok((b.store.requestCounts().GetObject ?? 0) - reads.b >= 2, 'B read the tail, then the staged blob back to check the digest');
  assert.equal((a.store.requestCounts().GetObject ?? 0) - reads.a, 0);
  for (const reg of [a.reg, b.reg]) {
    const got = await http(reg, 'GET', `/v2/shared/raw/blobs/${sha(data)}`);
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(data), 'byte-identical');
  }
  await nothingLeft('after the commit');
});

test('the usual client (POST, one PATCH with the whole blob, PUT) across instances: one PutObject in all, at the PATCH; the PUT only links', { skip: !s3 }, async () => {
  const a = await instance();
  const b = await instance();
  const data = bytes(18, 3 * MiB);
  const location = await start(a.reg, 'shared/usual');
  const b0 = { ...b.store.requestCounts() };
  const next = await patch(b.reg, location, data, 0, true);
  const b1 = { ...b.store.requestCounts() };
  const a0 = { ...a.store.requestCounts() };
  const put = await http(a.reg, 'PUT', `${next}&digest=${sha(data)}`);
  assert.equal(put.status, 201, put.body.toString());
  const a1 = { ...a.store.requestCounts() };
  const delta = (x: Record<string, number>, y: Record<string, number>): Record<string, number> =>
    Object.fromEntries(Object.entries(y).map(([k, v]) => [k, v - (x[k] ?? 0)]).filter(([, v]) => v !== 0));
  // An instance reads the shared token secret once (a GetObject) before it first signs or checks a token.
  const patchRequests = delta(b0, b1);
  delete patchRequests.GetObject;
  assert.deepEqual(patchRequests, { PutObject: 1 }, `PATCH: ${JSON.stringify(delta(b0, b1))}`);
  const putRequests = delta(a0, a1);
  delete putRequests.GetObject; // the secret, on an instance that has not signed a token yet
  assert.deepEqual(putRequests, {}, `the PUT on the other instance wrote nothing: ${JSON.stringify(delta(a0, a1))}`);
  assert.ok((await http(a.reg, 'GET', `/v2/shared/usual/blobs/${sha(data)}`)).body.equals(data));
  await nothingLeft('after the commit');
});

test('a staged session hashed whole on A, PUT on B with no more bytes: committed on A\'s hash (parts checked by ETag), no read-back', { skip: !s3 }, async () => {
  const a = await instance();
  const b = await instance();
  const data = bytes(19, 12 * MiB + 40);
  let location = await start(a.reg, 'shared/vouched');
  location = await patch(a.reg, location, data, 0, true);
  await start(b.reg, 'shared/warm'); // B reads the token secret once (a GetObject) before its first token
  const gets = b.store.requestCounts().GetObject ?? 0;
  const put = await http(b.reg, 'PUT', `${location}&digest=${sha(data)}`);
  assert.equal(put.status, 201, put.body.toString());
  assert.equal((b.store.requestCounts().GetObject ?? 0) - gets, 1, 'B read only the tail');
  assert.ok((await http(a.reg, 'GET', `/v2/shared/vouched/blobs/${sha(data)}`)).body.equals(data));
  // The same state with another digest: B cannot rely on A's hash, reads the blob back, and refuses.
  const other = bytes(20, 12 * MiB + 40);
  let second = await start(a.reg, 'shared/vouched');
  second = await patch(a.reg, second, other, 0, true);
  const wrong = sha(data.subarray(1));
  const refused = await http(b.reg, 'PUT', `${second}&digest=${wrong}`);
  assert.equal(refused.status, 400, refused.body.toString());
  assert.equal(errorCode(refused), 'DIGEST_INVALID');
  await nothingLeft('after both sessions ended');
});

test('a part replaced after the checkpoint (a forked session) is caught: the ETags differ, the blob is read back, DIGEST_INVALID', { skip: !s3 }, async () => {
  const a = await instance();
  const b = await instance();
  const data = bytes(21, 12 * MiB);
  let location = await start(a.reg, 'shared/forked');
  location = await patch(a.reg, location, data, 0, true);
  // The state token is signed, not secret: its upload id is readable. Overwrite part 1 behind the session's back.
  const token = new URL(`http://x${location}`).searchParams.get('_state') ?? '';
  const wire = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()) as { i: string; u: string };
  const client = testS3Client();
  try {
    await client.send(new UploadPartCommand({ Bucket: bucket, Key: `_uploads/${wire.i}`, UploadId: wire.u, PartNumber: 1, Body: bytes(22, 5 * MiB) }));
  } finally {
    client.destroy();
  }
  const put = await http(b.reg, 'PUT', `${location}&digest=${sha(data)}`);
  assert.equal(put.status, 400, put.body.toString());
  assert.equal(errorCode(put), 'DIGEST_INVALID');
  assert.equal(await b.store.statBlob(sha(data)), undefined, 'nothing stored under the digest');
  await nothingLeft('after the refused commit');
});

test('a chunked client: whole parts are staged from the first chunk, each checkpoint\'s tail stays under a part, no first-chunk blob', { skip: !s3 }, async () => {
  const a = await instance();
  const b = await instance();
  const data = bytes(23, 23 * MiB);
  let location = await start(a.reg, 'shared/chunked');
  const chunk = 6 * MiB; // parts are 5 MiB, the stream threshold 8 MiB
  for (let offset = 0, n = 0; offset < data.length; offset += chunk, n++) {
    const reg = n % 2 === 0 ? a : b;
    location = await patch(reg.reg, location, data.subarray(offset, offset + chunk), offset);
    const tail = (await stagedObjectSizes()).find((o) => o.key.endsWith('.tail'));
    assert.ok(tail && tail.size < 5 * MiB, `after the chunk at ${offset}: tail of ${tail?.size} bytes, under one part`);
  }
  const put = await http(a.reg, 'PUT', `${location}&digest=${sha(data)}`);
  assert.equal(put.status, 201, put.body.toString());
  assert.ok((await http(b.reg, 'GET', `/v2/shared/chunked/blobs/${sha(data)}`)).body.equals(data));
  assert.equal(await a.store.statBlob(sha(data.subarray(0, chunk))), undefined, 'the first chunk was not stored as a blob');
  await nothingLeft('after the commit');
});

async function stagedObjectSizes(): Promise<Array<{ key: string; size: number }>> {
  const client = testS3Client();
  try {
    return ((await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: '_uploads/' }))).Contents ?? []).map((o) => ({ key: o.Key ?? '', size: o.Size ?? 0 }));
  } finally {
    client.destroy();
  }
}

test('a small session (no parts) with several chunks moves by its tail and is hashed locally, no read-back', { skip: !s3 }, async () => {
  const a = await instance();
  const b = await instance();
  const data = bytes(12, 300_000);
  let location = await start(a.reg, 'shared/small');
  location = await patch(b.reg, location, data.subarray(0, 100_000), 0);
  location = await patch(a.reg, location, data.subarray(100_000), 100_000);
  const copies = b.store.requestCounts().CopyObject ?? 0;
  const put = await http(b.reg, 'PUT', `${location}&digest=${sha(data)}`);
  assert.equal(put.status, 201, put.body.toString());
  assert.equal((b.store.requestCounts().CopyObject ?? 0) - copies, 0, 'one PutObject of the blob, no staged copy');
  const got = await http(a.reg, 'GET', `/v2/shared/small/blobs/${sha(data)}`);
  assert.ok(got.body.equals(data));
  await nothingLeft('after the commit');
});

test('wrong digest on the other instance: DIGEST_INVALID, nothing stored, stage and tail removed', { skip: !s3 }, async () => {
  const a = await instance();
  const b = await instance();
  const data = bytes(13, 13 * MiB);
  let location = await start(a.reg, 'shared/wrong');
  location = await patch(a.reg, location, data.subarray(0, 11 * MiB), 0);
  const wrong = sha(Buffer.from('not these bytes'));
  const put = await http(b.reg, 'PUT', `${location}&digest=${wrong}`, data.subarray(11 * MiB), { 'content-range': `${11 * MiB}-${data.length - 1}` });
  assert.equal(put.status, 400, put.body.toString());
  assert.equal(errorCode(put), 'DIGEST_INVALID');
  assert.equal(await b.store.statBlob(wrong), undefined);
  assert.equal(await b.store.statBlob(sha(data)), undefined);
  await nothingLeft('after the refused commit');
});

test('an altered, foreign or outdated state token is refused with BLOB_UPLOAD_UNKNOWN; the latest still works', { skip: !s3 }, async () => {
  const a = await instance();
  const b = await instance();
  const data = bytes(14, 2 * MiB);
  const first = await start(a.reg, 'shared/token');
  const second = await patch(a.reg, first, data.subarray(0, MiB), 0);
  const third = await patch(a.reg, second, data.subarray(MiB, MiB + 10), MiB);
  // Altered: one character of the signed state changed.
  const state = new URL(`http://x${third}`).searchParams.get('_state') ?? '';
  const altered = third.replace(state, (state[0] === 'A' ? 'B' : 'A') + state.slice(1));
  const r1 = await http(b.reg, 'PATCH', altered, data.subarray(MiB + 10), { 'content-range': `${MiB + 10}-${data.length - 1}` });
  assert.equal(r1.status, 404);
  assert.equal(errorCode(r1), 'BLOB_UPLOAD_UNKNOWN');
  // Another repository's URL with this session's token.
  const r2 = await http(b.reg, 'GET', third.replace('/shared/token/', '/shared/other/'));
  assert.equal(r2.status, 404);
  // Outdated: the Location of the previous response, after the session moved on.
  const r3 = await http(b.reg, 'PATCH', second, data.subarray(MiB), { 'content-range': `${MiB}-${data.length - 1}` });
  assert.equal(r3.status, 404, r3.body.toString());
  assert.equal(errorCode(r3), 'BLOB_UPLOAD_UNKNOWN');
  // Status from the token on an instance that holds nothing of the session.
  const status = await http(b.reg, 'GET', third);
  assert.equal(status.status, 204);
  assert.equal(status.headers.get('range'), `0-${MiB + 9}`);
  const put = await http(b.reg, 'PUT', `${third}&digest=${sha(data)}`, data.subarray(MiB + 10), { 'content-range': `${MiB + 10}-${data.length - 1}` });
  assert.equal(put.status, 201, put.body.toString());
  await nothingLeft('after the commit');
});

test('the instance that took the POST stops (rolling update): the session continues on the other one', { skip: !s3 }, async () => {
  const a = await instance();
  const b = await instance();
  const data = bytes(15, 21 * MiB);
  let location = await start(a.reg, 'shared/rolling');
  location = await patch(a.reg, location, data.subarray(0, 12 * MiB), 0);
  await a.reg.close(); // shutdown lets go of shared sessions; it does not abort them
  location = await patch(b.reg, location, data.subarray(12 * MiB, 18 * MiB), 12 * MiB);
  const put = await http(b.reg, 'PUT', `${location}&digest=${sha(data)}`, data.subarray(18 * MiB), { 'content-range': `${18 * MiB}-${data.length - 1}` });
  assert.equal(put.status, 201, put.body.toString());
  assert.ok((await http(b.reg, 'GET', `/v2/shared/rolling/blobs/${sha(data)}`)).body.equals(data));
  await nothingLeft('after the commit');
});

test('DELETE on the other instance cancels: stage aborted, tail deleted, nothing to continue from', { skip: !s3 }, async () => {
  const a = await instance();
  const b = await instance();
  let location = await start(a.reg, 'shared/cancel');
  location = await patch(a.reg, location, bytes(16, 12 * MiB), 0);
  const del = await http(b.reg, 'DELETE', location);
  assert.equal(del.status, 204);
  await nothingLeft('after the cancel');
  // An instance without a copy of the session finds nothing to continue from. (One that still holds a copy could
  // go on from its spool — harmless: its digest is still checked — and its expiry removes what that leaves.)
  const again = await http(b.reg, 'PATCH', location, Buffer.from('x'), { 'content-range': `${12 * MiB}-${12 * MiB}` });
  assert.equal(again.status, 404, 'a cancelled session cannot be continued');
});

test('an abandoned session expires: the instance that wrote its last checkpoint aborts the stage and deletes the tail', { skip: !s3 }, async () => {
  const a = await instance({ uploadIdleSeconds: 1 });
  const data = bytes(17, 12 * MiB);
  const location = await start(a.reg, 'shared/abandoned');
  await patch(a.reg, location, data, 0);
  assert.equal((await leftovers()).multipart.length > 0, true, 'the stage is there while the session lives');
  await nothingLeft('after expiry'); // idle 1 s + margin 1 s + sweep every second
  assert.equal(a.reg.ctx.sessions.count, 0);
});

test('skopeo pushes through a load balancer that sends every request to the next of two `serve` processes; pull byte-identical', { skip: !s3 }, async () => {
  if (!s3) return;
  const env = { ...process.env, AWS_ENDPOINT_URL_S3: s3.endpoint, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region };
  const own = await createTestBucket('reg-shared-skopeo');
  const config = join(await mkdtemp(join(tmpdir(), 'ts-shared-cfg-')), 'config.yaml');
  // Small stream threshold and parts so a 14 MiB layer is staged in parts on one instance and finished on the other.
  await writeFile(config, `serve:\n  streamUploadsAfterBytes: 5242880\ns3:\n  partSize: 5242880\n  multipartThreshold: 8388608\n`);
  const serves = [await spawnServe(['--config', config, '--store', `s3://${own}`], env), await spawnServe(['--config', config, '--store', `s3://${own}`], env)];
  for (const s of serves) cleanups.push(() => s.stop());
  const lb = await startRoundRobinProxy(serves.map((s) => s.url));
  cleanups.push(() => lb.close());
  const image = await makeOciLayout(await mkdtemp(join(tmpdir(), 'ts-shared-img-')), { tag: 'v1', layers: [{ seed: 'shared-big', size: 14 * MiB, gzip: false }, { seed: 'shared-small', size: 200_000 }], seed: 'shared' });
  const push = await skopeo(['copy', '--dest-tls-verify=false', '--preserve-digests', `oci:${image.path}:v1`, `docker://${lb.host}/lb/app:v1`]);
  assert.equal(push.code, 0, `push through the load balancer: ${push.stderr.slice(-2000)}`);
  const uploads = lb.log.filter((r) => r.path.includes('/blobs/uploads/'));
  assert.ok(new Set(uploads.map((r) => r.backend)).size === 2, `upload requests reached both instances: ${JSON.stringify(uploads)}`);
  const sum = async (series: string): Promise<number> => (await Promise.all(serves.map((s) => scrapeMetric(s.url, series)))).reduce((x, y) => x + y, 0);
  assert.ok((await sum('registry_upload_sessions_continued_total{event="adopted"}')) > 0, 'sessions were continued across instances');
  // skopeo sends a blob in one PATCH: the instance that staged the big layer hashed all of it, so the other one
  // commits it on that hash (parts checked by ETag) without reading it back.
  assert.ok((await sum('registry_upload_sessions_continued_total{event="commit_vouched"}')) > 0, 'the big layer was staged on one instance and committed on the other without a read-back');
  const out = await mkdtemp(join(tmpdir(), 'ts-shared-out-'));
  cleanups.push(() => rm(out, { recursive: true, force: true }));
  const pull = await skopeo(['copy', '--src-tls-verify=false', '--preserve-digests', '--dest-oci-accept-uncompressed-layers', `docker://${lb.host}/lb/app:v1`, `oci:${out}:v1`]);
  assert.equal(pull.code, 0, pull.stderr.slice(-2000));
  const want = await layoutBlobs(image.path);
  const got = await layoutBlobs(out);
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  for (const [digest, hash] of want) assert.equal(got.get(digest), hash, `${digest} byte-identical`);
  const client = testS3Client();
  try {
    assert.equal((await client.send(new ListMultipartUploadsCommand({ Bucket: own }))).Uploads?.length ?? 0, 0, 'no multipart upload left');
    const staged = ((await client.send(new ListObjectsV2Command({ Bucket: own, Prefix: '_uploads/' }))).Contents ?? []).map((o) => o.Key);
    assert.deepEqual(staged, [], 'no tail left');
  } finally {
    client.destroy();
  }
});
