// Retention rules (src/gc/retention.ts) and the gc config checks (src/core/config.ts): what a policy keeps, and the
// precise errors bad settings get.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RetentionRules, decide, type ManifestState, type TagState } from '../../packages/transship/src/gc/retention.js';
import { loadConfig } from '../../packages/transship/src/config/config.js';
import { TransshipError } from '@transship/core/errors';
import { processMetrics } from '@transship/core/metrics-registry';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import type { ObjectDriver } from '../../packages/transship/src/store/contract.js';
import { pulledKey, pulledPrefix } from '../../packages/transship/src/store/keys.js';
import { PullRecorder } from '../../packages/transship/src/registry/pulls.js';
import { runPass } from '../../packages/transship/src/gc/pass.js';
import { gcSettings } from '../../packages/transship/src/gc/settings.js';
import '../../packages/transship/src/telemetry/metrics.js';
import { ageFiles, publish, putImage, type Desc } from '../support/gc-fixtures.js';
import { startTestRegistry } from '../support/registry.js';

const DAY = 86_400_000;
const NOW = 1_000 * DAY;
const d = (n: number): string => `sha256:${n.toString(16).padStart(64, '0')}`;
const tag = (t: string, digest: string, ageDays: number): TagState => ({ tag: t, digest, pushedAt: NOW - ageDays * DAY });
const man = (digest: string, ageDays: number, extra: Partial<ManifestState> = {}): ManifestState => ({ digest, linkedAt: NOW - ageDays * DAY, children: [], ...extra });

test('retention: no rule keeps every tag and every linked manifest (guards: gc without policy deleting roots)', () => {
  const r = decide(undefined, [tag('a', d(1), 400)], [man(d(1), 400), man(d(2), 400)], NOW);
  assert.deepEqual(r.removeTags, []);
  assert.deepEqual([...r.keep].sort(), [d(1), d(2)]);
  assert.deepEqual(r.expire, []);
});

test('retention: keepLast keeps the N most recently pushed tags, keepTags protects by pattern', () => {
  const rule = new RetentionRules([{ repos: ['ci/**'], keepLast: 2, keepTags: ['v\\d+\\.\\d+', 'latest'] }]).ruleFor('ci/app');
  assert.ok(rule);
  const tags = [tag('b1', d(1), 1), tag('b2', d(2), 2), tag('b3', d(3), 3), tag('v1.0', d(4), 300), tag('latest', d(5), 50), tag('v1.0-rc', d(6), 10)];
  const r = decide(rule, tags, tags.map((t) => man(t.digest, 400)), NOW);
  assert.deepEqual(r.removeTags.map((t) => t.tag).sort(), ['b3', 'v1.0-rc']);
  // Without untagged expiry, the untagged manifests stay roots.
  assert.deepEqual(r.expire, []);
});

test('retention: removeOlderThan and keepLast are OR-ed keep rules (ECR "keep last 2, expire older than 30d")', () => {
  const rule = new RetentionRules([{ repos: ['*'], keepLast: 1, removeOlderThan: '30d', untaggedExpireAfter: '7d' }]).ruleFor('app');
  const tags = [tag('new', d(1), 1), tag('young', d(2), 20), tag('old', d(3), 40), tag('older', d(4), 50)];
  const r = decide(rule, tags, [man(d(1), 1), man(d(2), 20), man(d(3), 40), man(d(4), 50), man(d(9), 3)], NOW);
  assert.deepEqual(r.removeTags.map((t) => t.tag).sort(), ['old', 'older']);
  // Untagged young (d9, 3 days) stays; untagged-after-removal old ones expire.
  assert.deepEqual(r.expire.sort(), [d(3), d(4)]);
});

test('retention: a kept index keeps its children; an expired index does not protect them (guards Distribution --delete-untagged bug)', () => {
  const rule = new RetentionRules([{ repos: ['**'], untaggedExpireAfter: '1d' }]).ruleFor('multi/arch');
  const idx = man(d(10), 100, { children: [d(11), d(12)] });
  const r = decide(rule, [tag('1.0', d(10), 100)], [idx, man(d(11), 100), man(d(12), 100), man(d(20), 100, { children: [d(21)] }), man(d(21), 100)], NOW);
  assert.ok(r.keep.has(d(11)) && r.keep.has(d(12)), 'children of the tagged index are kept');
  assert.deepEqual(r.expire.sort(), [d(20), d(21)]);
});

