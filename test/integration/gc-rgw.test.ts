// Garbage collection on the real RGW (docs/gc.md): what goes and what stays, a push through skopeo that deduplicated
// against garbage while a pass ran (the race Quay lost), `kill -9` of `transship gc` mid-sweep and the rerun, and
// the precise errors of bad configurations.
// Ages: RGW's LastModified cannot be moved back, so passes run on a clock set forward (runPass's `now`) where a test
// needs old objects, and the CLI test waits for its short test grace (45 s) to pass — the only real wait here.
import { CLI } from '../support/cli.js';
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTestBucket, s3TestConfig } from '../support/rgw.js';
import { startS3Proxy } from '../support/s3-proxy.js';
import { layoutBlobs, skopeo, startTestRegistry, type RunResult } from '../support/registry.js';
import { makeOciLayout, type BuiltImage } from '../support/images.js';
import { S3Store } from '../../packages/transship/src/store/s3-store.js';
import { StoreMetaStore } from '../../packages/transship/src/registry/meta.js';
import { runPass } from '../../packages/transship/src/gc/pass.js';
import { gcSettings, type GcSettings } from '../../packages/transship/src/gc/settings.js';
import { verifyStore } from '../../packages/transship/src/transfer/store-verify.js';
import { gcTouchPrefix } from '../../packages/transship/src/store/keys.js';
import { publish, putBytes, putImage, putIndex, type Desc } from '../support/gc-fixtures.js';

const cfg = s3TestConfig();
if (!cfg) throw new Error('TRANSSHIP_TEST_S3_* not set: run through `npm test`');
const bin = CLI;
const tmp = await mkdtemp(join(tmpdir(), 'ts-gc-rgw-'));
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await rm(tmp, { recursive: true, force: true });
});

async function s3Store(bucket: string, endpoint = cfg!.endpoint): Promise<S3Store> {
  const s = new S3Store({ bucket, prefix: '', endpoint, s3Region: cfg!.region, accessKeyId: cfg!.accessKeyId, secretAccessKey: cfg!.secretAccessKey });
  cleanups.push(() => s.close());
  return s;
}

/** Production timings, except a lease and pass limit that a clock set forward by days does not end. */
function settings(extra: Partial<GcSettings> = {}): GcSettings {
  return { ...gcSettings({}), leaseMs: 365 * 86_400_000, maxPassMs: 365 * 86_400_000, ...extra };
}

async function present(store: S3Store, blobs: readonly Desc[]): Promise<boolean[]> {
  const found = await store.statBlobs(blobs.map((b) => b.digest));
  return blobs.map((b) => found.has(b.digest));
}

test('gc on RGW: unreachable blobs and their links go after the grace; tagged images, index children and referrers stay; verify is clean', async () => {
  const bucket = await createTestBucket('gc-basic');
  const s = await s3Store(bucket);
  const a = await putImage(s, { seed: 'rgw-a' });
  await publish(s, 'team/app', a.manifest, '1');
  const arm = await putImage(s, { seed: 'rgw-arm' });
  const amd = await putImage(s, { seed: 'rgw-amd' });
  await publish(s, 'team/multi', arm.manifest);
  await publish(s, 'team/multi', amd.manifest);
  const idx = await putIndex(s, [arm.manifest, amd.manifest]);
  await publish(s, 'team/multi', idx, 'latest');
  const sbom = await putImage(s, { seed: 'rgw-sbom', layerCount: 1, subject: a.manifest });
  await publish(s, 'team/app', sbom.manifest);
  await s.objects.putIfAbsent(`repos/team/app/_referrers/sha256/${a.manifest.digest.slice(7)}/sha256/${sbom.manifest.digest.slice(7)}`, JSON.stringify(sbom.manifest));
  const g = await putImage(s, { seed: 'rgw-garbage' });
  await publish(s, 'gone/app', g.manifest, 'old');
  await s.objects.putIfAbsent(`repos/gone/app/_layers/sha256/${g.blobs[1]!.digest.slice(7)}`, g.blobs[1]!.digest);
  await s.deleteTag('gone/app', 'old');
  await s.unlinkManifest('gone/app', g.manifest.digest);
  const live = [...a.blobs, ...arm.blobs, ...amd.blobs, idx, ...sbom.blobs];

  // Now: everything is younger than the grace, nothing may go.
  const early = await runPass(s, settings());
  assert.equal(early.result, 'success');
  assert.equal(early.removed.blob ?? 0, 0);
  assert.equal(early.kept.fresh, g.blobs.length);

  // Two days later (the clock is set forward; RGW's times stay real).
  const later = () => Date.now() + 2 * 86_400_000 + 600_000;
  const plan = await runPass(s, settings(), { dryRun: true, now: later });
  assert.deepEqual(plan.plan.filter((p) => p.kind === 'blob').map((p) => p.key).sort(), g.blobs.map((b) => `blobs/sha256/${b.digest.slice(7)}`).sort());
  assert.ok((await present(s, g.blobs)).every(Boolean), 'the dry run deleted nothing');
  const r = await runPass(s, settings(), { now: later });
  assert.equal(r.result, 'success', JSON.stringify(r.stopped));
  assert.equal(r.removed.blob, g.blobs.length);
  assert.equal(r.removed.layer_link, 1);
  assert.equal(r.reclaimedBytes, g.blobs.reduce((n, b) => n + b.size, 0));
  assert.ok(r.requests.DeleteObjects !== undefined && r.requests.DeleteObjects <= 3, `batch deletes (blobs, links, old lease epochs): ${JSON.stringify(r.requests)}`);
  assert.ok((await present(s, live)).every(Boolean), 'everything reachable stays');
  assert.ok((await present(s, g.blobs)).every((p) => !p), 'the garbage is gone');
  const v = await verifyStore(s);
  assert.deepEqual(v.problems, []);
});

