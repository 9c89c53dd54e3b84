// Regions on real RGW: each "region" is its own radosgw daemon (own port) and bucket on one Ceph cluster.
// Push in A, pull in B (lazy fetch, counted remote), promotion after the threshold (then local), a DR rule
// replicating eagerly, kill -9 of the replicator and a restart that does not re-copy, a region that is down, and a
// blob corrupted in flight (rejected, never stored).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buffer } from 'node:stream/consumers';
import { stringify } from 'yaml';
import { S3Store } from '../../src/store/s3-store.js';
import { Regions } from '../../src/placement/regions.js';
import { Rules, type Rule } from '../../src/placement/rules.js';
import { PlacedReader } from '../../src/placement/read-path.js';
import { Replicator } from '../../src/placement/replicator.js';
import { isTransshipError } from '../../src/core/errors.js';
import { registry } from '../../src/telemetry/metrics.js';
import { RepoLinks } from '../../src/registry/links.js';
import { metaStoreFor } from '../../src/registry/meta.js';
import { copyRepoLinks } from '../../src/placement/links.js';
import { makeOciLayout } from '../support/images.js';
import { createTestBucket } from '../support/rgw.js';
import { placementTestConfig, pushTo, regionStore } from '../support/placement.js';
import { startS3Proxy } from '../support/s3-proxy.js';

const { cfg, endpoints } = placementTestConfig();
const root = fileURLToPath(new URL('../..', import.meta.url));
const tmp = await mkdtemp(join(tmpdir(), 'ts-place-'));
test.after(() => rm(tmp, { recursive: true, force: true }));

const store = (bucket: string, region: string, endpoint: string): S3Store => regionStore(cfg, bucket, region, endpoint);

async function threeRegions(name: string) {
  const buckets = { a: await createTestBucket(`${name}-a`), b: await createTestBucket(`${name}-b`), c: await createTestBucket(`${name}-c`) };
  const eps = { a: endpoints[0]!, b: endpoints[1]!, c: endpoints[2] ?? endpoints[0]! };
  return { buckets, eps };
}

async function counter(name: string, labels: Record<string, string>): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  return (m?.values ?? []).filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
}

test('push in A, pull in B: a lazy fetch counted as remote, nothing written in B until the threshold; then promoted and local', async () => {
  const { buckets, eps } = await threeRegions('lazy');
  const a = store(buckets.a, 'a', eps.a);
  const b = store(buckets.b, 'b', eps.b);
  const img = await makeOciLayout(join(tmp, 'lazy'), { tag: 'v1', layers: 2, layerSize: 200_000, seed: 'lazy' });
  await pushTo(img, a, 'app', 'v1');
  const reader = new PlacedReader(Regions.of('b', { a, b }), new Rules([], { policy: 'demand', reads: 3, windowMs: 60_000 }));
  const layer = img.layers[0]!;
  const expected = await buffer((await a.getBlob(layer.digest)));
  const remoteBefore = await counter('blob_reads_total', { location: 'remote' });
  const localBefore = await counter('blob_reads_total', { location: 'local' });
  const crossBefore = await counter('cross_region_upload_bytes_total', { from: 'a', to: 'b' });
  for (let i = 1; i <= 2; i++) {
    const r = await reader.open(layer.digest, { repo: 'app' });
    assert.equal(r.location, 'remote');
    assert.equal(r.promoted, false);
    assert.deepEqual(await buffer(r.stream), expected);
    assert.equal(await b.statBlob(layer.digest), undefined, 'not replicated below the threshold');
  }
  const third = await reader.open(layer.digest, { repo: 'app' });
  assert.equal(third.promoted, true, 'third remote read within the window promotes');
  assert.deepEqual(await buffer(third.stream), expected);
  assert.equal((await b.statBlob(layer.digest))?.size, layer.size);
  const fourth = await reader.open(layer.digest, { repo: 'app' });
  assert.equal(fourth.location, 'local');
  await buffer(fourth.stream);
  assert.equal((await counter('blob_reads_total', { location: 'remote' })) - remoteBefore, 3);
  assert.equal((await counter('blob_reads_total', { location: 'local' })) - localBefore, 1);
  assert.equal((await counter('cross_region_upload_bytes_total', { from: 'a', to: 'b' })) - crossBefore, layer.size);
  const ratio = (await registry.getSingleMetric('blob_hit_ratio_local_vs_remote')?.get())?.values[0]?.value ?? -1;
  assert.ok(ratio > 0 && ratio < 1, `hit ratio ${ratio}`);
  // The tag pushed in A is found from B too.
  assert.deepEqual(await reader.getTag('app', 'v1'), { digest: img.manifestDigest, region: 'a' });
  for (const s of [a, b]) await s.close();
});

