// One duration grammar for flags and config (src/core/duration.ts). Regression: doctor/watch flags and watch.* config
// took `ms|s|m|h` or plain seconds, placement.promote.evictAfterIdle took `ms|s|m|h|d` but no plain seconds, so `7d`
// worked in one place and failed in the other.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { durationProblem, parseDuration } from '@transship/core/duration';
import { isTransshipError } from '@transship/core/errors';
import { loadConfig } from '../../packages/transship/src/config/config.js';
import { parseIdle } from '../../packages/transship/src/placement/promoted.js';

test('duration: every documented form, in milliseconds', () => {
  const cases: Array<[string, number]> = [
    ['1500ms', 1500], ['90s', 90_000], ['15m', 900_000], ['2h', 7_200_000], ['7d', 604_800_000],
    ['30', 30_000], ['0.5s', 500], ['1.5d', 129_600_000], [' 5m ', 300_000], ['0', 0],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text, '--x'), ms, text);
});

test('duration: bad input is TS_USAGE for flags, TS_CONFIG_INVALID for config, naming the flag or key', () => {
  for (const bad of ['', 'soon', '5w', '-5s', '5 m', 'm5', '1e3s', '99999999999999999d']) {
    assert.throws(() => parseDuration(bad, '--timeout'), (e) => isTransshipError(e, 'TS_USAGE') && e.message.startsWith('--timeout: ') && e.details['--timeout'] !== undefined, bad);
    assert.notEqual(durationProblem(bad), undefined, bad);
  }
  assert.throws(() => parseDuration('5w', 'watch.exitGrace', 'TS_CONFIG_INVALID'), (e) => isTransshipError(e, 'TS_CONFIG_INVALID'));
  assert.match(durationProblem('5w') ?? '', /unknown unit "w"/);
  assert.match(durationProblem('-5s') ?? '', /negative/);
});

test('duration: the same values are valid in watch.* config, placement.promote.evictAfterIdle and flags', () => {
  const regions = { region: 'eu', regions: { eu: { store: 'dir:/x' } } };
  for (const v of ['7d', '30', '500ms']) {
    assert.doesNotThrow(() => loadConfig({ env: {}, flags: { watch: { exitGrace: v } } }), v);
    assert.doesNotThrow(() => loadConfig({ env: {}, flags: { ...regions, placement: { promote: { evictAfterIdle: v } } } }), v);
    assert.equal(parseIdle(v, 'x'), parseDuration(v, '--x'), v);
  }
  assert.throws(() => loadConfig({ env: {}, flags: { watch: { exitGrace: '5w' } } }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /watch\.exitGrace/.test(e.message));
  assert.throws(() => loadConfig({ env: {}, flags: { ...regions, placement: { promote: { evictAfterIdle: '5w' } } } }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID'));
  assert.doesNotThrow(() => loadConfig({ env: {}, flags: { ...regions, placement: { promote: { evictAfterIdle: 'never' } } } }));
});
