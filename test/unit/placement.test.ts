// Placement rules, demand measurement and cost arithmetic (the S3 behaviour is in test/integration/placement.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rules, globToRegExp } from '../../src/placement/rules.js';
import { DemandTracker } from '../../src/placement/demand.js';
import { costInputFromMetrics, estimateCost, promotionThreshold, DEFAULT_PRICES } from '../../src/placement/cost.js';
import { loadConfig } from '../../src/core/config.js';
import { isTransshipError } from '../../src/core/errors.js';

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

test('promotion threshold from the price table: the 2nd remote read by default, later only when storage is dear', () => {
  const hour = 3600_000;
  const day = 24 * hour;
  assert.equal(promotionThreshold(DEFAULT_PRICES, hour), 2, 'one read is no rate; any repeated read within an hour pays for a copy');
  assert.equal(promotionThreshold(DEFAULT_PRICES, 30 * day), 2, '1.15 break-even reads per 30 days');
  assert.equal(promotionThreshold(DEFAULT_PRICES, 90 * day), 4, '3.45 break-even reads per 90 days');
  assert.equal(promotionThreshold({ ...DEFAULT_PRICES, crossRegionPerGb: 0 }, hour), Number.POSITIVE_INFINITY, 'free transfer: never worth a copy');
  assert.equal(new Rules([], {}, { ...DEFAULT_PRICES, crossRegionPerGb: 0 }).shouldPromote('x', 1000), false);
  assert.equal(promotionThreshold({ ...DEFAULT_PRICES, storageGbMonth: 0.023 * 1000 }, day), 39, 'storage 1000× dearer');
  assert.equal(new Rules([]).promote.reads, 2, 'the default comes from the price table');
  assert.equal(new Rules([], { windowMs: 90 * day }).promote.reads, 4);
  assert.equal(new Rules([], { reads: 5 }).promote.reads, 5, 'an explicit threshold wins');
  const cfg = loadConfig({ env: {}, flags: { region: 'eu', regions: { eu: { store: 'dir:/x' } }, prices: { storageGbMonth: 0.023 * 1000 }, placement: { promote: { windowSeconds: 86400 } } } });
  assert.equal(Rules.fromConfig(cfg).promote.reads, 39, 'the configured price table is used');
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