test('a DR rule replicates eagerly to the other regions; a second pass copies nothing', async () => {
  const { buckets, eps } = await threeRegions('dr');
  const a = store(buckets.a, 'a', eps.a);
  const b = store(buckets.b, 'b', eps.b);
  const c = store(buckets.c, 'c', eps.c);
  const img = await makeOciLayout(join(tmp, 'dr'), { tag: 'v1', layers: 3, layerSize: 100_000, seed: 'dr' });
  const other = await makeOciLayout(join(tmp, 'dr-other'), { tag: 'v1', layers: 1, layerSize: 1000, seed: 'dr-other' });
  await pushTo(img, a, 'prod/api', 'v1');
  await pushTo(other, a, 'dev/toy', 'v1');
  const rules: Rule[] = [{ repos: ['prod/**'], reason: 'dr' }, { repos: ['**'], reason: 'demand' }];
  const rep = new Replicator(Regions.of('a', { a, b, c }), new Rules(rules));
  const first = await rep.reconcile();
  assert.equal(first.failed.length, 0, JSON.stringify(first.failed));
  assert.deepEqual(first.copied.map((x) => `${x.repo}:${x.tag}->${x.to}`).sort(), ['prod/api:v1->b', 'prod/api:v1->c']);
  assert.equal(await b.getTag('prod/api', 'v1'), img.manifestDigest);
  assert.equal(await c.getTag('prod/api', 'v1'), img.manifestDigest);
  assert.equal(await b.getTag('dev/toy', 'v1'), undefined, 'demand repos are not copied eagerly');
  const second = await rep.reconcile();
  assert.equal(second.copied.length, 0);
  // (repo, tag, target) pairs now in place: a→b, a→c, and b→a (a target too: the rule names no regions).
  assert.equal(second.upToDate, 3);
  for (const s of [a, b, c]) await s.close();
});

