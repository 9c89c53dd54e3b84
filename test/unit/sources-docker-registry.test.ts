// docker:// against a small in-process registry on listen(0) that requires a bearer token, redirects blob GETs,
// and can be told to fail: the auth handshake, retries on 429/503, fatal 401/403, 404 mapping, and verification
// of what the registry serves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { digestOf } from '@transship/core/digest';
import { parseReference, type DockerReference } from '../../packages/transship/src/transfer/reference.js';
import { DockerRegistrySource, type DockerRegistryOptions } from '../../packages/transship/src/transfer/sources/docker-registry.js';
import { parseChallenge } from '../../packages/transship/src/transfer/sources/registry-auth.js';
import type { Descriptor } from '../../packages/transship/src/transfer/types.js';
import { makeOciLayout, type BuiltImage } from '../support/images.js';
import { uploadRetryTotal } from '@transship/core/retry-metrics';

interface Fake {
  server: Server;
  port: number;
  /** Requests seen, by kind. */
  hits: { token: number; manifest: number; blob: number; storage: number };
  /** Status codes to answer the next registry requests with (before auth), consumed in order. */
  failNext: Array<{ status: number; retryAfter?: string }>;
  /** Require basic credentials at the token endpoint. */
  users?: { username: string; password: string };
  /** Answer 403 to everything on /v2/. */
  forbid: boolean;
  /** Corrupt the next served manifest / blob bytes. */
  corruptManifest: boolean;
  corruptBlob: boolean;
  /** Claim a wrong Docker-Content-Digest. */
  lieDigest: boolean;
  /** Use a Basic challenge instead of Bearer. */
  basicOnly: boolean;
}

const TOKEN = 'secret-token';
let work: string;
let layout: string;
let img: BuiltImage;
let fake: Fake;

function send(res: ServerResponse, status: number, body: Buffer | string = '', headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-length': String(Buffer.byteLength(body)), ...headers });
  res.end(body);
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', `http://127.0.0.1:${fake.port}`);
  if (url.pathname === '/token') {
    fake.hits.token++;
    if (fake.users) {
      const want = `Basic ${Buffer.from(`${fake.users.username}:${fake.users.password}`).toString('base64')}`;
      if (req.headers.authorization !== want) return send(res, 401, '{"errors":[{"code":"UNAUTHORIZED"}]}');
    }
    assert.equal(url.searchParams.get('scope'), 'repository:team/app:pull');
    assert.equal(url.searchParams.get('service'), 'fake-registry');
    return send(res, 200, JSON.stringify({ token: TOKEN, expires_in: 300 }), { 'content-type': 'application/json' });
  }
  if (url.pathname.startsWith('/storage/')) {
    fake.hits.storage++;
    const hex = url.pathname.slice('/storage/'.length);
    let bytes = await readFile(join(layout, 'blobs', 'sha256', hex));
    if (fake.corruptBlob) bytes = Buffer.concat([bytes.subarray(0, -1), Buffer.from([(bytes[bytes.length - 1] ?? 0) ^ 1])]);
    return send(res, 200, bytes);
  }
  const m = /^\/v2\/team\/app\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
  if (!m) return send(res, 404);
  const kind = m[1] as 'manifests' | 'blobs';
  if (kind === 'manifests') fake.hits.manifest++;
  else fake.hits.blob++;
  const failure = fake.failNext.shift();
  if (failure) return send(res, failure.status, '', failure.retryAfter ? { 'retry-after': failure.retryAfter } : {});
  if (fake.forbid) return send(res, 403);
  const basic = fake.users ? `Basic ${Buffer.from(`${fake.users.username}:${fake.users.password}`).toString('base64')}` : '';
  const authorized = fake.basicOnly ? req.headers.authorization === basic : req.headers.authorization === `Bearer ${TOKEN}`;
  if (!authorized) {
    const challenge = fake.basicOnly ? 'Basic realm="fake"' : `Bearer realm="http://127.0.0.1:${fake.port}/token",service="fake-registry",scope="repository:team/app:pull"`;
    return send(res, 401, '{"errors":[{"code":"UNAUTHORIZED"}]}', { 'www-authenticate': challenge });
  }
  const ref = decodeURIComponent(m[2] ?? '');
  if (kind === 'blobs') {
    const digest = ref;
    if (!/^sha256:[a-f0-9]{64}$/.test(digest)) return send(res, 400);
    try {
      await readFile(join(layout, 'blobs', 'sha256', digest.slice(7)));
    } catch {
      return send(res, 404, '{"errors":[{"code":"BLOB_UNKNOWN"}]}');
    }
    return send(res, 307, '', { location: `/storage/${digest.slice(7)}` });
  }
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const digest = ref.startsWith('sha256:') ? ref : index.manifests.find((d) => d.annotations?.['org.opencontainers.image.ref.name'] === ref)?.digest;
  if (!digest || !/^sha256:[a-f0-9]{64}$/.test(digest)) return send(res, 404, '{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
  let bytes: Buffer;
  try {
    bytes = await readFile(join(layout, 'blobs', 'sha256', digest.slice(7)));
  } catch {
    return send(res, 404, '{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
  }
  const doc = JSON.parse(bytes.toString('utf8')) as { mediaType: string };
  const claimed = fake.lieDigest ? digestOf('lie') : digest;
  if (fake.corruptManifest) bytes = Buffer.from(bytes.toString('utf8').replace('"schemaVersion":2', '"schemaVersion": 2'));
  return send(res, 200, bytes, { 'content-type': doc.mediaType, 'docker-content-digest': claimed });
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'ts-registry-'));
  layout = join(work, 'layout');
  img = await makeOciLayout(layout, { tag: 'v1', multiArch: true, layers: 2, layerSize: 200_000 });
  fake = { server: createServer(), port: 0, hits: { token: 0, manifest: 0, blob: 0, storage: 0 }, failNext: [], forbid: false, corruptManifest: false, corruptBlob: false, lieDigest: false, basicOnly: false };
  fake.server.on('request', (req, res) => {
    handle(req, res).catch((err: unknown) => send(res, 500, String(err)));
  });
  await new Promise<void>((resolve) => fake.server.listen(0, '127.0.0.1', resolve));
  fake.port = (fake.server.address() as AddressInfo).port;
});

