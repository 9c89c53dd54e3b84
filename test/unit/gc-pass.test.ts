// A whole GC pass (src/gc/pass.ts) on the directory store: what goes, what stays, the dry run, retention, the lease,
// and the writers' touch racing a pass. Ages are made by moving file times back (utimes), not by faking clocks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { runPass } from '../../packages/transship/src/gc/pass.js';
import { gcSettings } from '../../packages/transship/src/gc/settings.js';
import { GcLease } from '../../packages/transship/src/gc/lease.js';
import { Freshness } from '../../packages/transship/src/store/freshness.js';
import type { Config } from '../../packages/transship/src/config/config.js';
import { ageFiles, publish, putBytes, putImage, putIndex, type Desc } from '../support/gc-fixtures.js';

const DAY = 86_400_000;

async function fresh(): Promise<FsStore> {
  return new FsStore(await mkdtemp(join(tmpdir(), 'ts-gc-pass-')));
}

const age = ageFiles;

const settings = (gc: NonNullable<Config['gc']> = {}) => gcSettings({ gc: { settleSeconds: 3, ...gc } });

async function present(store: FsStore, blobs: readonly Desc[]): Promise<boolean[]> {
  const found = await store.statBlobs(blobs.map((b) => b.digest));
  return blobs.map((b) => found.has(b.digest));
}

test('gc: removes exactly the unreachable old blobs; index children, referrers and tagged images stay; dry run changes nothing', async () => {
  const s = await fresh();
  const a = await putImage(s, { seed: 'a' });
  await publish(s, 'team/app', a.manifest, '1.0');
  const b = await putImage(s, { seed: 'b' });
  const c = await putImage(s, { seed: 'c' });
  await publish(s, 'team/multi', b.manifest);
  await publish(s, 'team/multi', c.manifest);
  const idx = await putIndex(s, [b.manifest, c.manifest]);
  await publish(s, 'team/multi', idx, 'latest');
  const sig = await putImage(s, { seed: 'sig', layerCount: 1, subject: a.manifest });
  await publish(s, 'team/app', sig.manifest);
  // Garbage: an image whose manifest was deleted (registry DELETE unlinks), and a blob nothing ever referenced.
  const g = await putImage(s, { seed: 'g' });
  await publish(s, 'gone/app', g.manifest, 'x');
  await s.deleteTag('gone/app', 'x');
  await s.unlinkManifest('gone/app', g.manifest.digest);
  const orphan = await putBytes(s, Buffer.from('orphan layer'));
  await age(s.root, 3 * DAY);
  const newcomer = await putBytes(s, Buffer.from('uploaded minutes before its manifest'));

  const plan = await runPass(s, settings(), { dryRun: true });
  assert.equal(plan.result, 'success');
  const garbage = [...g.blobs, orphan].map((x) => `blobs/sha256/${x.digest.slice(7)}`).sort();
  assert.deepEqual(plan.plan.filter((p) => p.kind === 'blob').map((p) => p.key).sort(), garbage);
  assert.deepEqual(await present(s, [...g.blobs, orphan]), [true, true, true, true, true], 'dry run deleted nothing');

  const r = await runPass(s, settings());
  assert.equal(r.result, 'success');
  assert.equal(r.removed.blob, garbage.length);
  assert.equal(r.reclaimedBytes, [...g.blobs, orphan].reduce((n, x) => n + x.size, 0));
  assert.ok(r.kept.fresh >= 1, 'the fresh upload is kept');
  const live = [...a.blobs, ...b.blobs, ...c.blobs, idx, ...sig.blobs, newcomer];
  assert.ok((await present(s, live)).every(Boolean), 'everything reachable (and the fresh upload) stays');
  assert.ok((await present(s, [...g.blobs, orphan])).every((p) => !p), 'garbage is gone');
  // A second pass finds nothing more.
  const again = await runPass(s, settings());
  assert.equal(again.removed.blob ?? 0, 0);
});

