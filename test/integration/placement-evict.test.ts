// Eviction of promoted copies on real RGW (each region its own radosgw and bucket): copies idle past the limit go
// and come back lazily; a copy a local repository needs is never evicted (a push that deduplicated against it, a
// blob link born here); no copy goes without an original elsewhere; and the race with a concurrent local push —
// a manifest accepted on a "present" answer cached before the delete — is repaired by the check after grace
// (with no cache, the push is refused and the client re-uploads: nothing lost either way).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buffer } from 'node:stream/consumers';
import { stringify } from 'yaml';
import { S3Store } from '../../src/store/s3-store.js';
import { Regions } from '../../src/placement/regions.js';
import { Rules } from '../../src/placement/rules.js';
import { PlacedReader } from '../../src/placement/read-path.js';
import { DEFAULT_GRACE_MS, Evictor } from '../../src/placement/evict.js';
import { DAY_MS } from '../../src/placement/promoted.js';
import { digestOf } from '../../src/core/digest.js';
import { StoreMetaStore } from '../../src/registry/meta.js';
import type { Descriptor } from '../../src/transfer/types.js';
import { makeOciLayout, type BuiltImage } from '../support/images.js';
import { createTestBucket } from '../support/rgw.js';
import { placementTestConfig, pushTo, regionStore } from '../support/placement.js';
import { startTestRegistry } from '../support/registry.js';

const { cfg, endpoints } = placementTestConfig();
const root = fileURLToPath(new URL('../..', import.meta.url));
const tmp = await mkdtemp(join(tmpdir(), 'ts-evict-'));
test.after(() => rm(tmp, { recursive: true, force: true }));

const LATER = 30 * DAY_MS;
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

async function regions(name: string, n = 2) {
  const names = ['a', 'b', 'c'].slice(0, n);
  const out: Record<string, S3Store> = {};
  for (const [i, r] of names.entries()) out[r] = regionStore(cfg, await createTestBucket(`ev-${name}-${r}`), r, endpoints[i % endpoints.length]!);
  return out as Record<'a' | 'b' | 'c', S3Store>;
}

/** Every blob of `img` (manifest included) read through `reader`: with the default rules, promoted on first read. */
async function readAll(reader: PlacedReader, img: BuiltImage, repo: string) {
  for (const d of [img.root.descriptor, ...img.blobs]) await buffer((await reader.open(d.digest, { repo })).stream);
}

const clock = (offset: () => number) => () => Date.now() + offset();

test('default rules: promoted on the first remote read with a marker; idle past the limit → evicted; a later read fetches it lazily again', async () => {
  const { a, b } = await regions('basic');
  const img = await makeOciLayout(join(tmp, 'basic'), { tag: 'v1', layers: 2, layerSize: 30_000, seed: 'ev-basic' });
  await pushTo(img, a, 'app', 'v1');
  const reader = new PlacedReader(Regions.of('b', { a, b }), new Rules([]));
  assert.equal(reader.rules.promote.reads, 1, 'the price table with eviction promotes on the first read');
  await readAll(reader, img, 'app');
  const all = [img.root.descriptor, ...img.blobs].map((d) => d.digest).sort();
  assert.deepEqual([...(await reader.ledger.list()).keys()].sort(), all, 'one marker per promoted blob');
  for (const d of all) assert.ok(await b.statBlob(d), 'promoted into b');

  const early = await new Evictor(reader.regions, reader.ledger, { idleMs: reader.rules.promote.evictAfterIdleMs, now: clock(() => DAY_MS) }).pass();
  assert.equal(early.warm, all.length, 'read a day ago: nothing to evict');
  assert.equal(early.evicted.length, 0);

  let offset = LATER;
  const evictor = new Evictor(reader.regions, reader.ledger, { idleMs: reader.rules.promote.evictAfterIdleMs, now: clock(() => offset) });
  const r = await evictor.pass();
  assert.deepEqual(r.evicted.map((e) => e.digest).sort(), all);
  assert.equal(r.bytesEvicted, [img.root.descriptor, ...img.blobs].reduce((n, d) => n + d.size, 0));
  for (const d of all) assert.equal(await b.statBlob(d), undefined, 'gone from b');
  for (const d of all) assert.ok(await a.statBlob(d), 'the original in a is untouched');
  offset = LATER + DEFAULT_GRACE_MS + 60_000;
  const confirm = await evictor.pass();
  assert.equal(confirm.confirmed, all.length, 'confirmed after the grace period');
  assert.equal((await reader.ledger.list()).size, 0, 'no markers left');

  const layer = img.layers[0]!;
  const again = await reader.open(layer.digest, { repo: 'app' });
  assert.equal(again.location, 'remote', 'a lazy fetch again');
  assert.equal(digestOf(await buffer(again.stream)), layer.digest);
});

