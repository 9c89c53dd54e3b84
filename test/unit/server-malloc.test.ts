// serve raises glibc's malloc thresholds (src/server/malloc.ts) unless the operator tuned malloc. The trim threshold
// itself cannot be read back, so the test checks its twin, which glibc moves with it: after the call, 3 MiB
// allocations come from the heap (the [heap] mapping grows by them); without it, from mmap (it does not). The effect this is for (page faults per
// pull through a bursty S3 endpoint) is measured in bench/RESULTS.md and docs/architecture.md.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { mallocTunedByOperator, raiseMallocTrimThreshold } from '../../src/server/malloc.js';

const MODULE = fileURLToPath(new URL('../../src/server/malloc.ts', import.meta.url));

/** How much [heap] grew while ten 3 MiB buffers were allocated, in a fresh process, with or without the call. */
function heapGrowth(raise: boolean): { raised: boolean; grew: number } {
  const script = `
    import { raiseMallocTrimThreshold } from ${JSON.stringify(MODULE)};
    import { readFileSync } from 'node:fs';
    const SIZE = 3 * 1024 * 1024;
    const heap = () => {
      const line = readFileSync('/proc/self/maps', 'utf8').split('\\n').find((l) => l.endsWith('[heap]')) ?? '0-0';
      const [a, b] = line.split(' ')[0].split('-').map((x) => parseInt(x, 16));
      return b - a;
    };
    const raised = ${raise} ? raiseMallocTrimThreshold({}) : false;
    const before = heap();
    const keep = [];
    for (let i = 0; i < 10; i++) keep.push(Buffer.allocUnsafeSlow(SIZE));
    process.stdout.write(JSON.stringify({ raised, grew: heap() - before }));
  `;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, GLIBC_TUNABLES: '' } });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { raised: boolean; grew: number };
}

test('malloc settings an operator chose (MALLOC_*_ variables, GLIBC_TUNABLES) are left alone', () => {
  assert.equal(mallocTunedByOperator({ MALLOC_TRIM_THRESHOLD_: '1048576' }), true);
  assert.equal(mallocTunedByOperator({ GLIBC_TUNABLES: 'glibc.malloc.trim_threshold=1048576' }), true);
  assert.equal(mallocTunedByOperator({ MALLOC_ARENA_MAX: '2', GLIBC_TUNABLES: 'glibc.rtld.optional_static_tls=1' }), false);
  assert.equal(raiseMallocTrimThreshold({ MALLOC_TOP_PAD_: '0' }), false);
});

test('on glibc the thresholds move: 3 MiB buffers come from the heap afterwards, from mmap without the call', () => {
  const MiB = 1024 * 1024;
  const without = heapGrowth(false);
  const raised = heapGrowth(true);
  assert.equal(raised.raised, true, 'this machine runs glibc');
  assert.ok(without.grew < 10 * MiB, `glibc's default: 3 MiB buffers are mmap'ed, the heap grew only ${without.grew} bytes`);
  assert.ok(raised.grew >= 25 * MiB, `after the call they come from the heap: it grew ${raised.grew} bytes`);
});