test('retention: referrers follow their subject, whatever their own age; cosign tags follow their subject', () => {
  const rule = new RetentionRules([{ repos: ['**'], keepLast: 1, untaggedExpireAfter: '1d' }]).ruleFor('signed');
  const sig = man(d(30), 0, { subject: d(2) }); // a fresh signature of an expiring subject
  const sbom = man(d(31), 500, { subject: d(1) }); // an old SBOM of a kept subject
  const cosignKept = tag(`sha256-${d(1).slice(7)}.sig`, d(32), 500);
  const cosignGone = tag(`sha256-${d(2).slice(7)}.sig`, d(33), 0);
  const r = decide(rule, [tag('new', d(1), 1), tag('old', d(2), 30), cosignKept, cosignGone], [man(d(1), 1), man(d(2), 30), sig, sbom, man(d(32), 500), man(d(33), 5)], NOW);
  assert.ok(r.keep.has(d(31)), 'the old SBOM of a kept subject stays');
  assert.ok(r.keep.has(d(32)), 'the cosign signature of a kept subject stays, though older than keepLast allows');
  assert.deepEqual(r.removeTags.map((t) => t.tag).sort(), [cosignGone.tag, 'old'].sort());
  assert.deepEqual(r.expire.sort(), [d(2), d(30), d(33)].sort());
});

test('retention: keepTags alone only protects, it never removes (guards deleting every tag by omission)', () => {
  const rule = new RetentionRules([{ repos: ['**'], keepTags: ['release-.*'] }]).ruleFor('x');
  const r = decide(rule, [tag('dev', d(1), 900), tag('release-1', d(2), 900)], [man(d(1), 900), man(d(2), 900)], NOW);
  assert.deepEqual(r.removeTags, []);
});

test('retention: the first matching rule applies', () => {
  const rules = new RetentionRules([{ repos: ['prod/*'], keepLast: 100 }, { repos: ['**'], keepLast: 1 }]);
  assert.equal(rules.ruleFor('prod/api')?.keepLast, 100);
  assert.equal(rules.ruleFor('prod/api/sub')?.keepLast, 1);
});

async function cfg(text: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ts-gc-cfg-'));
  const p = join(dir, 'c.yaml');
  await writeFile(p, text);
  return p;
}

function configError(text: string): Promise<TransshipError> {
  return cfg(text).then((p) => {
    try {
      loadConfig({ file: p, env: {} });
    } catch (err) {
      if (err instanceof TransshipError) return err;
      throw err;
    }
    assert.fail('config was accepted');
  });
}

test('gc config: defaults are accepted, and their rule holds', async () => {
  const c = loadConfig({ file: await cfg('gc:\n  retention:\n    - repos: ["**"]\n      keepLast: 10\n'), env: {} });
  assert.equal(c.gc?.retention?.[0]?.keepLast, 10);
});

test('gc config: an unknown key gets TS_CONFIG_INVALID at its own path', async () => {
  const e = await configError('gc:\n  graceSecs: 10\n');
  assert.equal(e.code, 'TS_CONFIG_INVALID');
  assert.deepEqual(e.details.paths, ['gc.graceSecs']);
  const e2 = await configError('gc:\n  retention:\n    - repos: ["a"]\n      keepNewest: 3\n');
  assert.deepEqual(e2.details.paths, ['gc.retention.0.keepNewest']);
});

test('gc config: a grace shorter than the copy presence cache TTL is refused at gc.graceSeconds', async () => {
  const e = await configError('cache:\n  ttlSeconds: 90000\ngc:\n  graceSeconds: 86400\n  refreshAfterSeconds: 3600\n');
  assert.equal(e.code, 'TS_CONFIG_INVALID');
  assert.deepEqual(e.details.paths, ['gc.graceSeconds']);
});

