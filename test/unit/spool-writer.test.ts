// SpoolWriter: upload bytes reach the spool whole and in order, in few writes, and a failed chunk leaves nothing
// in flight behind it (uploads.ts truncates after 'close').
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { SpoolWriter } from '../../packages/transship/src/registry/spool-writer.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ts-spool-writer-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('appends every piece in order, after what the spool already holds, and counts flushed bytes', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 's.spool');
    await writeFile(path, 'head:');
    const pieces = Array.from({ length: 70 }, (_, i) => randomBytes(1000 + i * 997)); // ~2.5 MB in odd sizes
    const w = new SpoolWriter(path, 256 * 1024);
    const flushedAt: number[] = [];
    w.on('drain', () => flushedAt.push(w.bytesWritten));
    await pipeline(Readable.from(pieces), w);
    const want = Buffer.concat([Buffer.from('head:'), ...pieces]);
    assert.ok((await readFile(path)).equals(want), 'spool = old bytes + every piece in order');
    assert.equal(w.bytesWritten, want.length - 5);
    assert.ok(w.closed, 'the file is closed after finish');
  });
});

test('holds pieces until flushBytes, so small pieces become few writes', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 's.spool');
    const w = new SpoolWriter(path, 64 * 1024);
    const seen: number[] = [];
    for (let i = 0; i < 15; i++) {
      await new Promise<void>((resolve, reject) => w.write(Buffer.alloc(4096, i), (err) => (err ? reject(err) : resolve())));
      seen.push(w.bytesWritten);
    }
    assert.deepEqual(seen, Array(15).fill(0), 'nothing written below 64 KiB');
    await new Promise<void>((resolve, reject) => w.write(Buffer.alloc(4096, 15), (err) => (err ? reject(err) : resolve())));
    assert.equal(w.bytesWritten, 64 * 1024, 'the 16th piece flushes all 16 in one go');
    await new Promise<void>((resolve) => w.end(resolve));
    assert.equal((await readFile(path)).length, 64 * 1024);
  });
});

test('a destroyed writer drops what it had not written and closes only after a write in flight landed', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 's.spool');
    const w = new SpoolWriter(path, 8 * 1024 * 1024);
    const big = randomBytes(8 * 1024 * 1024);
    w.write(big); // starts a flush of 8 MiB
    w.write(Buffer.from('never written'));
    w.destroy(new Error('client went away'));
    w.on('error', () => undefined);
    await new Promise((resolve) => w.once('close', resolve));
    const after = await readFile(path);
    assert.ok(after.equals(big), `the flush in flight landed whole before close (${after.length} bytes), the rest was dropped`);
  });
});