after(async () => {
  fake.server.closeAllConnections();
  await new Promise((resolve) => fake.server.close(resolve));
  await rm(work, { recursive: true, force: true });
});

function reset(): void {
  fake.hits = { token: 0, manifest: 0, blob: 0, storage: 0 };
  fake.failNext = [];
  fake.forbid = fake.corruptBlob = fake.corruptManifest = fake.lieDigest = fake.basicOnly = false;
  delete fake.users;
}

function ref(tagOrDigest = ':v1'): DockerReference {
  return parseReference(`docker://127.0.0.1:${fake.port}/team/app${tagOrDigest}`) as DockerReference;
}

const fast: DockerRegistryOptions = { retry: { baseDelayMs: 1, maxDelayMs: 20, maxAttempts: 4 } };

async function drain(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

void test('pulls an index by tag with a bearer token fetched once, children and redirected blobs verified', async () => {
  reset();
  const src = await DockerRegistrySource.open(ref(), fast);
  const root = await src.root();
  assert.deepEqual(root.bytes, img.root.bytes);
  assert.equal(root.descriptor.digest, img.manifestDigest);
  assert.equal(root.descriptor.mediaType, 'application/vnd.oci.image.index.v1+json');
  for (const m of img.manifests) assert.deepEqual((await src.manifest(m.descriptor)).bytes, m.bytes);
  for (const b of img.blobs) assert.equal(digestOf(await drain(await src.blob(b))), b.digest);
  assert.equal(fake.hits.token, 1);
  assert.equal(fake.hits.storage, img.blobs.length);
  await src.close();
});

void test('pulls by digest and checks the bytes against it', async () => {
  reset();
  const child = img.manifests[0]?.descriptor as Descriptor;
  const src = await DockerRegistrySource.open(ref(`@${child.digest}`), fast);
  assert.equal((await src.root()).descriptor.digest, child.digest);
});

void test('basic credentials (option or env) go to the token service; wrong ones are TS_UNAUTHORIZED without retries', async () => {
  reset();
  fake.users = { username: 'u', password: 'p' };
  const src = await DockerRegistrySource.open(ref(), { ...fast, credentials: { username: 'u', password: 'p' } });
  assert.equal((await src.root()).descriptor.digest, img.manifestDigest);
  reset();
  fake.users = { username: 'u', password: 'p' };
  process.env.TRANSSHIP_REGISTRY_USER = 'u';
  process.env.TRANSSHIP_REGISTRY_PASSWORD = 'p';
  try {
    await DockerRegistrySource.open(ref(), fast);
  } finally {
    delete process.env.TRANSSHIP_REGISTRY_USER;
    delete process.env.TRANSSHIP_REGISTRY_PASSWORD;
  }
  reset();
  fake.users = { username: 'u', password: 'p' };
  await assert.rejects(DockerRegistrySource.open(ref(), { ...fast, credentials: { username: 'u', password: 'wrong' } }), { code: 'TS_UNAUTHORIZED' });
  assert.equal(fake.hits.token, 1);
  assert.equal(fake.hits.manifest, 1);
});

void test('a Basic challenge is answered with the credentials; 403 is fatal at once', async () => {
  reset();
  fake.basicOnly = true;
  fake.users = { username: 'u', password: 'p' };
  await DockerRegistrySource.open(ref(), { ...fast, credentials: { username: 'u', password: 'p' } });
  await assert.rejects(DockerRegistrySource.open(ref(), fast), { code: 'TS_UNAUTHORIZED' });
  reset();
  fake.forbid = true;
  await assert.rejects(DockerRegistrySource.open(ref(), fast), { code: 'TS_UNAUTHORIZED', status: 403 });
  assert.equal(fake.hits.manifest, 1);
});

void test('429 and 503 are retried (Retry-After honoured); too many become TS_RETRY_EXHAUSTED', async () => {
  reset();
  fake.failNext = [{ status: 503 }, { status: 429, retryAfter: '0' }];
  const src = await DockerRegistrySource.open(ref(), fast);
  assert.equal(fake.hits.manifest, 4); // 503, 429, 401 challenge, 200
  reset();
  fake.failNext = [{ status: 502 }];
  const layer = img.layers[0] as Descriptor;
  assert.equal(digestOf(await drain(await src.blob(layer))), layer.digest);
  reset();
  fake.failNext = Array.from({ length: 10 }, () => ({ status: 503 }));
  await assert.rejects(DockerRegistrySource.open(ref(), fast), { code: 'TS_RETRY_EXHAUSTED' });
});

// Regression: docker:// called the bare retry(), so its retries never reached upload_retry_total (only S3's did),
// and the "true for the whole process" claim of core/retry.ts was wrong.
void test('a docker:// retry is counted in upload_retry_total (success and fail)', async () => {
  const count = async (status: string): Promise<number> => (await uploadRetryTotal.get()).values.filter((v) => v.labels.status === status).reduce((a, v) => a + v.value, 0);
  reset();
  const [ok0, fail0] = [await count('success'), await count('fail')];
  fake.failNext = [{ status: 503 }];
  await DockerRegistrySource.open(ref(), fast);
  assert.equal(await count('success'), ok0 + 1);
  const reasons = (await uploadRetryTotal.get()).values.filter((v) => v.labels.status === 'success').map((v) => v.labels.reason);
  assert.ok(reasons.includes('TS_BACKEND_UNAVAILABLE:503'), String(reasons));
  reset();
  fake.failNext = Array.from({ length: 10 }, () => ({ status: 503 }));
  await assert.rejects(DockerRegistrySource.open(ref(), fast), { code: 'TS_RETRY_EXHAUSTED' });
  assert.equal(await count('fail'), fail0 + 1);
});

void test('404 maps to TS_TAG_UNKNOWN for manifests and TS_BLOB_UNKNOWN for blobs', async () => {
  reset();
  await assert.rejects(DockerRegistrySource.open(ref(':nope'), fast), { code: 'TS_TAG_UNKNOWN' });
  const src = await DockerRegistrySource.open(ref(), fast);
  await assert.rejects(src.blob({ mediaType: 'x', digest: digestOf('absent'), size: 6 }), { code: 'TS_BLOB_UNKNOWN' });
});

void test('a registry serving wrong bytes is caught: manifest digest, Docker-Content-Digest, blob digest', async () => {
  reset();
  fake.corruptManifest = true;
  await assert.rejects(DockerRegistrySource.open(ref(), fast), { code: 'TS_DIGEST_MISMATCH' });
  reset();
  fake.lieDigest = true;
  await assert.rejects(DockerRegistrySource.open(ref(), fast), { code: 'TS_DIGEST_MISMATCH' });
  reset();
  const src = await DockerRegistrySource.open(ref(), fast);
  fake.corruptBlob = true;
  await assert.rejects(drain(await src.blob(img.layers[0] as Descriptor)), { code: 'TS_DIGEST_MISMATCH' });
});

void test('an unreachable registry is a retryable network error, then TS_RETRY_EXHAUSTED; cancellation is TS_CANCELLED', async () => {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  const dead = parseReference(`docker://127.0.0.1:${port}/team/app:v1`) as DockerReference;
  await assert.rejects(DockerRegistrySource.open(dead, { retry: { baseDelayMs: 1, maxDelayMs: 5, maxAttempts: 2 } }), (err: { code?: string; cause?: { code?: string } }) => {
    assert.equal(err.code, 'TS_RETRY_EXHAUSTED');
    assert.equal(err.cause?.code, 'TS_NETWORK');
    return true;
  });
  reset();
  fake.failNext = Array.from({ length: 10 }, () => ({ status: 503, retryAfter: '30' }));
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 50);
  const started = Date.now();
  await assert.rejects(DockerRegistrySource.open(ref(), { signal: ac.signal, retry: { maxDelayMs: 60_000 } }), { code: 'TS_CANCELLED' });
  assert.ok(Date.now() - started < 2000);
});

void test('WWW-Authenticate parsing handles quoted commas and case', () => {
  assert.deepEqual(parseChallenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"'), {
    scheme: 'bearer',
    params: { realm: 'https://auth.example/token', service: 'reg', scope: 'repository:a/b:pull,push' },
  });
  assert.equal(parseChallenge('Basic realm="x"')?.scheme, 'basic');
});
