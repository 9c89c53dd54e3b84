// The registry API over an FsStore, through fastify.inject: every endpoint, and every bad input from the issue with
// its spec error code AND proof that the store did not change.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { FsStore } from '../../src/store/fs-store.js';
import type { StoreMetaStore } from '../../src/registry/meta.js';
import { buildServer } from '../../src/server/server.js';
import type { RegistryContext } from '../../src/registry/context.js';
import { pino } from 'pino';
import { errorCode, filesUnder, injector, pushImage, snapshot, startTestRegistry, tempFsStore, testImage, uploadBlob, type Inject } from '../support/registry.js';
import { request as httpRequest } from 'node:http';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import type { ServerOptions } from '../../src/server/server.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

interface Setup {
  inject: Inject;
  store: FsStore;
  meta: StoreMetaStore;
  ctx: RegistryContext;
  spool: string;
  /** Asserts the store (blobs, tags, links) is exactly as it was when `unchanged` was created. */
  unchanged: () => Promise<() => Promise<void>>;
}

async function setup(opts: Partial<ServerOptions> = {}): Promise<Setup> {
  const fs = await tempFsStore();
  const spool = await mkdtemp(join(tmpdir(), 'ts-spool-'));
  cleanups.push(fs.cleanup, () => rm(spool, { recursive: true, force: true }));
  let ctx: RegistryContext | undefined;
  const app = await buildServer({ store: fs.store, meta: fs.meta, uploadDir: spool, logger: pino({ level: 'silent' }), onContext: (c) => (ctx = c), ...opts });
  cleanups.push(() => app.close());
  if (!ctx) throw new Error('no context');
  const unchanged = async () => {
    const before = await snapshot(fs.store, fs.meta);
    return async () => assert.deepEqual(await snapshot(fs.store, fs.meta), before, 'the store did not change');
  };
  return { inject: injector(app), store: fs.store, meta: fs.meta, ctx, spool, unchanged };
}

test('GET /v2/ answers 200 with the API version header', async () => {
  const { inject } = await setup();
  const r = await inject({ method: 'GET', url: '/v2/' });
  assert.equal(r.statusCode, 200);
  assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
});

test('monolithic upload, HEAD/GET blob, Range → 206, unsatisfiable range → 416', async () => {
  const { inject, store } = await setup();
  const data = Buffer.from('hello registry blob');
  const up = await uploadBlob(inject, 'a/b/c', data);
  assert.equal(up.statusCode, 201);
  assert.equal(up.headers.location, `/v2/a/b/c/blobs/${sha(data)}`);
  assert.equal(up.headers['docker-content-digest'], sha(data));
  assert.equal((await store.statBlob(sha(data)))?.size, data.length);

  const head = await inject({ method: 'HEAD', url: `/v2/a/b/c/blobs/${sha(data)}` });
  assert.equal(head.statusCode, 200);
  assert.equal(head.headers['content-length'], String(data.length));
  assert.equal(head.body, '');
  const get = await inject({ method: 'GET', url: `/v2/a/b/c/blobs/${sha(data)}` });
  assert.equal(get.body, data.toString());
  const part = await inject({ method: 'GET', url: `/v2/a/b/c/blobs/${sha(data)}`, headers: { range: 'bytes=6-13' } });
  assert.equal(part.statusCode, 206);
  assert.equal(part.body, 'registry');
  assert.equal(part.headers['content-range'], `bytes 6-13/${data.length}`);
  const suffix = await inject({ method: 'GET', url: `/v2/a/b/c/blobs/${sha(data)}`, headers: { range: 'bytes=-4' } });
  assert.equal(suffix.body, 'blob');
  const bad = await inject({ method: 'GET', url: `/v2/a/b/c/blobs/${sha(data)}`, headers: { range: 'bytes=999-' } });
  assert.equal(bad.statusCode, 416);
  assert.equal(bad.headers['content-range'], `bytes */${data.length}`);
});