test('a copy a local repository needs is never evicted: a push that deduplicated against it, a blob link born here; a mirrored link proves nothing', async () => {
  const { a, b } = await regions('needs');
  const img = await makeOciLayout(join(tmp, 'needs'), { tag: 'v1', layers: 2, layerSize: 30_000, seed: 'ev-needs' });
  const other = await makeOciLayout(join(tmp, 'needs-other'), { tag: 'v1', layers: 2, layerSize: 30_000, seed: 'ev-needs-other' });
  await pushTo(img, a, 'app', 'v1');
  await pushTo(other, a, 'other', 'v1');
  const reader = new PlacedReader(Regions.of('b', { a, b }), new Rules([]));
  await readAll(reader, img, 'app');
  await readAll(reader, other, 'other');
  // A local push of the same image into b: every blob is already there (dedup), the manifest gets linked.
  const pushed = await pushTo(img, b, 'local/app', 'v1');
  assert.equal(pushed.blobs.uploaded, 0, 'the push deduplicated against the promoted copies');
  // Blob links as the registry writes them with auth on: one born here, one mirrored from a (a read's auth check).
  const [born, mirrored] = other.layers as [Descriptor, Descriptor];
  const link = (repo: string, d: string) => `repos/${repo}/_layers/sha256/${d.slice('sha256:'.length)}`;
  await b.putMetaIfAbsent(link('uploads/here', born.digest), born.digest);
  await a.putMetaIfAbsent(link('other', mirrored.digest), mirrored.digest);
  await b.putMetaIfAbsent(link('other', mirrored.digest), mirrored.digest);

  const r = await new Evictor(reader.regions, reader.ledger, { idleMs: reader.rules.promote.evictAfterIdleMs, now: clock(() => LATER) }).pass();
  const kept = new Map(r.kept.map((k) => [k.digest, k.reason]));
  for (const d of [img.root.descriptor, ...img.blobs]) {
    assert.equal(kept.get(d.digest), 'needed-locally', `${d.digest} is local/app's`);
    assert.ok(await b.statBlob(d.digest));
  }
  assert.equal(kept.get(born.digest), 'needed-locally', 'a blob link born in b is a local upload or mount');
  assert.ok(await b.statBlob(born.digest));
  const evicted = new Set(r.evicted.map((e) => e.digest));
  assert.ok(evicted.has(mirrored.digest), 'a link that exists in a too was copied by a read, not made by a push');
  assert.ok(evicted.has(other.root.descriptor.digest));
  const markers = await reader.ledger.list();
  for (const d of [img.root.descriptor, ...img.blobs]) assert.equal(markers.has(d.digest), false, 'adopted: no longer a cache entry');
});

test('no copy goes without an original elsewhere: two regions\' promoted copies never vouch for each other', async () => {
  const { a, b, c } = await regions('orig', 3);
  const img = await makeOciLayout(join(tmp, 'orig'), { tag: 'v1', layers: 1, layerSize: 20_000, seed: 'ev-orig' });
  await pushTo(img, a, 'app', 'v1');
  const inB = new PlacedReader(Regions.of('b', { a, b, c }, ['a', 'c']), new Rules([]));
  const inC = new PlacedReader(Regions.of('c', { a, b, c }, ['a', 'b']), new Rules([]));
  await readAll(inB, img, 'app');
  await readAll(inC, img, 'app');
  const layer = img.layers[0]!;
  await a.deleteBlob(layer.digest); // the original is gone (deleted by hand in a)
  for (const reader of [inB, inC]) {
    const r = await new Evictor(reader.regions, reader.ledger, { idleMs: reader.rules.promote.evictAfterIdleMs, now: clock(() => LATER) }).pass();
    assert.deepEqual(r.kept.filter((k) => k.digest === layer.digest).map((k) => k.reason), ['no-original-elsewhere']);
    assert.ok(await reader.regions.homeStore.statBlob(layer.digest), `kept in ${reader.regions.home}`);
  }
});

