// The GC lease (src/gc/lease.ts) and mark set (src/gc/mark-set.ts) on the directory store's real object driver.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { GcLease } from '../../packages/transship/src/gc/lease.js';
import { MarkSet } from '../../packages/transship/src/gc/mark-set.js';
import { GC_LEASE_PREFIX } from '../../packages/transship/src/store/keys.js';

async function store(): Promise<FsStore> {
  return new FsStore(await mkdtemp(join(tmpdir(), 'ts-gc-lease-')));
}

test('lease: one holder at a time; a second runner is told who holds it (guards two passes doubling the work)', async () => {
  const s = await store();
  let now = 1_000_000;
  const a = new GcLease(s.objects, { ttlMs: 60_000, skewMs: 1000, owner: 'a', now: () => now });
  const b = new GcLease(s.objects, { ttlMs: 60_000, skewMs: 1000, owner: 'b', now: () => now });
  assert.deepEqual(await a.acquire(), { held: true, epoch: 1 });
  const busy = await b.acquire();
  assert.equal(busy.held, false);
  assert.equal(busy.held === false && busy.holder?.owner, 'a');
  now += 40_000;
  assert.ok(await a.keep(), 'renewed past half the lease');
  assert.equal(a.heldEpoch, 2);
  now += 59_000;
  assert.equal((await b.acquire()).held, false, 'the renewal still holds');
});

test('lease: a crashed holder blocks only until expiry + skew; then exactly one of two contenders takes over', async () => {
  const s = await store();
  let now = 5_000_000;
  const crashed = new GcLease(s.objects, { ttlMs: 10_000, skewMs: 2000, owner: 'crashed', now: () => now });
  assert.equal((await crashed.acquire()).held, true);
  const b = new GcLease(s.objects, { ttlMs: 10_000, skewMs: 2000, owner: 'b', now: () => now });
  const c = new GcLease(s.objects, { ttlMs: 10_000, skewMs: 2000, owner: 'c', now: () => now });
  now += 11_000; // expired, but within the skew allowance
  assert.equal((await b.acquire()).held, false);
  now += 2_000;
  const [rb, rc] = await Promise.all([b.acquire(), c.acquire()]);
  assert.equal([rb, rc].filter((r) => r.held).length, 1, 'put-if-absent lets exactly one contender win');
  // The old holder, back from a pause, finds its renewal refused and must stop.
  assert.equal(crashed.valid(), false);
  assert.equal(await crashed.renew(), false);
});

test('lease: release lets the next runner start at once, and old epochs are cleaned up', async () => {
  const s = await store();
  let now = 9_000_000;
  const a = new GcLease(s.objects, { ttlMs: 600_000, skewMs: 1000, owner: 'a', now: () => now });
  for (let i = 0; i < 3; i++) {
    assert.equal((await a.acquire()).held, true);
    await a.release();
    now += 1;
  }
  const b = new GcLease(s.objects, { ttlMs: 600_000, skewMs: 1000, owner: 'b', now: () => now });
  assert.equal((await b.acquire()).held, true);
  const keys: string[] = [];
  for await (const o of s.objects.list(GC_LEASE_PREFIX)) keys.push(o.key);
  assert.ok(keys.length <= 3, `old epochs removed (${keys.join(', ')})`);
});

test('mark set: membership by 64-bit prefix, sorted once; 8 bytes per digest (guards a 1 GB mark for 1M blobs)', () => {
  const m = new MarkSet();
  const d = (i: number): string => `sha256:${i.toString(16).padStart(16, '0')}${'ab'.repeat(24)}`;
  for (let i = 0; i < 100_000; i += 2) m.add(d(i));
  m.add(d(0)); // duplicates collapse
  for (let i = 0; i < 100_000; i++) assert.equal(m.has(d(i)), i % 2 === 0, `digest ${i}`);
  assert.equal(m.size, 50_000);
  assert.ok(m.bytes <= 16 * 65_536, `${m.bytes} bytes`);
  m.add(d(1)); // adding after a lookup re-seals
  assert.ok(m.has(d(1)));
});
