// Resource bounds of `serve` (issue 20 item 13): open upload sessions, bytes in upload spools, and connections whose
// client went quiet mid-request. Each bound answers with a spec error the client can act on, counts in a metric,
// and leaves the store and the other sessions as they were.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { registry } from '../../packages/transship/src/telemetry/metrics.js';
import { errorCode, injector, snapshot, startTestRegistry, tempFsStore } from '../support/registry.js';
import type { ServerOptions } from '../../packages/transship/src/server/server.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const values = (await registry.getSingleMetric(name)?.get())?.values ?? [];
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
}

/** Waits for a condition (checked every 10 ms) up to `ms`; throws when it never holds. */
async function until(cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function setup(opts: Partial<ServerOptions>) {
  const fs = await tempFsStore();
  const spool = await mkdtemp(join(tmpdir(), 'ts-limits-'));
  cleanups.push(fs.cleanup, () => rm(spool, { recursive: true, force: true }));
  const reg = await startTestRegistry({ store: fs.store, meta: fs.meta, uploadDir: spool, ...opts });
  cleanups.push(() => reg.close());
  return { reg, inject: injector(reg.app), fs };
}

test('issue 20 item 13: open upload sessions are capped (429 TOO_MANY_REQUESTS with Retry-After, counted); a finished session frees its place', async () => {
  const { inject, reg, fs } = await setup({ maxUploadSessions: 2 });
  const refused = await metric('registry_upload_refusals_total', { reason: 'sessions' });
  const a = await inject({ method: 'POST', url: '/v2/app/blobs/uploads/' });
  const b = await inject({ method: 'POST', url: '/v2/app/blobs/uploads/' });
  assert.deepEqual([a.statusCode, b.statusCode], [202, 202]);
  const before = await snapshot(fs.store, fs.meta);
  const third = await inject({ method: 'POST', url: '/v2/app/blobs/uploads/' });
  assert.equal(third.statusCode, 429);
  assert.equal(errorCode(third), 'TOO_MANY_REQUESTS');
  assert.equal(third.headers['retry-after'], '60');
  const mono = await inject({ method: 'POST', url: `/v2/app/blobs/uploads/?digest=${sha(Buffer.from('x'))}`, payload: Buffer.from('x') });
  assert.equal(mono.statusCode, 429, 'a monolithic upload is a session too');
  assert.equal((await metric('registry_upload_refusals_total', { reason: 'sessions' })) - refused, 2);
  assert.equal(reg.ctx.sessions.count, 2);
  assert.deepEqual(await snapshot(fs.store, fs.meta), before);
  assert.equal((await inject({ method: 'DELETE', url: String(a.headers.location) })).statusCode, 204);
  assert.equal((await inject({ method: 'POST', url: '/v2/app/blobs/uploads/' })).statusCode, 202);
});

test('issue 20 item 13: bytes in upload spools are capped; the refused chunk is rolled back, the gauge follows, other sessions go on', async () => {
  const { inject, reg } = await setup({ maxSpoolBytes: 1000 });
  const refused = await metric('registry_upload_refusals_total', { reason: 'spool_bytes' });
  const a = await inject({ method: 'POST', url: '/v2/app/blobs/uploads/' });
  const b = await inject({ method: 'POST', url: '/v2/app/blobs/uploads/' });
  const first = Buffer.alloc(800, 1);
  assert.equal((await inject({ method: 'PATCH', url: String(a.headers.location), headers: { 'content-type': 'application/octet-stream' }, payload: first })).statusCode, 202);
  assert.equal(await metric('registry_upload_spool_bytes'), 800);
  const over = await inject({ method: 'PATCH', url: String(b.headers.location), headers: { 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(400, 2) });
  assert.equal(over.statusCode, 429);
  assert.equal(errorCode(over), 'TOO_MANY_REQUESTS');
  assert.equal((await metric('registry_upload_refusals_total', { reason: 'spool_bytes' })) - refused, 1);
  assert.equal(reg.ctx.sessions.spooledBytes, 800, 'the refused chunk is not counted');
  const status = await inject({ method: 'GET', url: String(b.headers.location) });
  assert.equal(status.headers.range, '0-0', 'session b rolled back to empty');
  // Session a finishes: its bytes leave the spool and b may upload.
  assert.equal((await inject({ method: 'PUT', url: `${String(a.headers.location)}?digest=${sha(first)}` })).statusCode, 201);
  assert.equal(reg.ctx.sessions.spooledBytes, 0);
  const second = Buffer.alloc(400, 2);
  assert.equal((await inject({ method: 'PUT', url: `${String(b.headers.location)}?digest=${sha(second)}`, headers: { 'content-type': 'application/octet-stream' }, payload: second })).statusCode, 201);
  assert.equal(await metric('registry_upload_spool_bytes'), 0);
});

test('issue 20 item 13: a client that stops sending mid-upload is disconnected after the idle timeout; its chunk is rolled back', async () => {
  const { reg } = await setup({ idleTimeoutSeconds: 1 });
  const timeouts = await metric('registry_connection_timeouts_total');
  const post = await fetch(`${reg.url}/v2/app/blobs/uploads/`, { method: 'POST' });
  const location = String(post.headers.get('location'));
  const port = Number(reg.host.split(':')[1]);
  const started = Date.now();
  // 10 of 1000 announced bytes, then silence.
  await new Promise<void>((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(`PATCH ${location} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n`);
      socket.write(Buffer.alloc(10, 3));
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve());
  });
  const took = Date.now() - started;
  assert.ok(took >= 900 && took < 10_000, `closed by the idle timeout (${took} ms)`);
  assert.equal((await metric('registry_connection_timeouts_total')) - timeouts, 1);
  const id = location.split('/').at(-1)!;
  // The interrupted chunk was rolled back once the server noticed the connection was gone.
  await until(() => !reg.ctx.sessions.get(id, 'app').busy, 5000);
  assert.equal(reg.ctx.sessions.get(id, 'app').size, 0);
  assert.equal(reg.ctx.sessions.spooledBytes, 0);
  // A quiet keep-alive connection between requests, and a normal request, are not affected.
  assert.equal((await fetch(`${reg.url}/v2/`)).status, 200);
});