test('auth + regions: the replicator carries blob links and referrer links over, after the blobs and before the tag', async () => {
  const { buckets, eps } = await threeRegions('links');
  const a = store(buckets.a, 'a', eps.a);
  const img = await makeOciLayout(join(tmp, 'links'), { tag: 'v1', layers: 2, layerSize: 20_000, seed: 'links' });
  await pushTo(img, a, 'prod/app', 'v1');
  // What the registry writes with auth on: a link per uploaded blob (one blob uploaded but in no manifest, which
  // only its link makes readable) and a referrer link for a signature of the image.
  const linksA = new RepoLinks(a, metaStoreFor(a), { blobLinks: true });
  const orphan = `sha256:${'ab'.repeat(32)}`;
  for (const d of [...img.blobs.map((b) => b.digest), orphan]) await linksA.linkBlob('prod/app', d);
  const signature = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'cd'.repeat(32)}`, size: 321, artifactType: 'application/vnd.example.sig' };
  await linksA.addReferrer('prod/app', img.manifestDigest, signature);
  // Region b behind a proxy: its request log shows the order of the writes.
  const proxy = await startS3Proxy({ target: eps.b });
  const bViaProxy = store(buckets.b, 'b', proxy.url);
  const rep = new Replicator(Regions.of('a', { a, b: bViaProxy }), new Rules([{ repos: ['prod/**'], reason: 'dr', regions: ['b'] }]));
  const report = await rep.reconcile();
  assert.equal(report.failed.length, 0, JSON.stringify(report.failed));
  assert.equal(report.copied[0]?.linksCopied, img.blobs.length + 2);
  const b = store(buckets.b, 'b', eps.b);
  const linksB = new RepoLinks(b, metaStoreFor(b), { blobLinks: true });
  for (const d of [...img.blobs.map((x) => x.digest), orphan]) {
    assert.equal(await b.hasMeta(`repos/prod/app/_layers/sha256/${d.slice(7)}`), true, `link of ${d} in b`);
  }
  assert.equal(await linksB.isBlobLinked('prod/app', orphan), true, 'an unreferenced blob is readable in b only through its copied link');
  assert.deepEqual(await linksB.listReferrers('prod/app', img.manifestDigest), [signature]);
  const puts = proxy.log.filter((e) => e.method === 'PUT' && e.status === 200).map((e) => decodeURIComponent(e.path).slice(buckets.b.length + 2));
  const lastBlob = Math.max(...puts.flatMap((k, i) => (k.startsWith('blobs/') ? [i] : [])));
  const links = puts.flatMap((k, i) => (/^repos\/prod\/app\/(_layers|_referrers)\//.test(k) ? [i] : []));
  const tag = puts.indexOf('repos/prod/app/_tags/v1');
  assert.equal(links.length, img.blobs.length + 2, puts.join('\n'));
  assert.ok(lastBlob < Math.min(...links) && Math.max(...links) < tag, `blobs → links → tag:\n${puts.join('\n')}`);
  // Idempotent: a second copy lists, finds everything there and writes nothing.
  proxy.log.length = 0;
  assert.deepEqual(await copyRepoLinks(a, bViaProxy, 'prod/app'), { copied: 0, bytes: 0 });
  assert.deepEqual(proxy.log.filter((e) => e.method === 'PUT'), []);
  for (const s of [a, b, bViaProxy]) await s.close();
  await proxy.close();
});

test('kill -9 of the replicator midway: the restart finishes without re-copying what was done', async () => {
  const { buckets, eps } = await threeRegions('kill');
  const a = store(buckets.a, 'a', eps.a);
  const img = await makeOciLayout(join(tmp, 'kill'), { tag: 'v1', layers: 8, layerSize: 1_500_000, seed: 'kill' });
  await pushTo(img, a, 'prod/big', 'v1');
  // Region B behind a slow proxy so the replicator is surely mid-copy when killed.
  const proxy = await startS3Proxy({ target: eps.b, faults: { rate: 1, kinds: ['delay'], delayMs: 250, seed: 5, operations: ['PutObject'] } });
  const config = {
    region: 'a',
    regions: { a: { store: `s3://${buckets.a}`, s3: { endpoint: eps.a } }, b: { store: `s3://${buckets.b}`, s3: { endpoint: proxy.url } } },
    placement: { rules: [{ repos: ['prod/**'], reason: 'dr', regions: ['b'] }], replicator: { concurrency: 1 } },
    concurrency: 1,
  };
  const file = join(tmp, 'kill.yaml');
  await writeFile(file, stringify(config));
  const env = { ...process.env, AWS_ACCESS_KEY_ID: cfg.accessKeyId, AWS_SECRET_ACCESS_KEY: cfg.secretAccessKey, AWS_REGION: cfg.region, TRANSSHIP_CONFIG: file };
  const child = spawn(process.execPath, [join(root, 'bin', 'transship.js'), 'replicate', '--json'], { env, stdio: 'ignore' });
  const blobPuts = () => proxy.log.filter((e) => e.operation === 'PutObject' && e.status === 200 && e.path.includes('/blobs/')).length;
  const deadline = Date.now() + 60_000;
  while (blobPuts() < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  child.kill('SIGKILL');
  await new Promise((r) => child.on('exit', r));
  const b = store(buckets.b, 'b', eps.b);
  const copiedBefore: string[] = [];
  for await (const blob of b.listBlobs()) copiedBefore.push(blob.digest);
  assert.ok(copiedBefore.length >= 3 && copiedBefore.length < img.blobs.length, `killed midway (${copiedBefore.length} of ${img.blobs.length} blobs)`);
  assert.equal(await b.getTag('prod/big', 'v1'), undefined, 'no tag for an incomplete image');
  // Restart (in process this time) and watch what it writes.
  proxy.setFaults(undefined);
  proxy.reset();
  proxy.log.length = 0;
  const viaProxy = store(buckets.b, 'b', proxy.url);
  const rep = new Replicator(Regions.of('a', { a, b: viaProxy }), new Rules(config.placement.rules as Rule[]));
  const report = await rep.reconcile();
  assert.equal(report.failed.length, 0);
  assert.equal(await b.getTag('prod/big', 'v1'), img.manifestDigest);
  const rewritten = proxy.log.filter((e) => e.operation === 'PutObject' && copiedBefore.some((d) => e.path.endsWith(d.slice(7))));
  assert.deepEqual(rewritten, [], 'nothing copied twice');
  // Requests in flight at the kill may still land after it, so at least what we saw was skipped.
  assert.ok((report.copied[0]?.blobsSkipped ?? 0) >= copiedBefore.length, JSON.stringify(report.copied));
  for (const s of [a, b, viaProxy]) await s.close();
  await proxy.close();
});

