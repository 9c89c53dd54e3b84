// serve raises glibc's malloc trim threshold (src/server/malloc.ts) unless the operator tuned malloc. The effect
// (page faults per pull through a bursty S3 endpoint) is measured in bench/RESULTS.md, not here: a synthetic
// allocation loop trims or does not depending on where V8's other allocations land, so it would be a flaky test.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { mallocTunedByOperator, raiseMallocTrimThreshold } from '../../src/server/malloc.js';

const MODULE = fileURLToPath(new URL('../../src/server/malloc.ts', import.meta.url));

test('malloc settings an operator chose (MALLOC_*_ variables, GLIBC_TUNABLES) are left alone', () => {
  assert.equal(mallocTunedByOperator({ MALLOC_TRIM_THRESHOLD_: '1048576' }), true);
  assert.equal(mallocTunedByOperator({ GLIBC_TUNABLES: 'glibc.malloc.trim_threshold=1048576' }), true);
  assert.equal(mallocTunedByOperator({ MALLOC_ARENA_MAX: '2', GLIBC_TUNABLES: 'glibc.rtld.optional_static_tls=1' }), false);
  assert.equal(raiseMallocTrimThreshold({ MALLOC_TOP_PAD_: '0' }), false);
});

test('on glibc it allocates and frees one 31 MiB block at start (what raises the threshold), and the mapping is gone after', () => {
  const script = `
    import { raiseMallocTrimThreshold } from ${JSON.stringify(MODULE)};
    import { readFileSync } from 'node:fs';
    const big = () => readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => {
      const [a, b] = (l.split(' ')[0] ?? '').split('-').map((x) => parseInt(x, 16));
      return b - a >= 31 * 1024 * 1024 && b - a < 32 * 1024 * 1024 + 65536;
    }).length;
    const before = big();
    const done = raiseMallocTrimThreshold({});
    process.stdout.write(JSON.stringify({ done, before, after: big() }));
  `;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { done: boolean; before: number; after: number };
  assert.equal(out.done, true, 'this machine runs glibc: the threshold is raised');
  assert.equal(out.after, out.before, 'the block was freed (munmap), which is what moves glibc\'s thresholds');
});
