// Placement rules, demand measurement and cost arithmetic (the S3 behaviour is in test/integration/placement.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rules, globToRegExp } from '../../packages/transship/src/placement/rules.js';
import { DemandTracker } from '../../packages/transship/src/placement/demand.js';
import { breakEvenResidencyMs, costInputFromMetrics, estimateCost, promotionThreshold, DEFAULT_PRICES } from '../../packages/transship/src/placement/cost.js';
import { PromotionLedger, parseIdle, parseMarkers, readKey, evictionRecordKey, stampPeriodMs, DAY_MS } from '../../packages/transship/src/placement/promoted.js';
import { DEFAULT_GRACE_MS, Evictor } from '../../packages/transship/src/placement/evict.js';
import { Regions } from '../../packages/transship/src/placement/regions.js';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { digestOf } from '@transship/core/digest';
import { loadConfig } from '../../packages/transship/src/config/config.js';
import { isTransshipError } from '@transship/core/errors';

test('globs: * stays within a component, ** crosses components', () => {
  assert.ok(globToRegExp('prod/*').test('prod/api'));
  assert.ok(!globToRegExp('prod/*').test('prod/team/api'));
  assert.ok(globToRegExp('prod/**').test('prod/team/api'));
  assert.ok(globToRegExp('**').test('anything/at/all'));
  assert.ok(!globToRegExp('prod.x').test('prodyx'), 'dots are literal');
});

test('rules: first match wins; dr targets; promotion by policy and demand', () => {
  const r = new Rules([{ repos: ['prod/**'], reason: 'dr', regions: ['us'] }, { repos: ['scratch/**'], reason: 'never' }], { policy: 'demand', reads: 3 });
  assert.deepEqual(r.drTargets('prod/api', ['eu', 'us', 'ap']), ['us']);
  assert.deepEqual(r.drTargets('dev/api', ['eu', 'us']), [], 'no rule = demand, nothing eager');
  assert.equal(r.shouldPromote('dev/api', 2), false);
  assert.equal(r.shouldPromote('dev/api', 3), true);
  assert.equal(r.shouldPromote('scratch/x', 100), false, 'never means never');
  assert.equal(new Rules([], { policy: 'always' }).shouldPromote('x', 1), true);
});

test('promotion threshold from the price table: without eviction the 2nd remote read, later only when storage is dear', () => {
  const hour = 3600_000;
  const day = 24 * hour;
  const never = Number.POSITIVE_INFINITY;
  assert.equal(promotionThreshold(DEFAULT_PRICES, hour), 2, 'copies kept forever: one read is no rate');
  assert.equal(promotionThreshold(DEFAULT_PRICES, 30 * day, never), 2, '1.15 break-even reads per 30 days');
  assert.equal(promotionThreshold(DEFAULT_PRICES, 90 * day, never), 4, '3.45 break-even reads per 90 days');
  assert.equal(promotionThreshold({ ...DEFAULT_PRICES, crossRegionPerGb: 0 }, hour), Number.POSITIVE_INFINITY, 'free transfer: never worth a copy');
  assert.equal(promotionThreshold({ ...DEFAULT_PRICES, crossRegionPerGb: 0 }, hour, 7 * day), Number.POSITIVE_INFINITY, 'free transfer: not even a bounded copy');
  assert.equal(new Rules([], {}, { ...DEFAULT_PRICES, crossRegionPerGb: 0 }).shouldPromote('x', 1000), false);
  assert.equal(promotionThreshold({ ...DEFAULT_PRICES, storageGbMonth: 0.023 * 1000 }, day, never), 39, 'storage 1000× dearer');
  assert.equal(new Rules([], { reads: 5 }).promote.reads, 5, 'an explicit threshold wins');
  assert.equal(new Rules([], { evictAfterIdleMs: never }).promote.reads, 2, '`evictAfterIdle: never` keeps the old rule');
  const cfg = loadConfig({ env: {}, flags: { region: 'eu', regions: { eu: { store: 'dir:/x' } }, prices: { storageGbMonth: 0.023 * 1000 }, placement: { promote: { windowSeconds: 86400, evictAfterIdle: 'never' } } } });
  assert.equal(Rules.fromConfig(cfg).promote.reads, 39, 'the configured price table is used');
});