test('a region that is down: reads fail over to another region; writes still go local; with no holder left, a clear error', async () => {
  const { buckets, eps } = await threeRegions('down');
  const a = store(buckets.a, 'a', eps.a);
  const b = store(buckets.b, 'b', eps.b);
  const dead = store(buckets.c, 'c', 'http://127.0.0.1:9');
  const img = await makeOciLayout(join(tmp, 'down'), { tag: 'v1', layers: 1, layerSize: 5000, seed: 'down' });
  await pushTo(img, a, 'app', 'v1');
  const reader = new PlacedReader(Regions.of('b', { a, b, c: dead }, ['c', 'a']), new Rules([], { policy: 'never' }));
  const r = await reader.open(img.layers[0]!.digest);
  assert.equal(r.region, 'a', 'dead region c skipped, a served');
  await buffer(r.stream);
  // Writes go to the home region regardless.
  const local = await makeOciLayout(join(tmp, 'down-local'), { tag: 'v1', layers: 1, layerSize: 500, seed: 'down-local' });
  await pushTo(local, b, 'local', 'v1');
  assert.equal(await b.getTag('local', 'v1'), local.manifestDigest);
  const onlyDead = new PlacedReader(Regions.of('b', { b, c: dead }), new Rules([]));
  await assert.rejects(onlyDead.open(img.layers[0]!.digest), (e) => isTransshipError(e, 'TS_BACKEND_UNAVAILABLE') && /no other region answered/.test(e.message));
  for (const s of [a, b, dead]) await s.close();
});

