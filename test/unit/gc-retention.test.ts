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