test('with eviction (the default) the price table promotes on the first remote read: bounded residency, ≤ 2× the cheapest placement', () => {
  const day = DAY_MS;
  // Break-even residency: transfer ÷ storage months — 0.02 / 0.023 × 30 days ≈ 26.1 days at AWS list prices.
  assert.equal(Math.round(breakEvenResidencyMs(DEFAULT_PRICES) / day * 10) / 10, 26.1);
  assert.equal(breakEvenResidencyMs({ ...DEFAULT_PRICES, storageGbMonth: 0 }), Number.POSITIVE_INFINITY, 'free storage: never evict');
  assert.equal(breakEvenResidencyMs({ ...DEFAULT_PRICES, crossRegionPerGb: 0 }), 0, 'free transfer: a copy is worth nothing');
  const r = new Rules([]);
  assert.equal(r.promote.reads, 1, 'the default derived from prices is now the first read');
  assert.equal(r.promote.evictAfterIdleMs, breakEvenResidencyMs(DEFAULT_PRICES));
  assert.equal(r.promote.policy, 'demand');
  assert.equal(r.shouldPromote('x', 1), true);
  assert.equal(promotionThreshold(DEFAULT_PRICES, 3600_000, 7 * day), 1, 'a week of storage is 27% of a crossing');
  assert.equal(promotionThreshold(DEFAULT_PRICES, 3600_000, 27 * day), 2, 'past the break-even residency a copy risks more than a crossing: wait for demand');
  assert.equal(new Rules([], { evictAfterIdleMs: 7 * day }).promote.reads, 1);
  assert.equal(new Rules([], { policy: 'never' }).shouldPromote('x', 5), false, '`never` still works');
  assert.equal(new Rules([], { policy: 'always', evictAfterIdleMs: Number.POSITIVE_INFINITY }).shouldPromote('x', 1), true, '`always` still works');
  const cfg = loadConfig({ env: {}, flags: { region: 'eu', regions: { eu: { store: 'dir:/x' } }, placement: { promote: { evictAfterIdle: '7d' } } } });
  assert.equal(Rules.fromConfig(cfg).promote.evictAfterIdleMs, 7 * day);
});