test('gc config: a grace that does not cover refresh + horizon + pass + skew + settle is refused', async () => {
  // 86400 + 3600 + 3600 + 600 + 15 > 90000
  const e = await configError('gc:\n  graceSeconds: 90000\n');
  assert.deepEqual(e.details.paths, ['gc.graceSeconds']);
  // A short test setting that covers every term is fine.
  const p = await cfg('cache:\n  ttlSeconds: 5\ngc:\n  graceSeconds: 45\n  refreshAfterSeconds: 5\n  horizonSeconds: 31\n  maxPassSeconds: 5\n  clockSkewSeconds: 0\n  settleSeconds: 1\n');
  assert.equal(loadConfig({ file: p, env: {} }).gc?.graceSeconds, 45);
});

test('gc config: bad retention values get precise paths (pattern, duration)', async () => {
  const e = await configError('gc:\n  retention:\n    - repos: ["a"]\n      keepTags: ["(unclosed"]\n      removeOlderThan: "3 weeks"\n');
  assert.deepEqual((e.details.paths as string[]).sort(), ['gc.retention.0.keepTags.0', 'gc.retention.0.removeOlderThan']);
});

test('gc config: multipart leftovers must outlast an upload session', async () => {
  const e = await configError('serve:\n  uploadIdleSeconds: 7200\ngc:\n  leftovers:\n    multipartAfterSeconds: 3600\n');
  assert.deepEqual(e.details.paths, ['gc.leftovers.multipartAfterSeconds']);
});

// --- pulledWithin (zot's pulledWithin, Harbor's proxy-cache expiry): the "bill must shrink" rule for mirrors ---

const used = (t: string, digest: string, pushedDays: number, pulledDays?: number): TagState => ({ ...tag(t, digest, pushedDays), pulledAt: pulledDays === undefined ? undefined : NOW - pulledDays * DAY });

test('retention: pulledWithin removes tags neither pulled nor written within D; a pull or a (re)push or mirror fetch keeps them', () => {
  const rule = new RetentionRules([{ repos: ['docker.io/**'], pulledWithin: '30d' }]).ruleFor('docker.io/library/alpine');
  assert.ok(rule);
  const tags = [used('pulled', d(1), 90, 2), used('fetched', d(2), 3), used('idle', d(3), 90, 40), used('never', d(4), 31)];
  const r = decide(rule, tags, tags.map((t) => man(t.digest, 90)), NOW);
  assert.deepEqual(r.removeTags.map((t) => t.tag).sort(), ['idle', 'never']);
  // Their manifests were linked and pulled long ago: they expire with the tags (blobs become garbage this pass).
  assert.deepEqual(r.expire.sort(), [d(3), d(4)]);
});

test('retention: pulledWithin keeps untagged manifests pulled by digest; keepLast and keepTags still protect (OR-ed)', () => {
  const rule = new RetentionRules([{ repos: ['**'], pulledWithin: '7d', keepLast: 1, keepTags: ['stable'] }]).ruleFor('app');
  const tags = [used('newest', d(1), 20), used('stable', d(2), 100), used('old', d(3), 50, 8)];
  const manifests = [man(d(1), 20), man(d(2), 100), man(d(3), 50), man(d(8), 60, { pulledAt: NOW - DAY }), man(d(9), 60)];
  const r = decide(rule, tags, manifests, NOW);
  assert.deepEqual(r.removeTags.map((t) => t.tag), ['old']);
  // d8 is deployed by digest (pulled a day ago): it stays; d9 nobody pulled: it goes with d3.
  assert.ok(r.keep.has(d(8)));
  assert.deepEqual(r.expire.sort(), [d(3), d(9)]);
});

test('retention: pulledWithin with untaggedExpireAfter: an untagged manifest stays while young by link OR pulled', () => {
  const rule = new RetentionRules([{ repos: ['**'], pulledWithin: '30d', untaggedExpireAfter: '1d' }]).ruleFor('app');
  const r = decide(rule, [], [man(d(1), 0.5), man(d(2), 40, { pulledAt: NOW - 5 * DAY }), man(d(3), 40), man(d(4), 10)], NOW);
  // d4: linked 10 days ago, so written within pulledWithin (30d) though older than untaggedExpireAfter.
  assert.deepEqual(r.expire, [d(3)]);
});