test('gc: a writer that relies on an old garbage blob while a pass runs keeps it (touch between mark and sweep)', async () => {
  const s = await fresh();
  const base = await putImage(s, { seed: 'base', layerCount: 1 });
  await age(s.root, 3 * DAY);
  const writer = new Freshness(s, { refreshAfterMs: DAY, settleMs: 50, skewMs: 0 });
  let relied: string[] | undefined;
  const r = await runPass(s, settings(), {
    // The mark has just found the base image unreachable; a push that deduplicated against its blobs now links a
    // manifest over them (the race Quay lost): the writer's protocol makes it touch them first.
    afterMark: async () => {
      const infos = [...(await s.statBlobs(base.blobs.map((b) => b.digest))).values()];
      relied = await writer.ensure(infos);
      await publish(s, 'late/app', base.manifest, 'v1');
    },
  });
  assert.deepEqual(relied, [], 'nothing was gone when the writer confirmed');
  assert.equal(r.removed.blob ?? 0, 0);
  assert.equal(r.kept.touched, base.blobs.length);
  assert.ok((await present(s, base.blobs)).every(Boolean), 'the late manifest is complete');
});

test('gc: retention removes old tags and expires untagged manifests, keeping an index and its children', async () => {
  const s = await fresh();
  const old = await putImage(s, { seed: 'old' });
  await publish(s, 'ci/app', old.manifest, 'build-1');
  const arm = await putImage(s, { seed: 'arm' });
  const amd = await putImage(s, { seed: 'amd' });
  await publish(s, 'ci/app', arm.manifest);
  await publish(s, 'ci/app', amd.manifest);
  const idx = await putIndex(s, [arm.manifest, amd.manifest]);
  await publish(s, 'ci/app', idx, 'build-2');
  await age(s.root, 10 * DAY);
  const pushed = new Date(Date.now() - 9 * DAY);
  await utimes(join(s.root, 'repos/ci/app/_tags/build-2'), pushed, pushed);
  const cfg = settings({ retention: [{ repos: ['ci/**'], keepLast: 1, untaggedExpireAfter: '7d' }] });
  const plan = await runPass(s, cfg, { dryRun: true });
  assert.deepEqual(plan.plan.filter((p) => p.kind === 'tag').map((p) => p.key), ['repos/ci/app/_tags/build-1']);
  const r = await runPass(s, cfg);
  assert.equal(r.removed.tag, 1);
  assert.equal(r.removed.manifest_link, 1);
  assert.deepEqual(await s.listTags('ci/app'), ['build-2']);
  assert.ok((await present(s, old.blobs)).every((p) => !p), 'the expired image is gone');
  assert.ok((await present(s, [idx, ...arm.blobs, ...amd.blobs])).every(Boolean), 'the kept index keeps its children');
});

test('gc: a pass while another holds the lease does nothing (busy)', async () => {
  const s = await fresh();
  await putBytes(s, Buffer.from('garbage'));
  await age(s.root, 3 * DAY);
  const other = new GcLease(s.objects, { ttlMs: 60_000, skewMs: 0, owner: 'other' });
  assert.equal((await other.acquire()).held, true);
  const r = await runPass(s, settings());
  assert.equal(r.result, 'busy');
  assert.equal(r.removed.blob ?? 0, 0);
  await other.release();
  assert.equal((await runPass(s, settings())).removed.blob, 1);
});

test('gc: touch markers and blob links older than the grace are removed with their blobs', async () => {
  const s = await fresh();
  const blob = await putBytes(s, Buffer.from('mounted but never used'));
  await s.objects.putIfAbsent(`repos/x/_layers/sha256/${blob.digest.slice(7)}`, blob.digest);
  const w = new Freshness(s, { refreshAfterMs: 1, settleMs: 1, skewMs: 0 });
  await age(s.root, 3 * DAY);
  assert.deepEqual(await w.ensure([{ ...blob, lastModified: Date.now() - 3 * DAY }]), []);
  // The touch is fresh: the blob and its link stay this pass.
  assert.equal((await runPass(s, settings())).kept.touched, 1);
  await age(s.root, 3 * DAY);
  const r = await runPass(s, settings());
  assert.equal(r.result, 'success', JSON.stringify(r.stopped));
  assert.equal(r.removed.blob, 1, JSON.stringify(r));
  assert.equal(r.removed.layer_link, 1);
  assert.equal(r.removed.touch, 1);
});
