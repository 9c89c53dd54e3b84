// The one conformance suite every BlobStore must pass (tus-node-server style). The fs store runs it in unit tests;
// the S3 store runs it against real Ceph RGW. A new backend is done when this passes unchanged.
//
// Every case runs on a fresh store and returns the keys it meant to keep; the teardown then checks that the store
// holds exactly those (no temp files, no staged objects, no claims, no open multipart uploads): "nothing left
// behind" is part of the contract, not a property each test remembers to check.
import { test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { randomBytes } from 'node:crypto';
import { digestOf } from '../../src/core/digest.js';
import { isTransshipError } from '../../src/core/errors.js';
import type { BlobStore } from '../../src/store/contract.js';
import {
  LAYOUT_KEY, blobKey, layerLinkKey, legacyRepoKeyString, manifestLinkKey, referrerKey, tagKey,
} from '../../src/store/keys.js';

export interface ConformanceOptions {
  /** A fresh, empty store per call. */
  make: () => Promise<BlobStore>;
  /** Size above which the store switches strategy (e.g. multipart); the suite writes one blob larger than this. */
  largeBlobSize?: number;
}

const from = (b: Buffer) => () => Readable.from([b]);

/** Every key, pending upload and temporary object in the store, for the teardown's comparison. */
export async function storeContents(store: BlobStore): Promise<{ keys: string[]; uploads: string[]; temporary: string[] }> {
  const keys: string[] = [];
  for await (const o of store.objects.list('')) keys.push(o.key);
  const uploads: string[] = [];
  for await (const u of store.objects.listUploads('')) uploads.push(u.key);
  const temporary: string[] = [];
  if (store.listTemporary) for await (const t of store.listTemporary()) temporary.push(t.key);
  return { keys: keys.sort(), uploads, temporary };
}

export async function assertNothingLeftBehind(store: BlobStore, keep: readonly string[]): Promise<void> {
  assert.deepEqual(await storeContents(store), { keys: [...new Set(keep)].sort(), uploads: [], temporary: [] }, 'the store holds exactly what the case meant to keep');
}

export function blobStoreConformance(name: string, opts: ConformanceOptions): void {
  /** A case on a fresh store; `fn` returns the keys it meant to keep. */
  const test = (title: string, fn: (store: BlobStore) => Promise<readonly string[]>): void => {
    nodeTest(`${name}: ${title}`, async () => {
      const store = await opts.make();
      try {
        await assertNothingLeftBehind(store, await fn(store));
      } finally {
        await store.close();
      }
    });
  };
  test(`put then get returns the same bytes, stat reports size`, async (store) => {
    const data = randomBytes(100_000);
    const d = digestOf(data);
    const r = await store.putBlob(d, from(data), { size: data.length });
    assert.equal(r.status, 'written');
    const info = await store.statBlob(d);
    assert.deepEqual({ digest: info?.digest, size: info?.size }, { digest: d, size: data.length });
    // GC's writers need the write time to know whether to touch a blob first (src/gc/freshness.ts).
    assert.ok(info?.lastModified !== undefined && Math.abs(info.lastModified - Date.now()) < 120_000, `lastModified ${info?.lastModified}`);
    assert.deepEqual(await buffer(await store.getBlob(d)), data);
    return [blobKey(d)];
  });

  test(`second put of the same digest is reported as exists and changes nothing`, async (store) => {
    const data = randomBytes(2048);
    const d = digestOf(data);
    assert.equal((await store.putBlob(d, from(data))).status, 'written');
    assert.equal((await store.putBlob(d, from(data))).status, 'exists');
    assert.deepEqual(await buffer(await store.getBlob(d)), data);
    return [blobKey(d)];
  });

  test(`wrong digest is rejected with TS_DIGEST_MISMATCH and nothing becomes visible`, async (store) => {
    const data = randomBytes(4096);
    const wrong = digestOf(Buffer.from('something else'));
    await assert.rejects(store.putBlob(wrong, from(data)), (e) => isTransshipError(e, 'TS_DIGEST_MISMATCH'));
    assert.equal(await store.statBlob(wrong), undefined);
    const listed: string[] = [];
    for await (const b of store.listBlobs()) listed.push(b.digest);
    assert.deepEqual(listed, []);
    return [];
  });

  test(`declared size mismatch is rejected with TS_SIZE_MISMATCH`, async (store) => {
    const data = randomBytes(1000);
    const d = digestOf(data);
    await assert.rejects(store.putBlob(d, from(data), { size: 999 }), (e) => isTransshipError(e, 'TS_SIZE_MISMATCH'));
    await assert.rejects(store.putBlob(d, from(data), { size: 1001 }), (e) => isTransshipError(e, 'TS_SIZE_MISMATCH'));
    assert.equal(await store.statBlob(d), undefined);
    return [];
  });

  test(`ranged get returns exactly the requested bytes`, async (store) => {
    const data = randomBytes(10_000);
    const d = digestOf(data);
    await store.putBlob(d, from(data));
    assert.deepEqual(await buffer(await store.getBlob(d, { range: { start: 100, end: 1099 } })), data.subarray(100, 1100));
    assert.deepEqual(await buffer(await store.getBlob(d, { range: { start: 9990, end: 9999 } })), data.subarray(9990));
    return [blobKey(d)];
  });

  test(`missing blob gives TS_BLOB_UNKNOWN on get and undefined on stat`, async (store) => {
    const d = digestOf('absent');
    assert.equal(await store.statBlob(d), undefined);
    await assert.rejects(store.getBlob(d), (e) => isTransshipError(e, 'TS_BLOB_UNKNOWN'));
    return [];
  });

  test(`statBlobs answers a batch (few and many) with exactly the present digests`, async (store) => {
    const present: string[] = [];
    for (let i = 0; i < 7; i++) {
      const b = Buffer.from(`blob-${i}-${Math.random()}`);
      const d = digestOf(b);
      await store.putBlob(d, from(b));
      present.push(d);
    }
    const absent = Array.from({ length: 5 }, (_, i) => digestOf(`nope-${i}`));
    const few = await store.statBlobs([present[0] as string, absent[0] as string]);
    assert.deepEqual([...few.keys()], [present[0]]);
    const many = await store.statBlobs([...absent, ...present]);
    assert.deepEqual([...many.keys()].sort(), [...present].sort());
    return present.map(blobKey);
  });

  test(`invalid digests are rejected before touching the backend`, async (store) => {
    for (const bad of ['sha256:../../etc/passwd', 'md5:abc', 'sha256:ABC', '../x', 'sha256:' + 'a'.repeat(63)]) {
      await assert.rejects(store.statBlob(bad), (e) => isTransshipError(e, 'TS_INVALID_DIGEST') || isTransshipError(e, 'TS_UNSUPPORTED_ALGORITHM'));
      await assert.rejects(store.putBlob(bad, from(Buffer.from('x'))), (e) => isTransshipError(e, 'TS_INVALID_DIGEST') || isTransshipError(e, 'TS_UNSUPPORTED_ALGORITHM'));
    }
    return [];
  });

  test(`tags, manifest links, repo listing and repoState`, async (store) => {
    const m1 = digestOf('manifest-1');
    const m2 = digestOf('manifest-2');
    await store.linkManifest('library/app', m1);
    await store.linkManifest('library/app', m1); // idempotent
    await store.putTag('library/app', 'v1', m1);
    await store.putTag('library/app', 'v2', m2);
    await store.putTag('other', 'latest', m2);
    assert.equal(await store.getTag('library/app', 'v1'), m1);
    assert.equal(await store.getTag('library/app', 'nope'), undefined);
    assert.deepEqual(await store.listTags('library/app'), ['v1', 'v2']);
    assert.deepEqual(await store.listManifestLinks('library/app'), [m1]);
    assert.equal(await store.hasManifestLink('library/app', m1), true);
    assert.equal(await store.hasManifestLink('library/app', m2), false);
    assert.deepEqual(await store.listRepos(), ['library/app', 'other']);
    const state = await store.repoState('library/app');
    assert.deepEqual([...state.tags.keys()].sort(), ['v1', 'v2']);
    assert.deepEqual([...state.manifests], [m1]);
    await store.putTag('library/app', 'v1', m2); // tags move
    assert.equal(await store.getTag('library/app', 'v1'), m2);
    await store.deleteTag('library/app', 'v2');
    assert.deepEqual(await store.listTags('library/app'), ['v1']);
    await store.unlinkManifest('library/app', m1);
    assert.deepEqual(await store.listManifestLinks('library/app'), []);
    return [tagKey('library/app', 'v1'), tagKey('other', 'latest')];
  });

  test(`registry meta keys: put-if-absent, get, has, list (any depth), delete; only under the layout's roots`, async (store) => {
    const blob = digestOf('linked blob');
    const subject = digestOf('subject');
    const referrer = digestOf('referrer');
    const link = layerLinkKey('app', blob);
    const ref = referrerKey('app', subject, referrer);
    await store.putMetaIfAbsent(link, 'first');
    await store.putMetaIfAbsent(link, 'second'); // first writer wins
    await store.putMetaIfAbsent(ref, '{}');
    assert.equal(await store.getMeta(link), 'first');
    assert.equal(await store.hasMeta(layerLinkKey('app', digestOf('other'))), false);
    assert.deepEqual(await store.listMeta('repos/app/'), [link, ref].sort());
    await store.deleteMeta(link);
    assert.equal(await store.hasMeta(link), false);
    for (const bad of ['blobs/sha256/aa', 'repos/../etc/passwd', '/repos/x', 'repos/a//b', 'repos/UP', '_uploads/x', 'claims/sha256/aa', LAYOUT_KEY]) {
      await assert.rejects(store.putMetaIfAbsent(bad, 'x'), (e) => isTransshipError(e, 'TS_INVALID_NAME'), bad);
    }
    return [ref];
  });

  test(`object driver: put-if-absent, stat, list with sizes, times and startAfter, deleteMany`, async (store) => {
    const o = store.objects;
    assert.equal(await o.putIfAbsent('_gc/lease', '{"owner":"a"}'), true);
    assert.equal(await o.putIfAbsent('_gc/lease', '{"owner":"b"}'), false, 'the second writer loses');
    assert.equal(await o.get('_gc/lease'), '{"owner":"a"}');
    await o.put('_gc/lease', '{"owner":"c"}');
    assert.equal(await o.get('_gc/lease'), '{"owner":"c"}');
    const before = Date.now() - 60_000;
    for (const k of ['_gc/c/1', '_gc/c/2', '_gc/c/3', '_gc/d']) await o.put(k, k);
    const listed = [];
    for await (const i of o.list('_gc/')) listed.push(i);
    assert.deepEqual(listed.map((i) => i.key), ['_gc/c/1', '_gc/c/2', '_gc/c/3', '_gc/d', '_gc/lease']);
    assert.deepEqual(listed.map((i) => i.size), [7, 7, 7, 5, 13]);
    assert.ok(listed.every((i) => i.lastModified > before && i.lastModified < Date.now() + 60_000), 'lastModified is a time');
    const after = [];
    for await (const i of o.list('_gc/c/', { startAfter: '_gc/c/1' })) after.push(i.key);
    assert.deepEqual(after, ['_gc/c/2', '_gc/c/3']);
    assert.equal((await o.stat('_gc/d'))?.size, 5);
    assert.equal(await o.stat('_gc/none'), undefined);
    const r = await o.deleteMany(['_gc/c/1', '_gc/c/2', '_gc/c/3', '_gc/absent']);
    assert.deepEqual(r, { deleted: 4, errors: [] }, 'deleting an absent key is not an error');
    assert.equal(await o.get('_gc/c/2'), undefined);
    await o.delete('_gc/d');
    await o.delete('_gc/d'); // idempotent
    return ['_gc/lease'];
  });

  test(`a repository named team/tags/app is listed as itself, and team sees no tag app`, async (store) => {
    // Regression: the old layout's `repos/<name>/tags/…` made this push look like repository `team`, tag `app`.
    const m = digestOf('team/tags/app manifest');
    await store.linkManifest('team/tags/app', m);
    await store.putTag('team/tags/app', 'v1', m);
    await store.linkManifest('team/manifests/x', m);
    assert.deepEqual(await store.listRepos(), ['team/manifests/x', 'team/tags/app']);
    assert.deepEqual(await store.listTags('team'), []);
    assert.deepEqual(await store.listManifestLinks('team'), []);
    const team = await store.repoState('team');
    assert.deepEqual([team.tags.size, team.manifests.size], [0, 0]);
    assert.deepEqual(await store.listTags('team/tags/app'), ['v1']);
    assert.equal(await store.getTag('team/tags/app', 'v1'), m);
    const state = await store.repoState('team/tags/app');
    assert.deepEqual([[...state.tags.keys()], [...state.manifests]], [['v1'], [m]]);
    // The parent appears once it has a tag of its own, and still does not see its children's.
    await store.putTag('team', 'latest', m);
    assert.deepEqual(await store.listRepos(), ['team', 'team/manifests/x', 'team/tags/app']);
    assert.deepEqual(await store.listTags('team'), ['latest']);
    return [manifestLinkKey('team/tags/app', m), tagKey('team/tags/app', 'v1'), manifestLinkKey('team/manifests/x', m), tagKey('team', 'latest')];
  });

  test(`the layout's own names are refused as repository names (a/_x, _tags, a/_manifests)`, async (store) => {
    const d = digestOf('x');
    for (const name of ['a/_x', '_tags', 'a/_manifests', 'a/_layers/b', '_placement']) {
      await assert.rejects(store.putTag(name, 'v1', d), (e) => isTransshipError(e, 'TS_INVALID_NAME'), name);
      await assert.rejects(store.linkManifest(name, d), (e) => isTransshipError(e, 'TS_INVALID_NAME'), name);
      await assert.rejects(store.listTags(name), (e) => isTransshipError(e, 'TS_INVALID_NAME'), name);
    }
    return [];
  });

  test(`a repository with nothing left leaves listRepos; one with only manifests stays with no tags`, async (store) => {
    // Regression (issue 20 item 4): the catalog kept a repository whose tags/list answered 404.
    const m = digestOf('m');
    await store.linkManifest('gone', m);
    await store.putTag('gone', 'v1', m);
    await store.linkManifest('kept', m);
    await store.putTag('kept', 'v1', m);
    await store.deleteTag('gone', 'v1');
    await store.unlinkManifest('gone', m);
    await store.deleteTag('kept', 'v1');
    assert.deepEqual(await store.listRepos(), ['kept']);
    assert.deepEqual(await store.listTags('kept'), []);
    assert.deepEqual(await store.listManifestLinks('kept'), [m]);
    return [manifestLinkKey('kept', m)];
  });

  test(`old-layout keys are read until the store is migrated, and deletes remove them`, async (store) => {
    const m1 = digestOf('old manifest');
    const m2 = digestOf('new manifest');
    const blob = digestOf('old linked blob');
    const old = (k: Parameters<typeof legacyRepoKeyString>[0]) => legacyRepoKeyString(k);
    await store.objects.put(old({ kind: 'tag', repo: 'team/tags/app', tag: 'v1' }), m1);
    await store.objects.put(old({ kind: 'tag', repo: 'team/tags/app', tag: 'v2' }), m1);
    await store.objects.put(old({ kind: 'manifest', repo: 'team/tags/app', digest: m1 }), m1);
    await store.objects.put(old({ kind: 'layer', repo: 'team/tags/app', digest: blob }), blob);
    await store.objects.put('repos/_placement/evictions/5', '[]');
    await store.putTag('team/tags/app', 'v2', m2); // a write after the upgrade wins over the old key
    assert.deepEqual(await store.listRepos(), ['team/tags/app'], 'the old key of team/tags/app is parsed right');
    assert.deepEqual(await store.listTags('team'), []);
    assert.deepEqual(await store.listTags('team/tags/app'), ['v1', 'v2']);
    assert.equal(await store.getTag('team/tags/app', 'v1'), m1);
    assert.equal(await store.getTag('team/tags/app', 'v2'), m2);
    assert.equal(await store.hasManifestLink('team/tags/app', m1), true);
    assert.deepEqual(await store.listManifestLinks('team/tags/app'), [m1]);
    const state = await store.repoState('team/tags/app');
    assert.deepEqual([...state.tags.keys()].sort(), ['v1', 'v2']);
    assert.deepEqual([...state.manifests], [m1]);
    assert.equal(await store.hasMeta(layerLinkKey('team/tags/app', blob)), true);
    assert.deepEqual(await store.listMeta('repos/team/tags/app/_layers/'), [layerLinkKey('team/tags/app', blob)]);
    assert.deepEqual(await store.listMeta('_placement/'), ['_placement/evictions/5']);
    await store.deleteTag('team/tags/app', 'v2');
    assert.deepEqual(await store.listTags('team/tags/app'), ['v1'], 'deleting a tag removes its old key too');
    // Once the marker says the store was migrated, old keys are no longer looked at.
    await store.objects.put(LAYOUT_KEY, '{"version":2}');
    store.layoutChanged?.();
    assert.deepEqual(await store.listTags('team/tags/app'), []);
    assert.equal(await store.getTag('team/tags/app', 'v1'), undefined);
    return [
      LAYOUT_KEY, 'repos/_placement/evictions/5',
      old({ kind: 'tag', repo: 'team/tags/app', tag: 'v1' }),
      old({ kind: 'manifest', repo: 'team/tags/app', digest: m1 }),
      old({ kind: 'layer', repo: 'team/tags/app', digest: blob }),
    ];
  });

  test(`hostile repository names and tags never reach a key`, async (store) => {
    const d = digestOf('x');
    for (const name of ['../etc', '/abs', 'UPPER', 'a/../b', 'a//b', '', 'x'.repeat(256)]) {
      await assert.rejects(store.putTag(name, 'v1', d), (e) => isTransshipError(e, 'TS_INVALID_NAME'));
      await assert.rejects(store.linkManifest(name, d), (e) => isTransshipError(e, 'TS_INVALID_NAME'));
    }
    for (const tag of ['../x', '.hidden', '-x', 'a/b', 'x'.repeat(129)]) {
      await assert.rejects(store.putTag('ok', tag, d), (e) => isTransshipError(e, 'TS_INVALID_TAG'));
    }
    assert.deepEqual(await store.listRepos(), []);
    return [];
  });

  test(`a source that fails midway leaves nothing visible`, async (store) => {
    const data = randomBytes(opts.largeBlobSize ? opts.largeBlobSize + 1024 : 64 * 1024);
    const d = digestOf(data);
    const failing = () =>
      Readable.from(
        (async function* () {
          yield data.subarray(0, Math.floor(data.length / 2));
          throw Object.assign(new Error('source broke'), { code: 'ESOURCE' });
        })(),
      );
    await assert.rejects(store.putBlob(d, failing, { size: data.length }));
    assert.equal(await store.statBlob(d), undefined);
    return [];
  });

  test(`a staged upload leaves nothing behind, committed or aborted`, async (store) => {
    if (!store.stageBlob) return [];
    const data = randomBytes(1024);
    const d = digestOf(data);
    const aborted = await store.stageBlob();
    await aborted.addPart(data);
    await aborted.abort();
    const staged = await store.stageBlob();
    await staged.addPart(data);
    assert.equal((await staged.commit(d, data.length)).status, 'written');
    assert.deepEqual(await buffer(await store.getBlob(d)), data);
    return [blobKey(d)];
  });

  if (opts.largeBlobSize) {
    const size = opts.largeBlobSize;
    test(`a blob above the large-blob threshold round-trips byte-identical`, async (store) => {
      const data = randomBytes(size + 3 * 1024 * 1024 + 17);
      const d = digestOf(data);
      // Stream in odd-sized chunks so part boundaries do not align with chunk boundaries.
      const src = () => Readable.from((function* () {
        for (let i = 0; i < data.length; i += 1_000_003) yield data.subarray(i, i + 1_000_003);
      })());
      assert.equal((await store.putBlob(d, src, { size: data.length })).status, 'written');
      assert.deepEqual(await buffer(await store.getBlob(d)), data);
      assert.equal((await store.putBlob(d, src, { size: data.length })).status, 'exists');
      // Unknown size: the store must discover it is large while streaming.
      const data2 = randomBytes(size + 1024);
      const d2 = digestOf(data2);
      assert.equal((await store.putBlob(d2, from(data2))).status, 'written');
      assert.deepEqual(await buffer(await store.getBlob(d2)), data2);
      // Wrong digest on a large blob: rejected, nothing visible.
      const wrong = digestOf('not this');
      await assert.rejects(store.putBlob(wrong, src), (e) => isTransshipError(e, 'TS_DIGEST_MISMATCH'));
      assert.equal(await store.statBlob(wrong), undefined);
      return [blobKey(d), blobKey(d2)];
    });
  }
}