test('unknown blob → 404 BLOB_UNKNOWN (GET and HEAD); malformed digest → 400 DIGEST_INVALID', async () => {
  const { inject } = await setup();
  const r = await inject({ method: 'GET', url: `/v2/x/blobs/${sha('nope')}` });
  assert.equal(r.statusCode, 404);
  assert.equal(errorCode(r), 'BLOB_UNKNOWN');
  assert.equal((await inject({ method: 'HEAD', url: `/v2/x/blobs/${sha('nope')}` })).statusCode, 404);
  const bad = await inject({ method: 'GET', url: '/v2/x/blobs/sha256:1234' });
  assert.equal(bad.statusCode, 400);
  assert.equal(errorCode(bad), 'DIGEST_INVALID');
});

test('chunked upload: POST → PATCH in order → status → PUT; out-of-order chunk → 416 with the current Range', async () => {
  const { inject, store, spool } = await setup();
  const start = await inject({ method: 'POST', url: '/v2/repo/blobs/uploads/' });
  assert.equal(start.statusCode, 202);
  const location = String(start.headers.location);
  assert.match(location, /^\/v2\/repo\/blobs\/uploads\/[0-9a-f-]{36}$/);
  assert.equal(start.headers.range, '0-0');
  const p1 = await inject({ method: 'PATCH', url: location, headers: { 'content-type': 'application/octet-stream', 'content-range': '0-4' }, payload: 'hello' });
  assert.equal(p1.statusCode, 202);
  assert.equal(p1.headers.range, '0-4');

  const unchanged = await (async () => snapshot(store))();
  const ooo = await inject({ method: 'PATCH', url: location, headers: { 'content-type': 'application/octet-stream', 'content-range': '10-14' }, payload: 'world' });
  assert.equal(ooo.statusCode, 416);
  assert.equal(errorCode(ooo), 'BLOB_UPLOAD_INVALID');
  assert.equal(ooo.headers.range, '0-4');
  assert.deepEqual(await snapshot(store), unchanged);

  const p2 = await inject({ method: 'PATCH', url: location, headers: { 'content-type': 'application/octet-stream', 'content-range': '5-10' }, payload: ' world' });
  assert.equal(p2.headers.range, '0-10');
  const status = await inject({ method: 'GET', url: location });
  assert.equal(status.statusCode, 204);
  assert.equal(status.headers.range, '0-10');
  // Streamed PATCH without Content-Range appends too.
  await inject({ method: 'PATCH', url: location, headers: { 'content-type': 'application/octet-stream' }, payload: '!' });
  const done = await inject({ method: 'PUT', url: `${location}?digest=${sha('hello world!')}` });
  assert.equal(done.statusCode, 201);
  assert.equal(done.headers['docker-content-digest'], sha('hello world!'));
  assert.equal((await store.statBlob(sha('hello world!')))?.size, 12);
  assert.deepEqual((await filesUnder(spool)).filter((f) => f.endsWith('.spool')), [], 'spool removed after commit');
  const gone = await inject({ method: 'GET', url: location });
  assert.equal(errorCode(gone), 'BLOB_UPLOAD_UNKNOWN');
});

test('a final PUT that overtakes a PATCH still writing to the session → 416, nothing stored, the upload goes on', async () => {
  const { inject, store } = await setup();
  const start = await inject({ method: 'POST', url: '/v2/repo/blobs/uploads/' });
  const location = String(start.headers.location);
  const body = new PassThrough();
  const patch = inject({ method: 'PATCH', url: location, headers: { 'content-type': 'application/octet-stream' }, payload: body });
  body.write('hello ');
  await new Promise((resolve) => setTimeout(resolve, 50)); // the PATCH is now writing
  const early = await inject({ method: 'PUT', url: `${location}?digest=${sha('hello ')}`, headers: { 'content-length': '0' } });
  assert.equal(early.statusCode, 416);
  assert.equal(errorCode(early), 'BLOB_UPLOAD_INVALID');
  assert.equal(await store.statBlob(sha('hello ')), undefined, 'nothing stored');
  body.end('world');
  assert.equal((await patch).statusCode, 202);
  const done = await inject({ method: 'PUT', url: `${location}?digest=${sha('hello world')}` });
  assert.equal(done.statusCode, 201);
  assert.equal((await store.statBlob(sha('hello world')))?.size, 11);
});

