// The one conformance suite every BlobStore must pass (tus-node-server style). The fs store runs it in unit tests;
// the S3 store runs it against real Ceph RGW. A new backend is done when this passes unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { randomBytes } from 'node:crypto';
import { digestOf } from '@transship/core/digest';
import { isTransshipError } from '@transship/core/errors';
import type { BlobStore } from '../../packages/transship/src/store/contract.js';

export interface ConformanceOptions {
  /** A fresh, empty store per call. */
  make: () => Promise<BlobStore>;
  /** Size above which the store switches strategy (e.g. multipart); the suite writes one blob larger than this. */
  largeBlobSize?: number;
}

const from = (b: Buffer) => () => Readable.from([b]);

export function blobStoreConformance(name: string, opts: ConformanceOptions): void {
  test(`${name}: put then get returns the same bytes, stat reports size`, async () => {
    const store = await opts.make();
    const data = randomBytes(100_000);
    const d = digestOf(data);
    const r = await store.putBlob(d, from(data), { size: data.length });
    assert.equal(r.status, 'written');
    assert.deepEqual(await store.statBlob(d), { digest: d, size: data.length });
    assert.deepEqual(await buffer(await store.getBlob(d)), data);
    await store.close();
  });

  test(`${name}: second put of the same digest is reported as exists and changes nothing`, async () => {
    const store = await opts.make();
    const data = randomBytes(2048);
    const d = digestOf(data);
    assert.equal((await store.putBlob(d, from(data))).status, 'written');
    assert.equal((await store.putBlob(d, from(data))).status, 'exists');
    assert.deepEqual(await buffer(await store.getBlob(d)), data);
    await store.close();
  });

  test(`${name}: wrong digest is rejected with TS_DIGEST_MISMATCH and nothing becomes visible`, async () => {
    const store = await opts.make();
    const data = randomBytes(4096);
    const wrong = digestOf(Buffer.from('something else'));
    await assert.rejects(store.putBlob(wrong, from(data)), (e) => isTransshipError(e, 'TS_DIGEST_MISMATCH'));
    assert.equal(await store.statBlob(wrong), undefined);
    const listed: string[] = [];
    for await (const b of store.listBlobs()) listed.push(b.digest);
    assert.deepEqual(listed, []);
    await store.close();
  });

  test(`${name}: declared size mismatch is rejected with TS_SIZE_MISMATCH`, async () => {
    const store = await opts.make();
    const data = randomBytes(1000);
    const d = digestOf(data);
    await assert.rejects(store.putBlob(d, from(data), { size: 999 }), (e) => isTransshipError(e, 'TS_SIZE_MISMATCH'));
    await assert.rejects(store.putBlob(d, from(data), { size: 1001 }), (e) => isTransshipError(e, 'TS_SIZE_MISMATCH'));
    assert.equal(await store.statBlob(d), undefined);
    await store.close();
  });

  test(`${name}: ranged get returns exactly the requested bytes`, async () => {
    const store = await opts.make();
    const data = randomBytes(10_000);
    const d = digestOf(data);
    await store.putBlob(d, from(data));
    assert.deepEqual(await buffer(await store.getBlob(d, { range: { start: 100, end: 1099 } })), data.subarray(100, 1100));
    assert.deepEqual(await buffer(await store.getBlob(d, { range: { start: 9990, end: 9999 } })), data.subarray(9990));
    await store.close();
  });

  test(`${name}: missing blob gives TS_BLOB_UNKNOWN on get and undefined on stat`, async () => {
    const store = await opts.make();
    const d = digestOf('absent');
    assert.equal(await store.statBlob(d), undefined);
    await assert.rejects(store.getBlob(d), (e) => isTransshipError(e, 'TS_BLOB_UNKNOWN'));
    await store.close();
  });

  test(`${name}: statBlobs answers a batch (few and many) with exactly the present digests`, async () => {
    const store = await opts.make();
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
    await store.close();
  });

  test(`${name}: invalid digests are rejected before touching the backend`, async () => {
    const store = await opts.make();
    for (const bad of ['sha256:../../etc/passwd', 'md5:abc', 'sha256:ABC', '../x', 'sha256:' + 'a'.repeat(63)]) {
      await assert.rejects(store.statBlob(bad), (e) => isTransshipError(e, 'TS_INVALID_DIGEST') || isTransshipError(e, 'TS_UNSUPPORTED_ALGORITHM'));
      await assert.rejects(store.putBlob(bad, from(Buffer.from('x'))), (e) => isTransshipError(e, 'TS_INVALID_DIGEST') || isTransshipError(e, 'TS_UNSUPPORTED_ALGORITHM'));
    }
    await store.close();
  });

  test(`${name}: tags, manifest links, repo listing and repoState`, async () => {
    const store = await opts.make();
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
    await store.close();
  });

  test(`${name}: registry meta keys: put-if-absent, get, has, list (any depth), delete; only under repos/`, async () => {
    const store = await opts.make();
    await store.putMetaIfAbsent('repos/app/blobs/sha256/aa', 'first');
    await store.putMetaIfAbsent('repos/app/blobs/sha256/aa', 'second'); // first writer wins
    await store.putMetaIfAbsent('repos/app/referrers/sha256/bb/sha256/cc', '{}');
    assert.equal(await store.getMeta('repos/app/blobs/sha256/aa'), 'first');
    assert.equal(await store.hasMeta('repos/app/blobs/sha256/zz'), false);
    assert.deepEqual(await store.listMeta('repos/app/'), ['repos/app/blobs/sha256/aa', 'repos/app/referrers/sha256/bb/sha256/cc']);
    await store.deleteMeta('repos/app/blobs/sha256/aa');
    assert.equal(await store.hasMeta('repos/app/blobs/sha256/aa'), false);
    for (const bad of ['blobs/sha256/aa', 'repos/../etc/passwd', '/repos/x', 'repos/a//b', 'repos/UP']) {
      await assert.rejects(store.putMetaIfAbsent(bad, 'x'), (e) => isTransshipError(e, 'TS_INVALID_NAME'), bad);
    }
    await store.close();
  });

  test(`${name}: hostile repository names and tags never reach a key`, async () => {
    const store = await opts.make();
    const d = digestOf('x');
    for (const name of ['../etc', '/abs', 'UPPER', 'a/../b', 'a//b', '', 'x'.repeat(256)]) {
      await assert.rejects(store.putTag(name, 'v1', d), (e) => isTransshipError(e, 'TS_INVALID_NAME'));
      await assert.rejects(store.linkManifest(name, d), (e) => isTransshipError(e, 'TS_INVALID_NAME'));
    }
    for (const tag of ['../x', '.hidden', '-x', 'a/b', 'x'.repeat(129)]) {
      await assert.rejects(store.putTag('ok', tag, d), (e) => isTransshipError(e, 'TS_INVALID_TAG'));
    }
    assert.deepEqual(await store.listRepos(), []);
    await store.close();
  });

  test(`${name}: a source that fails midway leaves nothing visible`, async () => {
    const store = await opts.make();
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
    await store.close();
  });

  if (opts.largeBlobSize) {
    const size = opts.largeBlobSize;
    test(`${name}: a blob above the large-blob threshold round-trips byte-identical`, async () => {
      const store = await opts.make();
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
      await store.close();
    });
  }
}