function ok(r: RunResult, what: string): void {
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stderr}`);
}

test('gc on RGW: a skopeo push that deduplicated against garbage while a pass ran is complete and pulls byte-identical (guards the Quay race)', async () => {
  const bucket = await createTestBucket('gc-race');
  const s = await s3Store(bucket);
  // The registry's writers treat blobs older than 1 s as old (they touch them) and settle for 1.5 s.
  const reg = await startTestRegistry({ store: s, meta: new StoreMetaStore(s), allowDelete: true, freshness: { refreshAfterMs: 1000, settleMs: 1500, skewMs: 0 } });
  cleanups.push(() => reg.close());
  const image: BuiltImage = await makeOciLayout(join(tmp, 'race'), { tag: 'v1', layers: 3, layerSize: 50_000, seed: 'gc-race' });
  const host = reg.url.replace(/^https?:\/\//, '');
  ok(await skopeo(['copy', '--dest-tls-verify=false', `oci:${image.path}:v1`, `docker://${host}/first/app:v1`]), 'push');
  // Deleted: every blob of the image is garbage now.
  const del = await fetch(`${reg.url}/v2/first/app/manifests/${image.manifestDigest}`, { method: 'DELETE' });
  assert.equal(del.status, 202);
  const blobs = [...(await layoutBlobs(image.path)).keys()];
  const written = Math.max(...[...(await s.statBlobs(blobs)).values()].map((i) => i.lastModified ?? 0));
  // Make sure the blobs are "old" for the writers (1 s) — ageing, not synchronisation.
  await sleep(Math.max(0, written + 1100 - Date.now()));

  // The pass's clock: during the mark anything; for the sweep, frozen halfway between the blobs' write and the
  // touch the push is about to make, so the blobs count as older than the grace and the touch as fresh.
  let clock = Date.now();
  const r = await runPass(s, settings({ settleMs: 1500 }), {
    now: () => clock,
    afterMark: async () => {
      // The mark found the image unreachable. Now a push of the same image to another repository: skopeo HEADs
      // every blob (present → not uploaded) and PUTs the manifest, which the registry makes visible only after
      // touching the old blobs and confirming them.
      ok(await skopeo(['copy', '--dest-tls-verify=false', `oci:${image.path}:v1`, `docker://${host}/second/app:v1`]), 'second push');
      // Each blob's newest touch; the earliest of those bounds the cutoff from above.
      let touched = Number.POSITIVE_INFINITY;
      for (const d of blobs) {
        let newest = 0;
        for await (const o of s.objects.list(gcTouchPrefix(d))) newest = Math.max(newest, o.lastModified);
        touched = Math.min(touched, newest);
      }
      assert.ok(touched > written, 'the push touched every old blob');
      clock = Math.floor((written + touched) / 2) + gcSettings({}).graceMs + gcSettings({}).skewMs;
    },
  });
  assert.equal(r.result, 'success', JSON.stringify(r.stopped));
  assert.equal(r.removed.blob ?? 0, 0, 'no blob of the late manifest was deleted');
  assert.ok(r.kept.touched >= blobs.length - 1, `kept as touched: ${r.kept.touched}`);
  const out = join(tmp, 'race-pull');
  ok(await skopeo(['copy', '--src-tls-verify=false', `docker://${host}/second/app:v1`, `oci:${out}:v1`]), 'pull');
  const pulled = await layoutBlobs(out);
  for (const [d, h] of pulled) assert.equal(`sha256:${h}`, d);
  assert.deepEqual([...pulled.keys()].sort(), blobs.sort());
});