test('PUT with the last chunk in the body finishes the upload', async () => {
  const { inject, store } = await setup();
  const start = await inject({ method: 'POST', url: '/v2/repo/blobs/uploads/' });
  const location = String(start.headers.location);
  const r = await inject({ method: 'PUT', url: `${location}?digest=${sha('abc')}`, headers: { 'content-type': 'application/octet-stream' }, payload: 'abc' });
  assert.equal(r.statusCode, 201);
  assert.ok(await store.statBlob(sha('abc')));
});

test('wrong digest on PUT → 400 DIGEST_INVALID, nothing stored, session gone', async () => {
  const { inject, unchanged, spool } = await setup();
  const check = await unchanged();
  const start = await inject({ method: 'POST', url: '/v2/repo/blobs/uploads/' });
  const location = String(start.headers.location);
  await inject({ method: 'PATCH', url: location, headers: { 'content-type': 'application/octet-stream' }, payload: 'actual bytes' });
  const r = await inject({ method: 'PUT', url: `${location}?digest=${sha('other bytes')}` });
  assert.equal(r.statusCode, 400);
  assert.equal(errorCode(r), 'DIGEST_INVALID');
  await check();
  assert.equal(errorCode(await inject({ method: 'GET', url: location })), 'BLOB_UPLOAD_UNKNOWN');
  assert.deepEqual((await filesUnder(spool)).filter((f) => f.endsWith('.spool')), []);
  // Monolithic with a wrong digest, and a malformed or missing digest.
  const mono = await inject({ method: 'POST', url: `/v2/repo/blobs/uploads/?digest=${sha('x')}`, headers: { 'content-type': 'application/octet-stream' }, payload: 'y' });
  assert.equal(errorCode(mono), 'DIGEST_INVALID');
  const start2 = await inject({ method: 'POST', url: '/v2/repo/blobs/uploads/' });
  assert.equal(errorCode(await inject({ method: 'PUT', url: `${String(start2.headers.location)}?digest=md5:abc` })), 'DIGEST_INVALID');
  assert.equal(errorCode(await inject({ method: 'PUT', url: String(start2.headers.location) })), 'DIGEST_INVALID');
  await check();
});

