// Retention's pulledWithin on the real RGW, through a real pull-through mirror (docs/gc.md "Pulled within"): the
// upstream is transship's own registry on loopback (seeded with skopeo), the mirror stores into an RGW bucket, and
// skopeo pulls through the mirror's path prefix. An image pulled within D stays (its tag was fetched longer ago than
// D: only the pull marker keeps it); an image nobody pulled within D loses its tag, its manifest link and its blobs
// (the test's grace is 1 s); a second pull right after a first costs no PutObject (the marker write is throttled);
// and the dropped image is still pullable — the mirror fetches it again.
// Real time: D = 24 s, so the pull-marker period is D/8 = 3 s; the test waits about 25 s.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTestBucket, s3TestConfig } from '../support/rgw.js';
import { skopeo, startTestRegistry, type RunResult } from '../support/registry.js';
import { makeOciLayout } from '../support/images.js';
import { S3Store } from '../../packages/transship/src/store/s3-store.js';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { StoreMetaStore } from '../../packages/transship/src/registry/meta.js';
import { Mirror } from '../../packages/transship/src/mirror/mirror.js';
import { Upstreams } from '../../packages/transship/src/mirror/upstreams.js';
import { configSchema } from '../../packages/transship/src/config/config.js';
import { runPass } from '../../packages/transship/src/gc/pass.js';
import { gcSettings, type GcSettings } from '../../packages/transship/src/gc/settings.js';
import { RetentionRules } from '../../packages/transship/src/gc/retention.js';
import { pulledPrefix } from '../../packages/transship/src/store/keys.js';
import { verifyStore } from '../../packages/transship/src/transfer/store-verify.js';
import { parseManifest, references } from '../../packages/transship/src/transfer/manifest.js';
import { buffer } from 'node:stream/consumers';

const cfg = s3TestConfig();
if (!cfg) throw new Error('TRANSSHIP_TEST_S3_* not set: run through `npm test`');
const tmp = await mkdtemp(join(tmpdir(), 'ts-gc-pulled-'));
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await rm(tmp, { recursive: true, force: true });
});

