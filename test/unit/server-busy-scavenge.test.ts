// serve scavenges while it streams (src/server/busy-scavenge.ts), so the short-lived buffers of a blob body are freed
// before V8 13 (Node 24/26) starts a full mark-compact for "external memory pressure" — the regression that doubled
// serve's CPU per 256 MiB pull on Node 24 (bench/RESULTS.md). Checked with a fake counter and scavenge, against the
// real V8 (the `gc` extension's minor collection frees dead young Buffers), and through fastify's hooks.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getHeapStatistics } from 'node:v8';
import Fastify from 'fastify';
import { BusyScavenger, scavengeWhileBusy } from '../../packages/transship/src/server/busy-scavenge.js';

const MiB = 1024 * 1024;

function rig() {
  let external = 10 * MiB;
  let runs = 0;
  const s = new BusyScavenger({ stepBytes: 16 * MiB, intervalMs: 60_000, scavenge: () => { runs++; external = 12 * MiB; }, externalBytes: () => external });
  return { s, grow: (n: number) => (external += n), set: (n: number) => (external = n), runs: () => runs };
}

test('a scavenge each time external memory grew by a step, none below it', () => {
  const r = rig();
  r.s.started();
  r.grow(15 * MiB);
  assert.equal(r.s.check(), false, 'below one step');
  r.grow(2 * MiB);
  assert.equal(r.s.check(), true);
  assert.equal(r.runs(), 1);
  assert.equal(r.s.check(), false, 'the baseline is what the scavenge left');
  r.grow(16 * MiB);
  assert.equal(r.s.check(), true);
  assert.equal(r.runs(), 2);
  r.s.finished();
  r.s.close();
});

test('memory that survives a scavenge (long-lived buffers) moves the baseline: no scavenge per check', () => {
  let external = 10 * MiB;
  let runs = 0;
  // Nothing is freed: the scavenge leaves external memory where it was.
  const s = new BusyScavenger({ stepBytes: 16 * MiB, intervalMs: 60_000, scavenge: () => runs++, externalBytes: () => external });
  s.started();
  external += 40 * MiB;
  assert.equal(s.check(), true);
  for (let i = 0; i < 5; i++) assert.equal(s.check(), false);
  assert.equal(runs, 1);
  s.finished();
  s.close();
});

test('a drop (buffers swept after the scavenge) lowers the baseline, so the next step counts from there', () => {
  const r = rig();
  r.s.started();
  r.set(40 * MiB);
  assert.equal(r.s.check(), true); // leaves 12 MiB
  r.set(4 * MiB);
  assert.equal(r.s.check(), false);
  r.set(21 * MiB); // 17 MiB above the lowest value seen
  assert.equal(r.s.check(), true);
  r.s.finished();
  r.s.close();
});

test('real V8: scavenges free dead young Buffers, so external memory stays far below the 64 MB trigger', () => {
  const s = new BusyScavenger({ stepBytes: 16 * MiB, intervalMs: 60_000 });
  const before = getHeapStatistics().external_memory;
  let peak = before;
  // 128 MiB of short-lived 64 KiB Buffers (a streamed body's pieces), checked every 4 MiB as the timer would.
  for (let i = 0; i < 2048; i++) {
    Buffer.allocUnsafeSlow(64 * 1024);
    if (i % 64 === 63) {
      s.check();
      peak = Math.max(peak, getHeapStatistics().external_memory);
    }
  }
  assert.ok(s.scavenges >= 2, `V8 hands out its gc extension: ${s.scavenges} scavenges`);
  // A scavenge's freed backing stores are swept concurrently and taken off the count at the next collection, so
  // the count peaks near two steps; without the scavenges it would climb towards 128 MiB.
  assert.ok(peak < before + 48 * MiB, `external memory peaked ${((peak - before) / MiB).toFixed(1)} MiB above the start`);
  s.close();
});

test('fastify hooks: the check runs only while a request is in flight', async () => {
  const app = Fastify();
  let release: () => void = () => undefined;
  let checks = 0;
  app.get('/slow', async (_req, reply) => {
    await new Promise<void>((resolve) => (release = resolve));
    return reply.send('late');
  });
  scavengeWhileBusy(app, { intervalMs: 5, scavenge: () => undefined, externalBytes: () => (checks++, 0) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  try {
    const idle = checks;
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(checks - idle <= 1, 'no checks while idle');
    const slow = fetch(`${url}/slow`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.ok(checks - idle >= 5, `checks while a request is in flight: ${checks - idle}`);
    release();
    assert.equal(await (await slow).text(), 'late');
    await new Promise((resolve) => setTimeout(resolve, 20));
    const after = checks;
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(checks, after, 'the timer stopped with the last response');
  } finally {
    await app.close();
  }
});