test('oversized blob → 413 SIZE_INVALID, nothing stored; the session is rolled back to its last good size', async () => {
  const { inject, unchanged } = await setup({ maxBodyBytes: 1000 });
  const check = await unchanged();
  const big = Buffer.alloc(1500, 7);
  const mono = await uploadBlob(inject, 'repo', big);
  assert.equal(mono.statusCode, 413);
  assert.equal(errorCode(mono), 'SIZE_INVALID');
  await check();
  const start = await inject({ method: 'POST', url: '/v2/repo/blobs/uploads/' });
  const location = String(start.headers.location);
  await inject({ method: 'PATCH', url: location, headers: { 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(600, 1) });
  const r = await inject({ method: 'PATCH', url: location, headers: { 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(600, 2) });
  assert.equal(r.statusCode, 413);
  assert.equal(errorCode(r), 'SIZE_INVALID');
  await check();
  assert.equal((await inject({ method: 'GET', url: location })).headers.range, '0-599');
  // The session still finishes correctly with what it had.
  const ok = await inject({ method: 'PUT', url: `${location}?digest=${sha(Buffer.alloc(600, 1))}` });
  assert.equal(ok.statusCode, 201);
});

test('unknown upload session → 404 BLOB_UPLOAD_UNKNOWN for PATCH/PUT/GET/DELETE; a session of another repository is unknown too', async () => {
  const { inject, unchanged } = await setup();
  const check = await unchanged();
  const url = '/v2/repo/blobs/uploads/00000000-0000-0000-0000-000000000000';
  for (const method of ['PATCH', 'GET', 'DELETE']) {
    const r = await inject({ method, url, headers: { 'content-type': 'application/octet-stream' }, ...(method === 'PATCH' ? { payload: 'x' } : {}) });
    assert.equal(r.statusCode, 404, method);
    assert.equal(errorCode(r), 'BLOB_UPLOAD_UNKNOWN', method);
  }
  assert.equal(errorCode(await inject({ method: 'PUT', url: `${url}?digest=${sha('x')}` })), 'BLOB_UPLOAD_UNKNOWN');
  const start = await inject({ method: 'POST', url: '/v2/mine/blobs/uploads/' });
  const id = String(start.headers['docker-upload-uuid']);
  assert.equal(errorCode(await inject({ method: 'GET', url: `/v2/theirs/blobs/uploads/${id}` })), 'BLOB_UPLOAD_UNKNOWN');
  // DELETE cancels.
  assert.equal((await inject({ method: 'DELETE', url: `/v2/mine/blobs/uploads/${id}` })).statusCode, 204);
  assert.equal(errorCode(await inject({ method: 'GET', url: `/v2/mine/blobs/uploads/${id}` })), 'BLOB_UPLOAD_UNKNOWN');
  await check();
});

test('a blob the store already has is never written again, even when uploaded', async () => {
  const { inject, store } = await setup();
  const data = Buffer.from('dedup me');
  await uploadBlob(inject, 'one', data);
  const puts = store.requestCounts().put ?? 0;
  const again = await uploadBlob(inject, 'two', data);
  assert.equal(again.statusCode, 201);
  assert.equal(store.requestCounts().put ?? 0, puts, 'no second write');
});

/** A raw HTTP request on a real socket: the path goes out exactly as written (inject would normalise `%2e%2e`). */
function rawRequest(port: number, method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers: { 'content-type': OCI_MANIFEST, ...(body ? { 'content-length': String(body.length) } : {}) } }, (res) => {
      let data = '';
      res.on('data', (c: Buffer) => (data += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('invalid repository names → 400 NAME_INVALID (../, uppercase, too long), store unchanged', async () => {
  const fs = await tempFsStore();
  cleanups.push(fs.cleanup);
  const reg = await startTestRegistry({ store: fs.store, meta: fs.meta });
  cleanups.push(() => reg.close());
  const port = Number(reg.host.split(':')[1]);
  const before = await snapshot(fs.store, fs.meta);
  const long = 'a'.repeat(256);
  for (const name of ['..%2Fetc', '%2e%2e/x', 'a/../b', 'a/%2e%2e/b', 'Upper/case', long, 'a//b', '-lead']) {
    for (const [method, path] of [['GET', 'tags/list'], ['POST', 'blobs/uploads/'], ['PUT', 'manifests/latest'], ['HEAD', `blobs/${sha('x')}`]] as const) {
      const r = await rawRequest(port, method, `/v2/${name}/${path}`, method === 'PUT' ? '{}' : undefined);
      assert.equal(r.status, 400, `${method} ${name}/${path}: ${r.status} ${r.body}`);
      if (method !== 'HEAD') assert.equal((JSON.parse(r.body) as { errors: Array<{ code: string }> }).errors[0]?.code, 'NAME_INVALID', `${method} ${name}`);
    }
  }
  assert.deepEqual(await snapshot(fs.store, fs.meta), before, 'the store did not change');
});

test('manifest PUT/GET/HEAD by tag and digest; OCI and Docker media types answered as stored', async () => {
  const { inject, store } = await setup();
  const img = testImage('m1');
  const put = await pushImage(inject, 'app', 'v1', img);
  assert.equal(put.statusCode, 201);
  assert.equal(put.headers['docker-content-digest'], img.manifestDigest);
  assert.equal(put.headers.location, `/v2/app/manifests/${img.manifestDigest}`);
  for (const ref of ['v1', img.manifestDigest]) {
    const get = await inject({ method: 'GET', url: `/v2/app/manifests/${ref}` });
    assert.equal(get.statusCode, 200);
    assert.equal(get.headers['content-type'], OCI_MANIFEST);
    assert.equal(get.headers['docker-content-digest'], img.manifestDigest);
    assert.equal(get.body, img.manifest.toString());
    const head = await inject({ method: 'HEAD', url: `/v2/app/manifests/${ref}` });
    assert.equal(head.headers['content-length'], String(img.manifest.length));
    assert.equal(head.body, '');
  }
  assert.equal(await store.getTag('app', 'v1'), img.manifestDigest);
  const docker = testImage('m2', { docker: true });
  assert.equal((await pushImage(inject, 'app', 'docker', docker)).statusCode, 201);
  assert.equal((await inject({ method: 'GET', url: '/v2/app/manifests/docker' })).headers['content-type'], 'application/vnd.docker.distribution.manifest.v2+json');
  // Unknown tag, and a digest that exists in another repository only.
  assert.equal(errorCode(await inject({ method: 'GET', url: '/v2/app/manifests/nope' })), 'MANIFEST_UNKNOWN');
  assert.equal((await inject({ method: 'HEAD', url: '/v2/app/manifests/nope' })).statusCode, 404);
  assert.equal(errorCode(await inject({ method: 'GET', url: `/v2/other/manifests/${img.manifestDigest}` })), 'MANIFEST_UNKNOWN');
});

test('bad manifests: unknown blobs, malformed JSON, media type mismatch, unknown type, wrong digest, oversized — each rejected, store unchanged', async () => {
  const { inject, unchanged } = await setup({ maxManifestBytes: 2048 });
  const img = testImage('bad');
  await uploadBlob(inject, 'app', img.config); // the layer is missing
  const check = await unchanged();
  const put = (payload: string | Buffer, contentType = OCI_MANIFEST, ref = 'v1') => inject({ method: 'PUT', url: `/v2/app/manifests/${ref}`, headers: { 'content-type': contentType }, payload });

  const missing = await put(img.manifest);
  assert.equal(missing.statusCode, 400);
  assert.equal(errorCode(missing), 'MANIFEST_BLOB_UNKNOWN');
  assert.equal(errorCode(await put('{"schemaVersion": 2, "config": ')), 'MANIFEST_INVALID');
  assert.equal(errorCode(await put('[]')), 'MANIFEST_INVALID');
  assert.equal(errorCode(await put(img.manifest, 'application/vnd.docker.distribution.manifest.v2+json')), 'MANIFEST_INVALID');
  const odd = JSON.stringify({ ...(JSON.parse(img.manifest.toString()) as object), mediaType: 'application/x-made-up' });
  assert.equal(errorCode(await put(odd, 'application/x-made-up')), 'MANIFEST_INVALID');
  assert.equal(errorCode(await put(img.manifest, OCI_MANIFEST, sha('something else'))), 'DIGEST_INVALID');
  const huge = await put(Buffer.alloc(4096, 32));
  assert.equal(huge.statusCode, 413);
  assert.equal(errorCode(huge), 'SIZE_INVALID');
  assert.equal(errorCode(await put(img.manifest, OCI_MANIFEST, 'bad:tag:x')), 'DIGEST_INVALID');
  await check();
});

test('an index needs its child manifests in the same repository first', async () => {
  const { inject, unchanged } = await setup();
  const child = testImage('child');
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: child.manifestDigest, size: child.manifest.length, platform: { os: 'linux', architecture: 'amd64' } }] }));
  await pushImage(inject, 'elsewhere', child.manifestDigest, child);
  const check = await unchanged();
  const early = await inject({ method: 'PUT', url: '/v2/multi/manifests/v1', headers: { 'content-type': OCI_INDEX }, payload: index });
  assert.equal(errorCode(early), 'MANIFEST_BLOB_UNKNOWN');
  await check();
  await pushImage(inject, 'multi', child.manifestDigest, child);
  const ok = await inject({ method: 'PUT', url: '/v2/multi/manifests/v1', headers: { 'content-type': OCI_INDEX }, payload: index });
  assert.equal(ok.statusCode, 201);
  assert.equal((await inject({ method: 'GET', url: '/v2/multi/manifests/v1' })).headers['content-type'], OCI_INDEX);
});

