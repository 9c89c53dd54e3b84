// The registry with regions: an image pushed in region a is pulled through an instance whose home is region b —
// manifest by tag and blobs are lazy fetches (counted remote), promoted into b after the demand threshold.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { StoreMetaStore } from '../../packages/transship/src/registry/meta.js';
import { Regions } from '../../packages/transship/src/placement/regions.js';
import { Rules } from '../../packages/transship/src/placement/rules.js';
import { PlacedReader } from '../../packages/transship/src/placement/read-path.js';
import { copyImage } from '../../packages/transship/src/transfer/copy.js';
import { StoreDestination } from '../../packages/transship/src/transfer/store-destination.js';
import { openOciLayoutSource } from '../../packages/transship/src/transfer/sources/oci-layout.js';
import '../../packages/transship/src/telemetry/metrics.js';
import '@transship/core/retry-metrics';
import { processMetrics } from '@transship/core/metrics-registry';

const registry = processMetrics();
import { makeOciLayout } from '../support/images.js';
import { startTestRegistry } from '../support/registry.js';
import { hashPassword } from '../../packages/transship/src/registry/auth.js';

const tmp = await mkdtemp(join(tmpdir(), 'ts-reg-regions-'));
test.after(() => rm(tmp, { recursive: true, force: true }));

const remoteReads = async () => ((await registry.getSingleMetric('blob_reads_total')?.get())?.values ?? []).filter((v) => v.labels.location === 'remote').reduce((a, v) => a + v.value, 0);

test('registry in region b serves an image pushed in region a: tag and blobs lazily fetched, promoted after 2 reads', async () => {
  const a = new FsStore(join(tmp, 'a'), 'a');
  const b = new FsStore(join(tmp, 'b'), 'b');
  const img = await makeOciLayout(join(tmp, 'img'), { tag: 'v1', layers: 1, layerSize: 4096, seed: 'reg-regions' });
  const src = await openOciLayoutSource(img.path, { tag: 'v1' });
  await copyImage(src, new StoreDestination(a, 'app', 'v1'));
  await src.close();
  const placed = new PlacedReader(Regions.of('b', { a, b }), new Rules([], { policy: 'demand', reads: 2 }));
  const reg = await startTestRegistry({ store: b, meta: new StoreMetaStore(b), placed });
  try {
    const before = await remoteReads();
    const m = await fetch(`${reg.url}/v2/app/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(m.status, 200);
    assert.equal(m.headers.get('docker-content-digest'), img.manifestDigest);
    const layer = img.layers[0]!;
    for (let i = 0; i < 2; i++) {
      const r = await fetch(`${reg.url}/v2/app/blobs/${layer.digest}`);
      assert.equal(r.status, 200);
      assert.equal(Number(r.headers.get('content-length')), layer.size);
      assert.equal((await r.arrayBuffer()).byteLength, layer.size);
    }
    assert.ok((await remoteReads()) - before >= 3, 'manifest and blob reads counted remote');
    assert.equal((await b.statBlob(layer.digest))?.size, layer.size, 'promoted into the home region on the 2nd remote read');
    const missing = await fetch(`${reg.url}/v2/app/blobs/sha256:${'0'.repeat(64)}`);
    assert.equal(missing.status, 404);
  } finally {
    await reg.close();
  }
});

test('with auth on, region b serves a repository pushed in region a to a user who may pull it, and nobody else', async () => {
  const a = new FsStore(join(tmp, 'auth-a'), 'a');
  const b = new FsStore(join(tmp, 'auth-b'), 'b');
  const img = await makeOciLayout(join(tmp, 'auth-img'), { tag: 'v1', layers: 1, layerSize: 4096, seed: 'reg-regions-auth' });
  const src = await openOciLayoutSource(img.path, { tag: 'v1' });
  await copyImage(src, new StoreDestination(a, 'team/app', 'v1'));
  await src.close();
  const placed = new PlacedReader(Regions.of('b', { a, b }), new Rules([], { policy: 'never' }));
  const reg = await startTestRegistry({
    store: b,
    meta: new StoreMetaStore(b),
    placed,
    auth: {
      tokenSecret: 'regions-auth-secret-0123456789',
      users: { alice: hashPassword('pw-a'), mallory: hashPassword('pw-m') },
      access: [{ users: ['alice'], repositories: ['team/*'], actions: ['pull'] }, { users: ['mallory'], repositories: ['mallory/*'], actions: ['pull', 'push'] }],
    },
  });
  const basic = (user: string, pw: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}` });
  try {
    const layer = img.layers[0]!;
    const ok = await fetch(`${reg.url}/v2/team/app/blobs/${layer.digest}`, { headers: basic('alice', 'pw-a') });
    assert.equal(ok.status, 200, 'the blob is linked to team/app through its manifest in region a');
    assert.equal((await ok.arrayBuffer()).byteLength, layer.size);
    const denied = await fetch(`${reg.url}/v2/team/app/blobs/${layer.digest}`, { headers: basic('mallory', 'pw-m') });
    assert.ok(denied.status === 401 || denied.status === 403, `mallory may not pull team/app (got ${denied.status})`);
    const leak = await fetch(`${reg.url}/v2/mallory/x/blobs/${layer.digest}`, { headers: basic('mallory', 'pw-m') });
    assert.equal(leak.status, 404, 'the digest is not readable through a repository it does not belong to');
  } finally {
    await reg.close();
  }
});