test('evictAfterIdle and evict limits: validated with precise messages', () => {
  assert.equal(parseIdle('12h', 'x'), 12 * 3600_000);
  assert.equal(parseIdle('1.5d', 'x'), 1.5 * DAY_MS);
  assert.equal(parseIdle('never', 'x'), Number.POSITIVE_INFINITY);
  // One duration grammar (src/core/duration.ts): a plain number is seconds here too, as in every other duration.
  assert.equal(parseIdle('7', 'x'), 7000);
  assert.throws(() => parseIdle('7w', 'placement.promote.evictAfterIdle'), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && e.message.startsWith('placement.promote.evictAfterIdle: '));
  const flags = (placement: object) => ({ region: 'eu', regions: { eu: { store: 'dir:/x' } }, placement });
  assert.throws(
    () => loadConfig({ env: {}, flags: flags({ promote: { evictAfterIdle: '7 days' } }) }),
    (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /placement\.promote\.evictAfterIdle: /.test(e.message),
  );
  assert.throws(
    () => loadConfig({ env: {}, flags: flags({ evict: { graceSeconds: 30 } }) }),
    (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /placement\.evict\.graceSeconds: must be at least 180 s/.test(e.message),
  );
  assert.throws(() => loadConfig({ env: {}, flags: flags({ evict: { maxPerPass: 0 } }) }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /placement\.evict\.maxPerPass/.test(e.message));
  assert.throws(() => loadConfig({ env: {}, flags: flags({ evict: { every: 3 } }) }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID'));
  assert.equal(stampPeriodMs(Number.POSITIVE_INFINITY), DAY_MS, 'a stamp a day at most');
  assert.equal(stampPeriodMs(26 * DAY_MS), DAY_MS);
  assert.equal(stampPeriodMs(8000), 1000);
});

test('promotion markers: parsed by digest; reads stamped from memory once per period, old stamps replaced', async () => {
  const hex = 'a'.repeat(64);
  const d = `sha256:${hex}`;
  const m = parseMarkers([readKey(d, 2000), readKey(d, 1000), evictionRecordKey(5000), 'repos/_placement/promoted/sha256/zz/read/1', 'repos/app/blobs/sha256/' + hex]);
  assert.deepEqual([...m.keys()], [d]);
  assert.deepEqual(m.get(d)?.reads, [1000, 2000]);

  const dir = await mkdtemp(join(tmpdir(), 'ts-ledger-'));
  try {
    const store = new FsStore(dir);
    let now = 10 * DAY_MS + 5;
    const ledger = new PromotionLedger(store, { stampMs: DAY_MS, now: () => now });
    assert.equal(await ledger.flush(), 0, 'nothing noted: no request');
    await ledger.recordPromotion(d, 'us');
    ledger.noteRead(d);
    ledger.noteRead(`sha256:${'b'.repeat(64)}`);
    assert.equal(await ledger.flush(), 0, 'same day as the promotion stamp; the unpromoted digest is dropped');
    now += DAY_MS;
    ledger.noteRead(d);
    ledger.noteRead(d);
    assert.equal(await ledger.flush(), 1, 'one stamp per digest per day');
    assert.deepEqual((await ledger.list()).get(d)?.reads, [11 * DAY_MS], 'the older stamp was replaced');
    assert.equal(ledger.pendingReads, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('eviction: a promoted copy idle past the limit goes (a lazy fetch later); a fresh one, an unmarked blob, and a copy with no original elsewhere stay', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ts-evict-'));
  try {
    const home = new FsStore(join(dir, 'b'), 'b');
    const origin = new FsStore(join(dir, 'a'), 'a');
    const put = async (s: FsStore, body: string) => {
      const digest = digestOf(body);
      await s.putBlob(digest, () => Readable.from([Buffer.from(body)]));
      return digest;
    };
    const idle = await put(home, 'idle copy');
    await put(origin, 'idle copy');
    const fresh = await put(home, 'fresh copy');
    await put(origin, 'fresh copy');
    const orphan = await put(home, 'no original');
    const mine = await put(home, 'pushed here');
    let now = 100 * DAY_MS;
    const ledger = new PromotionLedger(home, { stampMs: DAY_MS, now: () => now });
    await ledger.recordPromotion(idle, 'a');
    await ledger.recordPromotion(orphan, 'a');
    now += 30 * DAY_MS;
    await ledger.recordPromotion(fresh, 'a');
    const evictor = new Evictor(Regions.of('b', { a: origin, b: home }), ledger, { idleMs: 7 * DAY_MS, now: () => now });
    const dry = await evictor.pass({ dryRun: true });
    assert.deepEqual(dry.evicted.map((e) => e.digest), [idle]);
    assert.ok(await home.statBlob(idle), 'a dry run deletes nothing');
    const r = await evictor.pass();
    assert.deepEqual(r.evicted.map((e) => e.digest), [idle]);
    assert.deepEqual(r.kept.map((k) => [k.digest, k.reason]), [[orphan, 'no-original-elsewhere']]);
    assert.equal(r.warm, 1);
    assert.equal(await home.statBlob(idle), undefined);
    assert.ok(await home.statBlob(fresh) && (await home.statBlob(orphan)) && (await home.statBlob(mine)));
    assert.ok(await origin.statBlob(idle), 'the original is never touched');
    const { records, entries } = await ledger.listWithEvictions();
    assert.deepEqual(records.map((x) => x.digests), [[idle]], 'one record per pass, written before the deletes');
    assert.deepEqual(entries.get(idle)?.evicted, [now]);
    now += DEFAULT_GRACE_MS + 60_000;
    const confirm = await evictor.pass();
    assert.equal(confirm.confirmed, 1);
    assert.deepEqual((await ledger.listWithEvictions()).records, [], 'the record goes once every digest in it was checked');
    assert.equal((await ledger.list()).has(idle), false);
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(evictor.pass({ signal: ac.signal }), (e) => isTransshipError(e, 'TS_CANCELLED'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('demand: counts only reads inside the window, bounded memory', () => {
  let now = 0;
  const t = new DemandTracker(1000, 3, 2, () => now);
  assert.equal(t.record('d1'), 1);
  now = 500;
  assert.equal(t.record('d1'), 2);
  now = 1600;
  assert.equal(t.record('d1'), 1, 'the first two fell out of the window');
  t.record('d2');
  t.record('d3');
  assert.equal(t.record('d1'), 1, 'd1 was evicted when a third digest arrived (maxKeys 2)');
});

test('cost: request classes from metrics text, AWS list prices by default', () => {
  const text = [
    '# TYPE s3_requests_total counter',
    's3_requests_total{store="s3://b",operation="PutObject",outcome="ok"} 2000',
    's3_requests_total{store="s3://b",operation="HeadObject",outcome="ok"} 10000',
    's3_requests_total{store="s3://b",operation="DeleteObject",outcome="ok"} 5',
    'blob_skipped_bytes_total{store="s3://b"} 3000000000',
    'cross_region_upload_bytes_total{from="a",to="b"} 1000000000',
  ].join('\n');
  const est = estimateCost({ ...costInputFromMetrics(text), storedBytes: 2e9 }, DEFAULT_PRICES);
  assert.equal(est.requests.putClass, 2000);
  assert.equal(est.requests.getClass, 10000);
  assert.ok(Math.abs(est.requests.cost - (2 * 0.005 + 10 * 0.0004)) < 1e-9);
  assert.ok(Math.abs(est.crossRegion.cost - 0.02) < 1e-9);
  assert.ok(Math.abs(est.storage.monthlyCost - 0.046) < 1e-9);
  assert.equal(est.dedup.bytesSaved, 3e9);
});

test('config: placement rules must name configured regions; regions need a home', () => {
  const env = {};
  assert.throws(
    () => loadConfig({ env, flags: { region: 'eu', regions: { eu: { store: 'dir:/x' } }, placement: { rules: [{ repos: ['**'], reason: 'dr', regions: ['mars'] }] } } }),
    (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /placement\.rules\.0\.regions\.0: unknown region "mars"/.test(e.message),
  );
  assert.throws(() => loadConfig({ env, flags: { regions: { eu: { store: 'dir:/x' } } } }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /home region is not/.test(e.message));
});