test('tags list and catalog paginate with n/last and a Link header; unknown repository → 404 NAME_UNKNOWN', async () => {
  const { inject } = await setup();
  const img = testImage('tags');
  for (const t of ['e', 'a', 'c', 'b', 'd']) assert.equal((await pushImage(inject, 'lib/app', t, img)).statusCode, 201);
  await pushImage(inject, 'lib/zzz', 'x', img);
  await pushImage(inject, 'aaa', 'x', img);
  const all = await inject({ method: 'GET', url: '/v2/lib/app/tags/list' });
  assert.deepEqual(all.json(), { name: 'lib/app', tags: ['a', 'b', 'c', 'd', 'e'] });
  const p1 = await inject({ method: 'GET', url: '/v2/lib/app/tags/list?n=2' });
  assert.deepEqual(p1.json<{ tags: string[] }>().tags, ['a', 'b']);
  assert.equal(p1.headers.link, '</v2/lib/app/tags/list?n=2&last=b>; rel="next"');
  const p2 = await inject({ method: 'GET', url: '/v2/lib/app/tags/list?n=2&last=b' });
  assert.deepEqual(p2.json<{ tags: string[] }>().tags, ['c', 'd']);
  const p3 = await inject({ method: 'GET', url: '/v2/lib/app/tags/list?n=2&last=d' });
  assert.deepEqual(p3.json<{ tags: string[] }>().tags, ['e']);
  assert.equal(p3.headers.link, undefined);
  assert.deepEqual((await inject({ method: 'GET', url: '/v2/lib/app/tags/list?n=0' })).json<{ tags: string[] }>().tags, []);
  const unknown = await inject({ method: 'GET', url: '/v2/no/such/tags/list' });
  assert.equal(unknown.statusCode, 404);
  assert.equal(errorCode(unknown), 'NAME_UNKNOWN');

  const c1 = await inject({ method: 'GET', url: '/v2/_catalog?n=2' });
  assert.deepEqual(c1.json(), { repositories: ['aaa', 'lib/app'] });
  assert.equal(c1.headers.link, '</v2/_catalog?n=2&last=lib%2Fapp>; rel="next"');
  assert.deepEqual((await inject({ method: 'GET', url: '/v2/_catalog?n=2&last=lib%2Fapp' })).json(), { repositories: ['lib/zzz'] });
});