function cli(args: string[], env: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function cliEnv(endpoint: string, config: string): NodeJS.ProcessEnv {
  return { ...process.env, AWS_ENDPOINT_URL_S3: endpoint, AWS_ACCESS_KEY_ID: cfg!.accessKeyId, AWS_SECRET_ACCESS_KEY: cfg!.secretAccessKey, AWS_REGION: cfg!.region, TRANSSHIP_CONFIG: config, XDG_CACHE_HOME: join(tmp, 'cache') };
}

test('gc on RGW: kill -9 of `transship gc` mid-sweep loses nothing reachable; the rerun waits out the lease and finishes', async () => {
  const bucket = await createTestBucket('gc-kill');
  const s = await s3Store(bucket);
  const config = join(tmp, 'short-grace.yaml');
  // A short grace the safety rule allows (1 + 1 + 10 + 0 + 30 < 45); settle 30 s gives each batch delete 10 s,
  // room for the proxy's 2 s hold on a loaded machine.
  await writeFile(config, 'cache:\n  ttlSeconds: 5\ngc:\n  graceSeconds: 45\n  refreshAfterSeconds: 1\n  horizonSeconds: 1\n  maxPassSeconds: 10\n  clockSkewSeconds: 0\n  settleSeconds: 30\n  leaseSeconds: 10\n');
  const images = [];
  for (let i = 0; i < 3; i++) {
    const img = await putImage(s, { seed: `kill-${i}`, layerCount: 3 });
    await publish(s, `keep/app${i}`, img.manifest, 'v1');
    images.push(img);
  }
  // 1600 garbage blobs: two listing pages, so two DeleteObjects.
  const garbage: Desc[] = [];
  const jobs = Array.from({ length: 1600 }, (_, i) => i);
  await Promise.all(Array.from({ length: 32 }, async () => {
    for (let i = jobs.pop(); i !== undefined; i = jobs.pop()) garbage.push(await putBytes(s, Buffer.from(`garbage ${i}`)));
  }));
  const newest = Math.max(...[...(await s.statBlobs(garbage.slice(-50).map((g) => g.digest))).values()].map((i) => i.lastModified ?? 0));
  await sleep(Math.max(0, newest + 46_000 - Date.now())); // ageing past the 45 s grace

  // Through a proxy that holds every DeleteObjects for 2 s: kill -9 while the second one is in flight.
  const proxy = await startS3Proxy({ target: cfg.endpoint, faults: { rate: 1, kinds: ['delay'], delayMs: 2000, operations: ['DeleteObjects'] } });
  cleanups.push(() => proxy.close());
  const child = spawn(process.execPath, [bin, 'gc', `s3://${bucket}`, '--json'], { env: cliEnv(proxy.url, config), stdio: ['ignore', 'pipe', 'pipe'] });
  let childOut = '';
  child.stdout.on('data', (c: Buffer) => (childOut += c.toString()));
  child.stderr.on('data', (c: Buffer) => (childOut += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline && proxy.log.filter((e) => e.operation === 'DeleteObjects').length < 2) await sleep(20);
  child.kill('SIGKILL');
  await exited;
  const deletes = proxy.log.filter((e) => e.operation === 'DeleteObjects');
  assert.ok(deletes.length >= 2, `killed while the second batch delete was in flight; gc said:\n${childOut}`);

  // Nothing reachable is lost, whatever the kill interrupted.
  const live = images.flatMap((i) => i.blobs);
  assert.ok((await present(s, live)).every(Boolean));
  assert.deepEqual((await verifyStore(s)).problems, []);

  // The rerun: the killed runner's lease blocks for at most leaseSeconds, then the pass finishes the job.
  let report: { result: string; removed: Record<string, number> } | undefined;
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    const r = cli(['gc', `s3://${bucket}`, '--json'], cliEnv(cfg.endpoint, config));
    assert.equal(r.status, 0, r.stderr);
    report = JSON.parse(r.stdout) as typeof report;
    if (report?.result !== 'busy') break;
    await sleep(500);
  }
  assert.equal(report?.result, 'success', JSON.stringify(report));
  assert.ok((await present(s, garbage)).every((p) => !p), 'every garbage blob is gone after the rerun');
  assert.ok((await present(s, live)).every(Boolean));
  assert.deepEqual((await verifyStore(s)).problems, []);
});

test('gc config errors: unknown keys and a grace shorter than a cache TTL exit 2 with TS_CONFIG_INVALID at the field', async () => {
  const bad = join(tmp, 'bad.yaml');
  await writeFile(bad, 'gc:\n  graceSecs: 100\n');
  let r = cli(['gc', 'dir:' + join(tmp, 'unused-store'), '--json'], cliEnv(cfg.endpoint, bad));
  assert.equal(r.status, 2);
  const e1 = JSON.parse(r.stdout || r.stderr) as { error?: { code: string; paths?: string[] }; code?: string; paths?: string[] };
  const err1 = e1.error ?? e1;
  assert.equal(err1.code, 'TS_CONFIG_INVALID');
  assert.deepEqual(err1.paths, ['gc.graceSecs']);
  await writeFile(bad, 'cache:\n  ttlSeconds: 200000\n');
  r = cli(['gc', 'dir:' + join(tmp, 'unused-store'), '--json'], cliEnv(cfg.endpoint, bad));
  assert.equal(r.status, 2);
  const e2 = JSON.parse(r.stdout || r.stderr) as { error?: { code: string; paths?: string[] }; code?: string; paths?: string[] };
  const err2 = e2.error ?? e2;
  assert.equal(err2.code, 'TS_CONFIG_INVALID');
  assert.deepEqual(err2.paths, ['gc.graceSeconds']);
});