test('retention: the pull stamp period is an eighth of the shortest pulledWithin, between 1 s and a day', () => {
  assert.equal(new RetentionRules([]).pullStampMs, DAY);
  assert.equal(new RetentionRules([{ repos: ['a'], keepLast: 3 }]).pullStampMs, DAY);
  assert.equal(new RetentionRules([{ repos: ['a'], pulledWithin: '30d' }, { repos: ['b'], pulledWithin: '16h' }]).pullStampMs, 2 * 3600_000);
  assert.equal(new RetentionRules([{ repos: ['a'], pulledWithin: '2s' }]).pullStampMs, 1000);
});

test('gc config: pulledWithin is accepted and a bad duration gets its path', async () => {
  const c = loadConfig({ file: await cfg('gc:\n  retention:\n    - repos: ["docker.io/**"]\n      pulledWithin: 30d\nserve:\n  recordPulls: true\n'), env: {} });
  assert.equal(c.gc?.retention?.[0]?.pulledWithin, '30d');
  const e = await configError('gc:\n  retention:\n    - repos: ["a"]\n      pulledWithin: "a month"\n');
  assert.deepEqual(e.details.paths, ['gc.retention.0.pulledWithin']);
});

const metric = async (name: string, labels: Record<string, string>): Promise<number> =>
  ((await processMetrics().getSingleMetric(name)?.get())?.values ?? []).filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((a, v) => a + v.value, 0);

/** An object driver whose puts are counted and can be made to fail or to hang until released. */
function fakeObjects(behaviour: { fail?: boolean; hold?: Promise<void> } = {}): ObjectDriver & { puts: string[] } {
  const puts: string[] = [];
  const nope = (): never => {
    throw new Error('not used');
  };
  return {
    name: 'fake',
    puts,
    async put(key: string) {
      puts.push(key);
      await behaviour.hold;
      if (behaviour.fail) throw new TransshipError('TS_BACKEND_UNAVAILABLE', 'store down');
    },
    get: nope,
    stat: nope,
    putIfAbsent: nope,
    delete: nope,
    deleteMany: nope,
    list: nope,
    listUploads: nope,
    abortUpload: nope,
  };
}

test('pull markers: one write per repository and digest per period per instance; a failed write is retried by the next pull, never thrown', async () => {
  const clock = { now: NOW };
  const objects = fakeObjects();
  const rec = new PullRecorder(objects, { periodMs: DAY, now: () => clock.now });
  const throttled = await metric('registry_pull_records_total', { result: 'throttled' });
  for (let i = 0; i < 5; i++) rec.note('docker.io/library/alpine', d(1));
  rec.note('docker.io/library/busybox', d(1));
  await rec.drain();
  assert.deepEqual(objects.puts, [pulledKey('docker.io/library/alpine', d(1)), pulledKey('docker.io/library/busybox', d(1))]);
  assert.equal((await metric('registry_pull_records_total', { result: 'throttled' })) - throttled, 4);
  clock.now += DAY + 1;
  rec.note('docker.io/library/alpine', d(1));
  await rec.drain();
  assert.equal(objects.puts.length, 3, 'a day later the pull is recorded again');

  const down = fakeObjects({ fail: true });
  const failing = new PullRecorder(down, { now: () => clock.now });
  const failed = await metric('registry_pull_records_total', { result: 'failed' });
  failing.note('app', d(2));
  await failing.drain();
  failing.note('app', d(2));
  await failing.drain();
  assert.equal(down.puts.length, 2, 'a failed write forgets its throttle entry');
  assert.equal((await metric('registry_pull_records_total', { result: 'failed' })) - failed, 2);
  await failing.close();
  await rec.close();
});

test('pull markers: writes in flight are bounded (dropped and counted beyond), and close() waits for them', async () => {
  let release!: () => void;
  const hold = new Promise<void>((resolve) => (release = resolve));
  const objects = fakeObjects({ hold });
  const rec = new PullRecorder(objects, { maxInFlight: 2 });
  const dropped = await metric('registry_pull_records_total', { result: 'dropped' });
  for (let i = 1; i <= 4; i++) rec.note('app', d(i));
  assert.equal(objects.puts.length, 2);
  assert.equal((await metric('registry_pull_records_total', { result: 'dropped' })) - dropped, 2);
  const closed = rec.close();
  release();
  await closed;
  rec.note('app', d(9));
  assert.equal(objects.puts.length, 2, 'nothing is recorded after close');
});