test('deletes are off by default (405 UNSUPPORTED, store unchanged) and work when enabled', async () => {
  const off = await setup();
  const img = testImage('del');
  await pushImage(off.inject, 'app', 'v1', img);
  const check = await off.unchanged();
  for (const url of ['/v2/app/manifests/v1', `/v2/app/manifests/${img.manifestDigest}`, `/v2/app/blobs/${img.layerDigest}`]) {
    const r = await off.inject({ method: 'DELETE', url });
    assert.equal(r.statusCode, 405, url);
    assert.equal(errorCode(r), 'UNSUPPORTED');
  }
  await check();

  const on = await setup({ allowDelete: true, blobLinks: true });
  await pushImage(on.inject, 'app', 'v1', img);
  await pushImage(on.inject, 'app', 'v2', img);
  assert.equal((await on.inject({ method: 'DELETE', url: '/v2/app/manifests/v1' })).statusCode, 202);
  assert.equal(errorCode(await on.inject({ method: 'GET', url: '/v2/app/manifests/v1' })), 'MANIFEST_UNKNOWN');
  assert.equal((await on.inject({ method: 'GET', url: '/v2/app/manifests/v2' })).statusCode, 200);
  assert.equal((await on.inject({ method: 'DELETE', url: `/v2/app/manifests/${img.manifestDigest}` })).statusCode, 202);
  assert.equal(errorCode(await on.inject({ method: 'GET', url: '/v2/app/manifests/v2' })), 'MANIFEST_UNKNOWN', 'tags of a deleted manifest go with it');
  assert.equal(errorCode(await on.inject({ method: 'DELETE', url: `/v2/app/manifests/${img.manifestDigest}` })), 'MANIFEST_UNKNOWN');
  assert.equal((await on.inject({ method: 'DELETE', url: `/v2/app/blobs/${img.layerDigest}` })).statusCode, 202);
  assert.equal(errorCode(await on.inject({ method: 'DELETE', url: `/v2/app/blobs/${img.layerDigest}` })), 'BLOB_UNKNOWN');
  assert.ok(await on.store.statBlob(img.layerDigest), 'shared blob bytes stay for GC to decide');
});

