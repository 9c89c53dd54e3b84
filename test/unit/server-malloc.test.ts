// serve's malloc settings (src/server/malloc.ts) are environment variables glibc reads at start, so what the code
// owns is the hint when they are missing, and the launchers that set them. Checked here: the hint's conditions,
// that the settings really change glibc's behaviour in a process started with them (3 MiB buffers come from the
// heap, 8 MiB ones still from mmap), and that deploy/ passes them. Their effect on pulls is in docs/architecture.md.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { mallocHint, mallocTunedByOperator, SERVE_MALLOC_ENV } from '../../packages/transship/src/server/malloc.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** How much [heap] grew while ten buffers of `mib` MiB were allocated, in a fresh process with `env`. */
function heapGrowth(mib: number, env: Record<string, string>): number {
  const script = `
    const heap = () => {
      const line = require('fs').readFileSync('/proc/self/maps', 'utf8').split('\\n').find((l) => l.endsWith('[heap]')) ?? '0-0';
      const [a, b] = line.split(' ')[0].split('-').map((x) => parseInt(x, 16));
      return b - a;
    };
    const before = heap();
    const keep = [];
    for (let i = 0; i < 10; i++) keep.push(Buffer.allocUnsafeSlow(${mib} * 1024 * 1024));
    process.stdout.write(String(heap() - before));
  `;
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MALLOC_') && k !== 'GLIBC_TUNABLES'));
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...base, ...env } });
  assert.equal(r.status, 0, r.stderr);
  return Number(r.stdout);
}

test('the hint: only on glibc, only when the operator set no malloc variables or tunables', () => {
  assert.match(mallocHint({}, true) ?? '', /MALLOC_TRIM_THRESHOLD_=67108864 MALLOC_MMAP_THRESHOLD_=4194304/);
  assert.equal(mallocHint({}, false), undefined);
  assert.equal(mallocHint({ MALLOC_TRIM_THRESHOLD_: '1048576' }, true), undefined);
  assert.equal(mallocTunedByOperator({ GLIBC_TUNABLES: 'glibc.malloc.trim_threshold=1048576' }), true);
  assert.equal(mallocTunedByOperator({ MALLOC_ARENA_MAX: '2', GLIBC_TUNABLES: 'glibc.rtld.optional_static_tls=1' }), false);
});

test('with the settings, 3 MiB buffers come from the heap and 8 MiB ones from mmap; glibc\'s default mmaps both', () => {
  const MiB = 1024 * 1024;
  assert.ok(heapGrowth(3, {}) < 10 * MiB, 'default: 3 MiB buffers are mmap\'ed');
  assert.ok(heapGrowth(3, { ...SERVE_MALLOC_ENV }) >= 25 * MiB, 'with the settings: from the heap');
  assert.ok(heapGrowth(8, { ...SERVE_MALLOC_ENV }) < 10 * MiB, 'with the settings: part-sized buffers still mmap\'ed');
});

test('deploy/ starts serve with the settings (systemd unit and Kubernetes Deployment)', () => {
  const unit = readFileSync(`${ROOT}/deploy/systemd/transship-serve.service`, 'utf8');
  const k8s = readFileSync(`${ROOT}/deploy/kubernetes/transship-serve.yaml`, 'utf8');
  for (const [k, v] of Object.entries(SERVE_MALLOC_ENV)) {
    assert.match(unit, new RegExp(`^Environment=${k}=${v}$`, 'm'), `systemd: ${k}`);
    assert.match(k8s, new RegExp(`\\{ name: ${k}, value: "${v}" \\}`), `kubernetes: ${k}`);
  }
});
