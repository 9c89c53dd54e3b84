// `transship serve` with regions and dr rules: a manifest push kicks the replicator for that repository — after the
// push is answered, never failing it, only for repositories a dr rule covers (fs stores: the claim is about the
// wiring, not S3; the replicator itself is tested on RGW in test/integration/placement.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { StoreMetaStore } from '../../packages/transship/src/registry/meta.js';
import { Regions } from '../../packages/transship/src/placement/regions.js';
import { Rules } from '../../packages/transship/src/placement/rules.js';
import { PlacedReader } from '../../packages/transship/src/placement/read-path.js';
import { Replicator, type ReconcileReport } from '../../packages/transship/src/placement/replicator.js';
import { ReplicationKicker } from '../../packages/transship/src/placement/kicker.js';
import { pushedRepository, replicateAfterPushes } from '../../packages/transship/src/server/replicate-after-push.js';
import { TransshipError } from '@transship/core/errors';
import { buildServer } from '../../packages/transship/src/server/server.js';
import { injector, pushImage, testImage } from '../support/registry.js';

const tmp = await mkdtemp(join(tmpdir(), 'ts-kick-'));
test.after(() => rm(tmp, { recursive: true, force: true }));

/** onResponse runs when the response has finished, which an inject()ed request may resolve just before. */
async function passesDone(passes: readonly unknown[], n: number, kicker: ReplicationKicker): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (passes.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  await kicker.idle();
}

test('pushedRepository: only a manifest PUT answered 201', () => {
  assert.equal(pushedRepository('PUT', '/v2/prod/team/api/manifests/v1', 201), 'prod/team/api');
  assert.equal(pushedRepository('PUT', '/v2/app/manifests/sha256:abc?x=1', 201), 'app');
  assert.equal(pushedRepository('PUT', '/v2/app/manifests/v1', 400), undefined, 'a rejected push copies nothing');
  assert.equal(pushedRepository('GET', '/v2/app/manifests/v1', 201), undefined);
  assert.equal(pushedRepository('PUT', '/v2/app/blobs/uploads/x', 201), undefined);
});

async function server(stores: { a: FsStore; b: FsStore }) {
  const regions = Regions.of('a', stores);
  const rules = new Rules([{ repos: ['prod/**'], reason: 'dr' }]);
  const passes: Array<{ report: ReconcileReport; repos: string[] }> = [];
  const kicker = new ReplicationKicker(new Replicator(regions, rules), { onPass: (report, repos) => passes.push({ report, repos }) });
  const app = await buildServer({ logger: pino({ level: 'silent' }), store: stores.a, meta: new StoreMetaStore(stores.a), placed: new PlacedReader(regions, rules) });
  replicateAfterPushes(app, kicker);
  await app.ready();
  const close = async () => {
    await app.close();
    await kicker.close();
  };
  return { kicker, passes, inject: injector(app), close };
}

test('serve with a dr rule: a push is replicated to the other region right after it is answered; other repositories are not', async () => {
  const a = new FsStore(join(tmp, 'ok-a'), 'a');
  const b = new FsStore(join(tmp, 'ok-b'), 'b');
  const s = await server({ a, b });
  try {
    const img = testImage('kick-prod');
    assert.equal((await pushImage(s.inject, 'prod/api', 'v1', img)).statusCode, 201);
    const toy = testImage('kick-dev');
    assert.equal((await pushImage(s.inject, 'dev/toy', 'v1', toy)).statusCode, 201);
    await passesDone(s.passes, 1, s.kicker);
    assert.equal(await b.getTag('prod/api', 'v1'), img.manifestDigest, 'replicated eagerly');
    assert.equal((await b.statBlob(img.layerDigest))?.size, img.layer.length);
    assert.equal(await b.getTag('dev/toy', 'v1'), undefined, 'no dr rule: stays in its region');
    assert.deepEqual(s.passes.flatMap((p) => p.repos), ['prod/api'], 'only the dr repository was reconciled');
  } finally {
    await s.close();
  }
});

test('serve with a dr rule and the target region failing: the push still succeeds, the failure is reported by the pass', async () => {
  const a = new FsStore(join(tmp, 'down-a'), 'a');
  const b = new FsStore(join(tmp, 'down-b'), 'b');
  b.putBlob = async () => {
    throw new TransshipError('TS_BACKEND_UNAVAILABLE', 'region b is down (test)');
  };
  const s = await server({ a, b });
  try {
    const img = testImage('kick-down');
    assert.equal((await pushImage(s.inject, 'prod/api', 'v1', img)).statusCode, 201);
    await passesDone(s.passes, 1, s.kicker);
    assert.equal(await a.getTag('prod/api', 'v1'), img.manifestDigest, 'the push landed in the home region');
    assert.equal(await b.getTag('prod/api', 'v1'), undefined);
    assert.equal(s.passes[0]?.report.failed.length, 1);
    assert.match(s.passes[0]?.report.failed[0]?.error ?? '', /TS_BACKEND_UNAVAILABLE/);
  } finally {
    await s.close();
  }
});