/** A push to the registry of a new image whose single layer is `layer` (the client HEADs it first and skips it). */
async function pushSharing(url: string, repo: string, layer: Descriptor, seed: string) {
  const head = await fetch(`${url}/v2/${repo}/blobs/${layer.digest}`, { method: 'HEAD' });
  assert.equal(head.status, 200, 'the client sees the layer present and does not upload it');
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, seed }));
  const configDigest = digestOf(config);
  const up = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${configDigest}`, { method: 'POST', body: config, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(up.status, 201);
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length }, layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }] }));
  return { manifest, put: () => fetch(`${url}/v2/${repo}/manifests/v1`, { method: 'PUT', body: manifest, headers: { 'content-type': MANIFEST } }) };
}

/** Region a holds an image pushed there; a registry in region b (default rules) with the given presence cache. */
async function raceBed(name: string, presenceTtlMs?: number) {
  const { a, b } = await regions(name);
  const img = await makeOciLayout(join(tmp, name), { tag: 'v1', layers: 1, layerSize: 40_000, seed: `ev-${name}` });
  await pushTo(img, a, 'app', 'v1');
  const placed = new PlacedReader(Regions.of('b', { a, b }), new Rules([]));
  const reg = await startTestRegistry({ store: b, meta: new StoreMetaStore(b), placed, presenceTtlMs });
  return { a, b, img, placed, reg };
}

test('race with a local push: a manifest accepted on a cached "present" after the delete is repaired by the check after grace (reads are served throughout)', async () => {
  const { b, img, placed, reg } = await raceBed('race');
  try {
    const layer = img.layers[0]!;
    const got = await fetch(`${reg.url}/v2/app/blobs/${layer.digest}`);
    assert.equal(got.status, 200);
    await got.arrayBuffer();
    assert.ok(await b.statBlob(layer.digest), 'promoted on the first read');
    // The push HEADs the layer (present: cached by the registry for 30 s) and uploads its config ...
    const push = await pushSharing(reg.url, 'svc', layer, 'race');
    // ... while an eviction pass (a month later) deletes the idle copy ...
    let offset = LATER;
    const evictor = new Evictor(placed.regions, placed.ledger, { idleMs: placed.rules.promote.evictAfterIdleMs, now: clock(() => offset) });
    const r = await evictor.pass();
    assert.ok(r.evicted.some((e) => e.digest === layer.digest));
    assert.equal(await b.statBlob(layer.digest), undefined);
    // ... and then the manifest arrives: accepted on the cached answer. svc:v1 now needs a blob b does not have.
    const put = await push.put();
    assert.equal(put.status, 201, await put.text());
    // Served throughout: a pull in b is a lazy fetch from a's original.
    const during = await fetch(`${reg.url}/v2/svc/blobs/${layer.digest}`);
    assert.equal(during.status, 200);
    assert.equal(digestOf(Buffer.from(await during.arrayBuffer())), layer.digest);
    // The lazy fetch promoted it again (first read): un-promote it to test the repair path on its own.
    await b.deleteBlob(layer.digest);
    offset = LATER + 60_000;
    const within = await evictor.pass();
    assert.ok(within.pending >= 1, 'the check waits for the grace period');
    offset = LATER + DEFAULT_GRACE_MS + 60_000;
    const after = await evictor.pass();
    assert.deepEqual(after.restored.map((x) => x.digest), [layer.digest], 'copied back: a local repository needs it');
    const back = await buffer(await b.getBlob(layer.digest));
    assert.equal(digestOf(back), layer.digest);
    assert.equal((await placed.ledger.list()).has(layer.digest), false, 'adopted: never evicted again');
  } finally {
    await reg.close();
  }
});

test('race with a local push and no cached answer: the manifest is refused, the client re-uploads, nothing is lost', async () => {
  const { a, b, img, placed, reg } = await raceBed('race0', 0);
  try {
    const layer = img.layers[0]!;
    await (await fetch(`${reg.url}/v2/app/blobs/${layer.digest}`)).arrayBuffer();
    const push = await pushSharing(reg.url, 'svc', layer, 'race0');
    let offset = LATER;
    const evictor = new Evictor(placed.regions, placed.ledger, { idleMs: placed.rules.promote.evictAfterIdleMs, now: clock(() => offset) });
    assert.ok((await evictor.pass()).evicted.some((e) => e.digest === layer.digest));
    const refused = await push.put();
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'MANIFEST_BLOB_UNKNOWN');
    const bytes = await buffer(await a.getBlob(layer.digest));
    const re = await fetch(`${reg.url}/v2/svc/blobs/uploads/?digest=${layer.digest}`, { method: 'POST', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(re.status, 201);
    assert.equal((await push.put()).status, 201);
    offset = LATER + DEFAULT_GRACE_MS + 60_000;
    const after = await evictor.pass();
    assert.equal(after.restored.length, 0, 'already back: the push re-uploaded it');
    assert.ok(await b.statBlob(layer.digest));
    assert.equal((await placed.ledger.list()).has(layer.digest), false, 'the pushed copy is the repository\'s, not a cache entry');
  } finally {
    await reg.close();
  }
});

test('cli: `placement evict --dry-run` deletes nothing, `placement evict` does; status and cost show promoted bytes', async () => {
  const { a, b } = await regions('cli');
  const img = await makeOciLayout(join(tmp, 'cli'), { tag: 'v1', layers: 1, layerSize: 20_000, seed: 'ev-cli' });
  await pushTo(img, a, 'app', 'v1');
  const file = join(tmp, 'cli.yaml');
  await writeFile(file, stringify({
    region: 'b',
    regions: { a: { store: `s3://${a.bucket}`, s3: { endpoint: endpoints[0] } }, b: { store: `s3://${b.bucket}`, s3: { endpoint: endpoints[1 % endpoints.length] } } },
    placement: { promote: { evictAfterIdle: '1s' } },
  }));
  const reader = new PlacedReader(Regions.of('b', { a, b }), new Rules([], { evictAfterIdleMs: 1000 }));
  await readAll(reader, img, 'app');
  await new Promise((r) => setTimeout(r, 2500)); // idle past 1 s (stamps are per second at this limit)
  const env = { ...process.env, AWS_ACCESS_KEY_ID: cfg.accessKeyId, AWS_SECRET_ACCESS_KEY: cfg.secretAccessKey, AWS_REGION: cfg.region, TRANSSHIP_CONFIG: file };
  const cli = (args: string[]) => spawnSync(process.execPath, [join(root, 'bin', 'transship.js'), ...args], { env, encoding: 'utf8', timeout: 60_000 });
  const all = [img.root.descriptor, ...img.blobs];
  const total = all.reduce((n, d) => n + d.size, 0);
  const st = cli(['placement', 'status', '--json']);
  assert.equal(st.status, 0, st.stderr);
  const status = JSON.parse(st.stdout);
  assert.equal(status.promote.reads, 1);
  assert.equal(status.promote.evictAfterIdleSeconds, 1);
  const inB = status.regions.find((r: { name: string }) => r.name === 'b');
  assert.deepEqual(inB.promoted, { blobs: all.length, bytes: total, idleBlobs: all.length, idleBytes: total });
  const cost = cli(['cost', '--json']);
  assert.equal(cost.status, 0, cost.stderr);
  assert.equal(JSON.parse(cost.stdout).promoted.bytes, total);
  const dry = cli(['placement', 'evict', '--dry-run', '--json']);
  assert.equal(dry.status, 0, dry.stderr);
  assert.equal(JSON.parse(dry.stdout).evicted.length, all.length);
  for (const d of all) assert.ok(await b.statBlob(d.digest), 'a dry run deletes nothing');
  const real = cli(['placement', 'evict']);
  assert.equal(real.status, 0, real.stderr);
  assert.match(real.stdout, new RegExp(`evicted ${all.length} \\(`));
  for (const d of all) assert.equal(await b.statBlob(d.digest), undefined);
});
