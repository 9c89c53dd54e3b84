// One old-layout store, as a version before the reserved layout wrote it, for the migrate tests on fs and RGW: the
// keys every kind of fact had, the team/tags/app name the old layout misread, a tag moved after the upgrade, and a
// key an interrupted migration already copied.
import assert from 'node:assert/strict';
import { digestOf } from '../../src/core/digest.js';
import type { BlobStore } from '../../src/store/contract.js';
import { migrateLayout } from '../../src/store/migrate.js';
import {
  LAYOUT_KEY, evictionRecordKey, layerLinkKey, legacyRepoKeyString, manifestLinkKey, promotedReadKey, referrerKey, tagKey,
} from '../../src/store/keys.js';
import { storeContents } from './store-conformance.js';

const m1 = digestOf('old manifest 1');
const m2 = digestOf('old manifest 2');
const moved = digestOf('manifest pushed after the upgrade');
const layer = digestOf('a layer');
const sig = digestOf('a signature');
const blob = Buffer.from('blob bytes');

export async function seedOldLayout(store: BlobStore): Promise<void> {
  const o = store.objects;
  const old = legacyRepoKeyString;
  await store.putBlob(digestOf(blob), async () => (await import('node:stream')).Readable.from([blob]));
  await o.put(old({ kind: 'tag', repo: 'team/tags/app', tag: 'v1' }), m1);
  await o.put(old({ kind: 'manifest', repo: 'team/tags/app', digest: m1 }), m1);
  await o.put(old({ kind: 'tag', repo: 'library/app', tag: 'latest' }), m1);
  await o.put(old({ kind: 'tag', repo: 'library/app', tag: 'v2' }), m2);
  await o.put(old({ kind: 'manifest', repo: 'library/app', digest: m1 }), m1);
  await o.put(old({ kind: 'manifest', repo: 'library/app', digest: m2 }), m2);
  await o.put(old({ kind: 'layer', repo: 'library/app', digest: layer }), layer);
  await o.put(old({ kind: 'referrer', repo: 'library/app', subject: m1, digest: sig }), `{"digest":"${sig}"}`);
  await o.put(`repos/_placement/promoted/sha256/${layer.slice(7)}/read/1000`, 'eu');
  await o.put('repos/_placement/evictions/2000', '[]');
  // Since the upgrade: the new version moved `latest` (its key wins over the old one) ...
  await store.putTag('library/app', 'latest', moved);
  // ... and an interrupted migrate copied this key but did not delete its old twin.
  await o.put(manifestLinkKey('library/app', m2), m2);
}

/** Every key the seeded store holds once migrated. */
export function migratedKeys(store: BlobStore): string[] {
  void store;
  return [
    `blobs/sha256/${digestOf(blob).slice(7)}`,
    tagKey('team/tags/app', 'v1'),
    manifestLinkKey('team/tags/app', m1),
    tagKey('library/app', 'latest'),
    tagKey('library/app', 'v2'),
    manifestLinkKey('library/app', m1),
    manifestLinkKey('library/app', m2),
    layerLinkKey('library/app', layer),
    referrerKey('library/app', m1, sig),
    promotedReadKey(layer, 1000),
    evictionRecordKey(2000),
    LAYOUT_KEY,
  ].sort();
}

/** The whole migrate story on one store: dry run, migrate, what readers see, re-run. */
export async function migrateStory(store: BlobStore, batchSize?: number): Promise<void> {
  await seedOldLayout(store);
  const before = await storeContents(store);
  // Unmigrated, the store already answers right (old keys read as a fallback).
  assert.deepEqual(await store.listRepos(), ['library/app', 'team/tags/app']);
  assert.equal(await store.getTag('library/app', 'latest'), moved, 'the tag moved after the upgrade wins');

  const plan: string[] = [];
  const dry = await migrateLayout(store, { dryRun: true, batchSize, onMove: (m) => plan.push(`${m.from} -> ${m.to}`) });
  assert.deepEqual(await storeContents(store), before, 'a dry run changes nothing');
  assert.equal(dry.moved, 10);
  assert.equal(dry.marker, false);
  assert.ok(plan.includes('repos/team/tags/app/tags/v1 -> repos/team/tags/app/_tags/v1'), plan.join('\n'));
  assert.ok(plan.includes('repos/_placement/evictions/2000 -> _placement/evictions/2000'), plan.join('\n'));

  const r = await migrateLayout(store, { batchSize });
  assert.deepEqual({ moved: r.moved, alreadyPresent: r.alreadyPresent, deleted: r.deleted, errors: r.errors, marker: r.marker }, { moved: 8, alreadyPresent: 2, deleted: 10, errors: [], marker: true });
  assert.deepEqual((await storeContents(store)).keys, migratedKeys(store));
  assert.equal(await store.getTag('library/app', 'latest'), moved, 'the old body did not overwrite the newer tag');
  assert.equal(await store.getTag('library/app', 'v2'), m2);
  assert.deepEqual(await store.listTags('team'), []);
  assert.deepEqual(await store.listTags('team/tags/app'), ['v1']);
  assert.deepEqual(await store.listMeta('_placement/'), [evictionRecordKey(2000), promotedReadKey(layer, 1000)].sort());

  const again = await migrateLayout(store, { batchSize });
  assert.deepEqual({ moved: again.moved, deleted: again.deleted, marker: again.marker }, { moved: 0, deleted: 0, marker: true }, 'a re-run has nothing to do');
}
