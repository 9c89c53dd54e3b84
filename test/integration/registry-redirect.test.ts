// Redirect mode on S3 (Ceph RGW): blob GETs answer 307 with a presigned URL, so skopeo fetches the bytes from the
// store itself and none pass through transship; HEADs, auth and unknown blobs are still answered by the registry.
import { test, after, before } from 'node:test';
import { CLI } from '../support/cli.js';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeOciLayout, type BuiltImage } from '../support/images.js';
import { createTestBucket, s3TestConfig } from '../support/rgw.js';
import { layoutBlobs, run, skopeo, startTestRegistry, type TestRegistry } from '../support/registry.js';
import { S3Store } from '../../packages/transship/src/store/s3-store.js';
import { StoreMetaStore } from '../../packages/transship/src/registry/meta.js';
import { hashPassword } from '../../packages/transship/src/registry/auth.js';
import { registryServedBytesTotal } from '../../packages/transship/src/telemetry/metrics.js';

const s3 = s3TestConfig();
const cleanups: Array<() => Promise<unknown>> = [];
let store: S3Store;
let reg: TestRegistry;
let image: BuiltImage;

async function tempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  cleanups.push(() => rm(d, { recursive: true, force: true }));
  return d;
}

before(async () => {
  if (!s3) return;
  const bucket = await createTestBucket('reg-redirect');
  store = new S3Store({ bucket, prefix: 'r', endpoint: s3.endpoint, s3Region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey });
  reg = await startTestRegistry({ store, meta: new StoreMetaStore(store), redirect: { expiresInSeconds: 300 } });
  cleanups.push(() => store.close(), () => reg.close());
  image = await makeOciLayout(await tempDir('ts-redir-img-'), { tag: 'v1', seed: 'redirect', layers: 2, layerSize: 2 * 1024 * 1024, gzip: false });
  const pushed = await skopeo(['copy', '--preserve-digests', '--dest-tls-verify=false', `oci:${image.path}:v1`, `docker://${reg.host}/redir/app:v1`]);
  assert.equal(pushed.code, 0, pushed.stderr);
});
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

const served = async (): Promise<number> => (await registryServedBytesTotal.get()).values.reduce((a, v) => a + v.value, 0);

test('skopeo pulls through redirects: byte-identical, and no blob byte passes through transship', { skip: !s3 }, async () => {
  const before = await served();
  const out = await tempDir('ts-redir-pull-');
  const pulled = await skopeo(['copy', '--preserve-digests', '--src-tls-verify=false', `docker://${reg.host}/redir/app:v1`, `oci:${out}:v1`]);
  assert.equal(pulled.code, 0, pulled.stderr);
  const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  assert.equal(index.manifests[0]?.digest, image.manifestDigest);
  for (const [d, h] of await layoutBlobs(out)) assert.equal(`sha256:${h}`, d, `pulled blob ${d} has the bytes of its digest`);
  assert.equal(await served(), before, 'blob bytes came from the store, not from transship');
});

test('GET answers 307 to a presigned store URL that serves the blob (and ranges); HEAD and unknown blobs stay local', { skip: !s3 }, async () => {
  const layer = image.layers[0];
  assert.ok(layer);
  const r = await fetch(`${reg.url}/v2/redir/app/blobs/${layer.digest}`, { redirect: 'manual' });
  assert.equal(r.status, 307);
  assert.equal(r.headers.get('docker-content-digest'), layer.digest);
  const location = r.headers.get('location') ?? '';
  assert.ok(location.startsWith(s3?.endpoint ?? '-'), `redirect goes to the S3 endpoint: ${location.slice(0, 80)}`);
  assert.match(location, /X-Amz-Signature=/);
  const whole = Buffer.from(await (await fetch(location)).arrayBuffer());
  assert.equal(whole.length, layer.size);
  const part = await fetch(location, { headers: { range: 'bytes=10-19' } });
  assert.equal(part.status, 206);
  assert.deepEqual(Buffer.from(await part.arrayBuffer()), whole.subarray(10, 20));
  const head = await fetch(`${reg.url}/v2/redir/app/blobs/${layer.digest}`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-length'), String(layer.size));
  const again = await fetch(`${reg.url}/v2/redir/app/blobs/${layer.digest}`, { redirect: 'manual' });
  assert.equal(again.headers.get('location'), location, 'one signature per blob for half its lifetime, not one per GET');
  const unknown = await fetch(`${reg.url}/v2/redir/app/blobs/sha256:${'0'.repeat(64)}`, { redirect: 'manual' });
  assert.equal(unknown.status, 404, 'an unknown blob is BLOB_UNKNOWN from the registry, not a redirect to an S3 404');
});

test('with auth on, a client without pull rights gets 401, never a presigned URL', { skip: !s3 }, async () => {
  const authed = await startTestRegistry({
    store,
    meta: new StoreMetaStore(store),
    redirect: { expiresInSeconds: 300 },
    auth: { tokenSecret: 'redirect-secret-0123456789', users: { alice: hashPassword('pw') }, access: [{ users: ['alice'], repositories: ['redir/*'], actions: ['pull'] }] },
  });
  cleanups.push(() => authed.close());
  const layer = image.layers[0];
  assert.ok(layer);
  const anon = await fetch(`${authed.url}/v2/redir/app/blobs/${layer.digest}`, { redirect: 'manual' });
  assert.equal(anon.status, 401);
  assert.equal(anon.headers.get('location'), null);
});

test('serve --redirect on a directory store is a usage error (exit 2) that names the problem', async () => {
  const dir = await tempDir('ts-redir-dir-');
  const r = await run(process.execPath, [CLI, 'serve', '--redirect', '--store', `dir:${dir}`, '--listen', '127.0.0.1:0'], { timeoutMs: 60_000 });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /needs an S3 store/);
});