function ok(r: RunResult, what: string): void {
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stderr}`);
}

const D_MS = 24_000;

test('pulledWithin on RGW through a mirror: pulled stays, unpulled goes with its blobs, marker writes are throttled', { timeout: 180_000 }, async () => {
  const upStore = new FsStore(join(tmp, 'upstream'));
  const upstream = await startTestRegistry({ store: upStore, meta: new StoreMetaStore(upStore) });
  cleanups.push(() => upstream.close());
  const keepImg = await makeOciLayout(join(tmp, 'keep'), { tag: 'v1', layers: 2, layerSize: 40_000, seed: 'pulled-keep' });
  const dropImg = await makeOciLayout(join(tmp, 'drop'), { tag: 'v1', layers: 2, layerSize: 40_000, seed: 'pulled-drop' });
  ok(await skopeo(['copy', '--dest-tls-verify=false', `oci:${keepImg.path}:v1`, `docker://${upstream.host}/lib/keep:v1`]), 'seed keep');
  ok(await skopeo(['copy', '--dest-tls-verify=false', `oci:${dropImg.path}:v1`, `docker://${upstream.host}/lib/drop:v1`]), 'seed drop');

  const bucket = await createTestBucket('gc-pulled');
  const s = new S3Store({ bucket, prefix: '', endpoint: cfg.endpoint, s3Region: cfg.region, accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey });
  cleanups.push(() => s.close());
  const rules = new RetentionRules([{ repos: ['up/**'], pulledWithin: `${D_MS / 1000}s` }]);
  // A long tag TTL: pulls of `keep` never refetch its tag, so only its pull marker can keep it.
  const mirrorCfg = configSchema.parse({ mirror: { upstreams: [{ registry: upstream.host, url: upstream.url, prefix: 'up', tagTtl: '1h' }] } }).mirror!;
  const engine = new Mirror(new Upstreams(mirrorCfg), { dir: tmp });
  // What `serve` does (gc/loop.ts pullRecording): the marker period follows the shortest pulledWithin.
  const mirror = await startTestRegistry({ store: s, meta: new StoreMetaStore(s), mirror: engine, pulls: { periodMs: rules.pullStampMs } });
  cleanups.push(() => mirror.close());
  assert.equal(rules.pullStampMs, 3000);

  let n = 0;
  const pull = async (repo: string): Promise<void> => {
    ok(await skopeo(['copy', '--src-tls-verify=false', `docker://${mirror.host}/up/lib/${repo}:v1`, `oci:${join(tmp, `out-${repo}-${n++}`)}:v1`]), `pull ${repo}`);
    await engine.drain();
    await mirror.ctx.pulls?.drain();
  };
  const since = (before: Record<string, number>): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(s.requestCounts())) if (v - (before[k] ?? 0) > 0) out[k] = v - (before[k] ?? 0);
    return out;
  };

  // t0: both fetched from the upstream (tags written) and pulled (markers written).
  const t0 = Date.now();
  await pull('keep');
  await pull('drop');
  const dropFetched = Date.now();
  // What the mirror stored (skopeo may have rewritten the layout's blobs on their way into the upstream).
  const stored = async (repo: string): Promise<string[]> => {
    const digest = await s.getTag(repo, 'v1');
    assert.ok(digest);
    const m = parseManifest(await buffer(await s.getBlob(digest)));
    return [digest, ...references(m).map((r) => r.digest)];
  };
  const dropBlobs = await stored('up/lib/drop');
  const keepBlobs = await stored('up/lib/keep');
  assert.equal(dropBlobs.length, 4, 'manifest, config, two layers');
  assert.equal((await s.listMeta(pulledPrefix('up/lib/drop'))).length, 1, 'the first pull left a marker');

  // Half way through D, past the marker period: `keep` is pulled again (one marker write), and again at once
  // (throttled: no PutObject at all).
  await sleep(Math.max(0, t0 + D_MS / 2 + 2000 - Date.now()));
  let before = s.requestCounts();
  await pull('keep');
  const first = since(before);
  before = s.requestCounts();
  await pull('keep');
  const second = since(before);
  process.stdout.write(`# pulledWithin: warm pull through the mirror, S3 requests: after the period ${JSON.stringify(first)}, right after ${JSON.stringify(second)}\n`);
  assert.equal(first.PutObject ?? 0, 1, `one marker write: ${JSON.stringify(first)}`);
  assert.equal(second.PutObject ?? 0, 0, `the second pull writes nothing: ${JSON.stringify(second)}`);

  // Past D since `drop` was fetched and pulled; `keep` was pulled about D/2 ago.
  await sleep(Math.max(0, dropFetched + D_MS + 1500 - Date.now()));
  const settings: GcSettings = { ...gcSettings({}), leaseMs: 600_000, graceMs: 1000, skewMs: 0, retention: rules };
  const r = await runPass(s, settings);
  process.stdout.write(`# pulledWithin: pass ${JSON.stringify({ removed: r.removed, requests: r.requests, ms: r.durationMs })}\n`);
  assert.equal(r.result, 'success', JSON.stringify(r.stopped));
  assert.equal(r.removed.tag, 1);
  assert.equal(r.removed.manifest_link, 1);
  assert.equal(r.removed.pulled_marker, 1, "drop's marker goes with its manifest");
  assert.deepEqual(await s.listTags('up/lib/drop'), []);
  assert.deepEqual(await s.listTags('up/lib/keep'), ['v1']);
  const found = await s.statBlobs([...dropBlobs, ...keepBlobs]);
  assert.deepEqual(dropBlobs.filter((d) => found.has(d)), [], "drop's manifest and blobs are gone after the grace");
  assert.deepEqual(keepBlobs.filter((d) => !found.has(d)), [], "keep's stay");
  assert.equal(r.removed.blob, dropBlobs.length);
  assert.deepEqual((await verifyStore(s)).problems, []);

  // The mirror still serves `drop`: a miss, fetched from the upstream again.
  await pull('drop');
  assert.deepEqual(await s.listTags('up/lib/drop'), ['v1']);
});