test('after the last tag is deleted, tags/list and _catalog agree; a repository with nothing left leaves both, and its directories (issue 20 item 4)', async () => {
  const reg = await setup({ allowDelete: true });
  const img = testImage('last-tag');
  assert.equal((await pushImage(reg.inject, 'team/tags/app', 'v1', img)).statusCode, 201);
  assert.equal((await reg.inject({ method: 'DELETE', url: '/v2/team/tags/app/manifests/v1' })).statusCode, 202);
  const tags = await reg.inject({ method: 'GET', url: '/v2/team/tags/app/tags/list' });
  assert.equal(tags.statusCode, 200, 'the manifest is still there: the repository exists with no tags');
  assert.deepEqual(tags.json(), { name: 'team/tags/app', tags: [] });
  assert.deepEqual((await reg.inject({ method: 'GET', url: '/v2/_catalog' })).json(), { repositories: ['team/tags/app'] });
  assert.equal(errorCode(await reg.inject({ method: 'GET', url: '/v2/team/tags/list' })), 'NAME_UNKNOWN', 'team is not a repository');
  assert.equal((await reg.inject({ method: 'DELETE', url: `/v2/team/tags/app/manifests/${img.manifestDigest}` })).statusCode, 202);
  assert.equal(errorCode(await reg.inject({ method: 'GET', url: '/v2/team/tags/app/tags/list' })), 'NAME_UNKNOWN');
  assert.deepEqual((await reg.inject({ method: 'GET', url: '/v2/_catalog' })).json(), { repositories: [] });
  assert.deepEqual(await readdir(join(reg.store.root, 'repos')).catch(() => []), [], 'no empty directories are left in the dir: store');
});

