// serve collects garbage once after a burst (src/server/idle-gc.ts): never while a request is in flight, only after
// the quiet period, only when buffers hold enough to matter, and once per quiet spell. Checked with a fake clock and
// collection; the real server's hooks (a response cut off by its client still counts as finished) with fastify.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Fastify from 'fastify';
import { IdleCollector, collectWhenIdle } from '../../packages/transship/src/server/idle-gc.js';

function rig(bytes = 100 * 1024 * 1024) {
  let now = 1_000_000;
  let buffers = bytes;
  let runs = 0;
  const c = new IdleCollector({ quietMs: 5000, minBufferBytes: 64 * 1024 * 1024, gc: () => { runs++; buffers = 1024; }, bufferBytes: () => buffers, now: () => now });
  return { c, advance: (ms: number) => (now += ms), runs: () => runs, setBuffers: (b: number) => (buffers = b) };
}

test('no collection while a request is in flight, nor before the quiet period has passed', () => {
  const r = rig();
  r.c.started();
  r.advance(60_000);
  assert.equal(r.c.check(), false, 'in flight');
  r.c.finished();
  r.advance(4000);
  assert.equal(r.c.check(), false, 'quiet for 4 s only');
  r.advance(1000);
  assert.equal(r.c.check(), true);
  assert.equal(r.runs(), 1);
  r.c.close();
});

test('one collection per quiet spell, and none when buffers hold little', () => {
  const r = rig();
  r.advance(10_000);
  assert.equal(r.c.check(), true);
  r.setBuffers(500 * 1024 * 1024); // even if something grew meanwhile without a request
  r.advance(10_000);
  assert.equal(r.c.check(), false, 'already collected in this quiet spell');
  r.c.started();
  r.c.finished();
  r.advance(10_000);
  assert.equal(r.c.check(), true, 'a new quiet spell after a request');
  r.advance(10_000);
  r.c.started();
  r.c.finished();
  r.setBuffers(10 * 1024 * 1024);
  r.advance(10_000);
  assert.equal(r.c.check(), false, 'below the threshold: not worth a collection');
  assert.equal(r.runs(), 2);
  r.c.close();
});

test('fastify hooks: finished responses and responses cut off by the client both end "in flight"', async () => {
  const app = Fastify();
  let release: () => void = () => undefined;
  app.get('/fast', async () => 'ok');
  app.get('/slow', async (_req, reply) => {
    await new Promise<void>((resolve) => (release = resolve));
    return reply.send('late');
  });
  const collector = collectWhenIdle(app, { quietMs: 60_000, gc: () => undefined, bufferBytes: () => 0 });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  try {
    assert.equal(await (await fetch(`${url}/fast`)).text(), 'ok');
    assert.equal(collector.inFlight, 0);
    const controller = new AbortController();
    const slow = fetch(`${url}/slow`, { signal: controller.signal }).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(collector.inFlight, 1);
    controller.abort();
    await slow;
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(collector.inFlight, 0, 'the cut-off response counted as finished');
    release();
  } finally {
    await app.close();
  }
});