async function present(store: FsStore, blobs: readonly Desc[]): Promise<boolean[]> {
  const found = await store.statBlobs(blobs.map((b) => b.digest));
  return blobs.map((b) => found.has(b.digest));
}

test('gc pulledWithin on the directory store: a pulled image stays, an unpulled one goes with its blobs, a pull during the pass keeps its tag, markers of deleted images are removed', async () => {
  const s = new FsStore(await mkdtemp(join(tmpdir(), 'ts-gc-pulled-')));
  const reg = await startTestRegistry({ store: s });
  try {
    const pulled = await putImage(s, { seed: 'pulled' });
    const idle = await putImage(s, { seed: 'idle' });
    const racing = await putImage(s, { seed: 'racing' });
    const deleted = await putImage(s, { seed: 'deleted' });
    await publish(s, 'docker.io/library/pulled', pulled.manifest, 'latest');
    await publish(s, 'docker.io/library/idle', idle.manifest, 'latest');
    await publish(s, 'docker.io/library/racing', racing.manifest, 'latest');
    await publish(s, 'other/deleted', deleted.manifest, 'v1');
    // A pull of an image that is deleted afterwards (registry DELETE: tag and link) leaves a marker behind.
    const get = (repo: string, ref: string, method = 'GET') => fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { method, headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal((await get('other/deleted', 'v1')).status, 200);
    // A HEAD is no pull (containerd resolves with HEAD, then GETs by digest).
    assert.equal((await get('docker.io/library/idle', 'latest', 'HEAD')).status, 200);
    await reg.ctx.pulls?.drain();
    assert.deepEqual(await s.listMeta(pulledPrefix('other/deleted')), [pulledKey('other/deleted', deleted.manifest.digest)]);
    assert.deepEqual(await s.listMeta(pulledPrefix('docker.io/library/idle')), []);
    await s.deleteTag('other/deleted', 'v1');
    await s.unlinkManifest('other/deleted', deleted.manifest.digest);
    await ageFiles(s.root, 3 * DAY);

    // Pulled now, by digest as containerd does: the marker is fresh, the rest is three days old.
    const puts = s.requestCounts().put ?? 0;
    assert.equal((await get('docker.io/library/pulled', pulled.manifest.digest)).status, 200);
    assert.equal((await get('docker.io/library/pulled', 'latest')).status, 200);
    await reg.ctx.pulls?.drain();
    assert.equal((s.requestCounts().put ?? 0) - puts, 1, 'two pulls, one marker write');

    const settings = gcSettings({ gc: { settleSeconds: 3, retention: [{ repos: ['docker.io/**'], pulledWithin: '1d' }] } });
    const r = await runPass(s, settings, {
      // A client pulls `racing` between the mark and the sweep: its tag must stay.
      afterMark: async () => {
        assert.equal((await get('docker.io/library/racing', racing.manifest.digest)).status, 200);
        await reg.ctx.pulls?.drain();
      },
    });
    assert.equal(r.result, 'success', JSON.stringify(r.stopped));
    assert.equal(r.removed.tag, 1);
    assert.equal(r.removed.manifest_link, 1);
    assert.equal(r.removed.pulled_marker, 1, 'the deleted image\'s marker');
    assert.deepEqual(await s.listTags('docker.io/library/idle'), []);
    assert.deepEqual(await s.listTags('docker.io/library/pulled'), ['latest']);
    assert.deepEqual(await s.listTags('docker.io/library/racing'), ['latest']);
    assert.ok((await present(s, idle.blobs)).every((p) => !p), 'the unpulled image\'s blobs are gone (older than the grace)');
    assert.ok((await present(s, [...pulled.blobs, ...racing.blobs])).every(Boolean), 'pulled images keep their blobs');
    assert.deepEqual(await s.listMeta(pulledPrefix('other/deleted')), []);
    assert.deepEqual(await s.listRepos(), ['docker.io/library/pulled', 'docker.io/library/racing']);
  } finally {
    await reg.close();
  }
});