test('cross-repository mount: 201 when the blob exists, else falls back to an upload session (202)', async () => {
  const { inject, store } = await setup();
  const data = Buffer.from('mount me');
  await uploadBlob(inject, 'src', data);
  const puts = store.requestCounts().put ?? 0;
  const m = await inject({ method: 'POST', url: `/v2/dst/blobs/uploads/?mount=${sha(data)}&from=src` });
  assert.equal(m.statusCode, 201);
  assert.equal(m.headers.location, `/v2/dst/blobs/${sha(data)}`);
  assert.equal(store.requestCounts().put ?? 0, puts);
  const miss = await inject({ method: 'POST', url: `/v2/dst/blobs/uploads/?mount=${sha('absent')}&from=src` });
  assert.equal(miss.statusCode, 202);
  assert.match(String(miss.headers.location), /\/v2\/dst\/blobs\/uploads\//);
});

test('referrers API: a manifest with a subject is listed, artifactType filter applied, OCI-Subject header on push', async () => {
  const { inject } = await setup();
  const base = testImage('subject');
  await pushImage(inject, 'app', 'v1', base);
  const subject = { mediaType: OCI_MANIFEST, digest: base.manifestDigest, size: base.manifest.length };
  const sig = testImage('sig', { subject, artifactType: 'application/vnd.example.sig' });
  const sbom = testImage('sbom', { subject, artifactType: 'application/vnd.example.sbom' });
  const r1 = await pushImage(inject, 'app', sig.manifestDigest, sig);
  assert.equal(r1.statusCode, 201);
  assert.equal(r1.headers['oci-subject'], base.manifestDigest);
  await pushImage(inject, 'app', sbom.manifestDigest, sbom);
  const all = await inject({ method: 'GET', url: `/v2/app/referrers/${base.manifestDigest}` });
  assert.equal(all.statusCode, 200);
  assert.equal(all.headers['content-type'], OCI_INDEX);
  const list = all.json<{ manifests: Array<{ digest: string; artifactType: string }> }>().manifests;
  assert.deepEqual(list.map((m) => m.digest).sort(), [sig.manifestDigest, sbom.manifestDigest].sort());
  const filtered = await inject({ method: 'GET', url: `/v2/app/referrers/${base.manifestDigest}?artifactType=application/vnd.example.sbom` });
  assert.equal(filtered.headers['oci-filters-applied'], 'artifactType');
  assert.deepEqual(filtered.json<{ manifests: Array<{ digest: string }> }>().manifests.map((m) => m.digest), [sbom.manifestDigest]);
  const none = await inject({ method: 'GET', url: `/v2/app/referrers/${sha('nothing')}` });
  assert.deepEqual(none.json<{ manifests: unknown[] }>().manifests, []);
  assert.equal(errorCode(await inject({ method: 'GET', url: '/v2/app/referrers/sha256:zz' })), 'DIGEST_INVALID');
});

test('unknown endpoints and methods answer spec error bodies', async () => {
  const { inject } = await setup();
  assert.equal((await inject({ method: 'GET', url: '/v2/app/whatever' })).statusCode, 404);
  const r = await inject({ method: 'POST', url: `/v2/app/manifests/v1` });
  assert.equal(r.statusCode, 405);
  assert.equal(errorCode(r), 'UNSUPPORTED');
});

test('/healthz, /readyz and /metrics answer', async () => {
  const { inject } = await setup();
  assert.equal((await inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  assert.equal((await inject({ method: 'GET', url: '/readyz' })).statusCode, 200);
  await inject({ method: 'GET', url: '/v2/' });
  const m = await inject({ method: 'GET', url: '/metrics' });
  assert.match(m.body, /registry_requests_total\{method="GET",operation="base",status="200"\}/);
});

test('upload sessions expire after the idle timeout and their spool is removed', async () => {
  const { inject, ctx, spool } = await setup({ uploadIdleSeconds: 1 });
  const start = await inject({ method: 'POST', url: '/v2/repo/blobs/uploads/' });
  await inject({ method: 'PATCH', url: String(start.headers.location), headers: { 'content-type': 'application/octet-stream' }, payload: 'partial' });
  assert.equal(ctx.sessions.count, 1);
  await new Promise((r) => setTimeout(r, 2200));
  assert.equal(ctx.sessions.count, 0);
  assert.deepEqual((await filesUnder(spool)).filter((f) => f.endsWith('.spool')), []);
  assert.equal(errorCode(await inject({ method: 'GET', url: String(start.headers.location) })), 'BLOB_UPLOAD_UNKNOWN');
});