test('a blob corrupted in flight between regions is rejected and never stored', async () => {
  const { buckets, eps } = await threeRegions('corrupt');
  const a = store(buckets.a, 'a', eps.a);
  const img = await makeOciLayout(join(tmp, 'corrupt'), { tag: 'v1', layers: 1, layerSize: 100_000, seed: 'corrupt' });
  await pushTo(img, a, 'app', 'v1');
  const proxy = await startS3Proxy({ target: eps.a, faults: { rate: 1, kinds: ['corrupt'], seed: 9, operations: ['GetObject'], pathIncludes: '/blobs/' } });
  const aViaBadLink = store(buckets.a, 'a', proxy.url);
  const b = store(buckets.b, 'b', eps.b);
  const layer = img.layers[0]!;
  const lazy = new PlacedReader(Regions.of('b', { a: aViaBadLink, b }), new Rules([], { policy: 'never' }));
  const r = await lazy.open(layer.digest);
  await assert.rejects(buffer(r.stream), (e) => isTransshipError(e, 'TS_DIGEST_MISMATCH'));
  const eager = new PlacedReader(Regions.of('b', { a: aViaBadLink, b }), new Rules([], { policy: 'always' }));
  await assert.rejects(eager.open(layer.digest), (e) => isTransshipError(e, 'TS_DIGEST_MISMATCH'));
  assert.equal(await b.statBlob(layer.digest), undefined, 'never stored');
  const rep = new Replicator(Regions.of('a', { a: aViaBadLink, b }), new Rules([{ repos: ['**'], reason: 'dr' }]));
  const report = await rep.reconcile();
  assert.equal(report.failed.length, 1);
  assert.match(report.failed[0]!.error, /TS_DIGEST_MISMATCH/);
  assert.equal(await b.getTag('app', 'v1'), undefined);
  assert.equal(await b.statBlob(layer.digest), undefined);
  for (const s of [a, aViaBadLink, b]) await s.close();
  await proxy.close();
});

test('cli: `placement status` shows where tags live and what is pending; `replicate` then `cost` price it', async () => {
  const { buckets, eps } = await threeRegions('cli');
  const a = store(buckets.a, 'a', eps.a);
  const img = await makeOciLayout(join(tmp, 'cli'), { tag: 'v1', layers: 1, layerSize: 50_000, seed: 'cli-place' });
  await pushTo(img, a, 'prod/web', 'v1');
  await a.close();
  const file = join(tmp, 'cli.yaml');
  await writeFile(file, stringify({
    region: 'a',
    regions: { a: { store: `s3://${buckets.a}`, s3: { endpoint: eps.a } }, b: { store: `s3://${buckets.b}`, s3: { endpoint: eps.b } } },
    placement: { rules: [{ repos: ['prod/**'], reason: 'dr' }] },
  }));
  const env = { ...process.env, AWS_ACCESS_KEY_ID: cfg.accessKeyId, AWS_SECRET_ACCESS_KEY: cfg.secretAccessKey, AWS_REGION: cfg.region, TRANSSHIP_CONFIG: file };
  const cli = (args: string[]) => spawnSync(process.execPath, [join(root, 'bin', 'transship.js'), ...args], { env, encoding: 'utf8', timeout: 60_000 });
  const before = cli(['placement', 'status', '--json']);
  assert.equal(before.status, 0, before.stderr);
  const st = JSON.parse(before.stdout);
  assert.equal(st.home, 'a');
  // With eviction after the break-even residency (626 h at AWS list prices), the first remote read promotes.
  assert.deepEqual(st.promote, { policy: 'demand', reads: 1, windowSeconds: 3600, evictAfterIdleSeconds: 626 * 3600 }, 'the threshold derived from the default prices');
  assert.deepEqual(st.repositories.map((r: { repository: string }) => r.repository), ['prod/web']);
  assert.deepEqual(st.pending.map((p: { to: string }) => p.to), ['b']);
  const metrics = join(tmp, 'replicate.prom');
  const rep = cli(['replicate', '--json', '--metrics-file', metrics]);
  assert.equal(rep.status, 0, rep.stderr);
  assert.equal(JSON.parse(rep.stdout).copied.length, 1);
  const after = JSON.parse(cli(['placement', 'status', '--json']).stdout);
  assert.deepEqual(after.pending, []);
  assert.deepEqual(Object.keys(after.repositories[0].tags.v1).sort(), ['a', 'b']);
  const cost = cli(['cost', '--json', '--metrics', metrics]);
  assert.equal(cost.status, 0, cost.stderr);
  const c = JSON.parse(cost.stdout);
  assert.ok(c.crossRegion.bytes >= 50_000, JSON.stringify(c.crossRegion));
  assert.ok(c.requests.putClass > 0);
  assert.ok(c.storage.bytes > 100_000, 'both regions counted');
});
