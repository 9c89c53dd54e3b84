// The local blob cache (src/registry/blob-cache.ts) on its own: what enters (verified bytes only), what it serves
// (whole blobs and ranges), its bound (least recently used out), what a restart keeps, and an unusable directory.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { appendFile, chmod, chown, mkdir, mkdtemp, readdir, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlobCache } from '../../packages/transship/src/registry/blob-cache.js';
import { isTransshipError } from '@transship/core/errors';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'ts-blob-cache-'));
  dirs.push(d);
  return d;
}

function blob(size: number): { data: Buffer; digest: string } {
  const data = randomBytes(size);
  return { data, digest: `sha256:${createHash('sha256').update(data).digest('hex')}` };
}

/** A spool file holding `data`, as an upload session leaves it. */
async function spool(dir: string, data: Buffer): Promise<string> {
  const path = join(dir, `${Math.random().toString(16).slice(2)}.spool`);
  await writeFile(path, data);
  return path;
}

/** Waits until the cache holds `digest` (a read fill completes after the response ended). */
async function until(cache: BlobCache, digest: string, present = true): Promise<void> {
  for (let i = 0; i < 200 && (cache.has(digest) !== undefined) !== present; i++) await sleep(10);
}

test('an adopted upload is served whole and by range, and survives the spool being removed', async () => {
  const dir = await tempDir();
  const cache = new BlobCache({ dir: join(dir, 'cache'), maxBytes: 1024 * 1024 });
  await cache.init();
  const b = blob(100_000);
  const path = await spool(dir, b.data);
  await cache.adopt(b.digest, b.data.length, path);
  await rm(path);
  assert.equal(cache.has(b.digest), b.data.length);
  assert.ok((await buffer((await cache.open(b.digest)) as Readable)).equals(b.data));
  assert.ok((await buffer((await cache.open(b.digest, { start: 10, end: 19 })) as Readable)).equals(b.data.subarray(10, 20)));
  assert.equal(await cache.open(blob(10).digest), undefined, 'a digest never cached is a miss');
});

test('the bound: least recently used blobs leave first, and a blob over a quarter of it never enters', async () => {
  const dir = await tempDir();
  const cache = new BlobCache({ dir: join(dir, 'cache'), maxBytes: 4000 });
  await cache.init();
  const [a, b, c, d] = [blob(1000), blob(1000), blob(1000), blob(1000)];
  for (const x of [a, b, c]) await cache.adopt(x.digest, 1000, await spool(dir, x.data));
  (await cache.open(a.digest))?.destroy(); // a is now the most recently used
  await cache.adopt(d.digest, 1000, await spool(dir, d.data));
  const e = blob(1000);
  await cache.adopt(e.digest, 1000, await spool(dir, e.data)); // 5000 > 4000: the least recently used (b) leaves
  assert.equal(cache.has(b.digest), undefined);
  for (const x of [a, c, d, e]) assert.equal(cache.has(x.digest), 1000);
  assert.equal(cache.size, 4000);
  await sleep(20); // eviction unlinks in the background
  assert.equal((await readdir(join(dir, 'cache'))).length, 4);
  const big = blob(1001);
  await cache.adopt(big.digest, 1001, await spool(dir, big.data));
  assert.equal(cache.has(big.digest), undefined);
});

test('a store read is passed through unchanged and kept once it ended with the right digest', async () => {
  const dir = await tempDir();
  const cache = new BlobCache({ dir, maxBytes: 1024 * 1024 });
  await cache.init();
  const b = blob(200_000);
  const pieces = [b.data.subarray(0, 70_000), b.data.subarray(70_000, 150_000), b.data.subarray(150_000)];
  const served = await buffer(cache.tee(b.digest, b.data.length, Readable.from(pieces)));
  assert.ok(served.equals(b.data));
  await until(cache, b.digest);
  assert.ok((await buffer((await cache.open(b.digest)) as Readable)).equals(b.data));
  assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('.fill-')), [], 'no fill file left');
});

test('bytes that do not match their digest are served as read but never kept', async () => {
  const dir = await tempDir();
  const cache = new BlobCache({ dir, maxBytes: 1024 * 1024 });
  await cache.init();
  const b = blob(50_000);
  const wrong = Buffer.from(b.data);
  wrong[100] = (wrong[100] ?? 0) ^ 0xff;
  const served = await buffer(cache.tee(b.digest, b.data.length, Readable.from([wrong])));
  assert.ok(served.equals(wrong));
  await sleep(100);
  assert.equal(cache.has(b.digest), undefined);
  assert.deepEqual(await readdir(dir), []);
  // A short read is not kept either.
  await buffer(cache.tee(b.digest, b.data.length, Readable.from([b.data.subarray(0, 1000)])));
  await sleep(100);
  assert.equal(cache.has(b.digest), undefined);
  assert.deepEqual(await readdir(dir), []);
});

test('a client that goes away mid-read leaves nothing cached and no fill file', async () => {
  const dir = await tempDir();
  const cache = new BlobCache({ dir, maxBytes: 64 * 1024 * 1024 });
  await cache.init();
  const b = blob(4 * 1024 * 1024);
  // Slower than the client: the client leaves while the read is still going.
  const source = Readable.from((async function* () {
    for (let i = 0; i < b.data.length; i += 65536) {
      yield b.data.subarray(i, i + 65536);
      await sleep(5);
    }
  })());
  const out = cache.tee(b.digest, b.data.length, source);
  await new Promise<void>((resolve) => out.once('data', () => resolve()));
  out.destroy();
  await sleep(100);
  assert.equal(cache.has(b.digest), undefined);
  assert.deepEqual(await readdir(dir), []);
  assert.ok(source.destroyed, 'the store read is cancelled with the client');
});

test('a restart takes over what was cached (oldest first), drops stale fills and ignores foreign files', async () => {
  const dir = await tempDir();
  const first = new BlobCache({ dir, maxBytes: 10_000 });
  await first.init();
  const [a, b] = [blob(2000), blob(2000)];
  await first.adopt(a.digest, 2000, await spool(await tempDir(), a.data));
  await first.adopt(b.digest, 2000, await spool(await tempDir(), b.data));
  await utimes(join(dir, `sha256-${a.digest.slice(7)}`), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
  const old = new Date(Date.now() - 2 * 3600_000);
  await writeFile(join(dir, '.fill-1-stale'), 'x');
  await utimes(join(dir, '.fill-1-stale'), old, old);
  await writeFile(join(dir, '.fill-2-live'), 'x');
  await writeFile(join(dir, 'README'), 'not a blob');
  const second = new BlobCache({ dir, maxBytes: 5000 });
  await second.init();
  assert.equal(second.has(a.digest), 2000);
  assert.equal(second.has(b.digest), 2000);
  assert.equal(second.size, 4000);
  assert.deepEqual((await readdir(dir)).sort(), ['.fill-2-live', 'README', `sha256-${a.digest.slice(7)}`, `sha256-${b.digest.slice(7)}`].sort());
  // a (older mtime) is the least recently used: it leaves first.
  const c = blob(1200);
  await second.adopt(c.digest, 1200, await spool(await tempDir(), c.data));
  assert.equal(second.has(a.digest), undefined);
  assert.equal(second.has(b.digest), 2000);
});

test('an unusable cache directory fails init with a stable code and the fix in the message', async () => {
  const dir = await tempDir();
  const file = join(dir, 'a-file');
  await writeFile(file, 'x');
  const cache = new BlobCache({ dir: join(file, 'cache'), maxBytes: 1000 });
  await assert.rejects(cache.init(), (err: unknown) => {
    assert.ok(isTransshipError(err, 'TS_CONFIG_INVALID'), String(err));
    assert.match((err as Error).message, /serve\.blobCache\.dir/);
    return true;
  });
});

test('a cached file whose length is not its blob\'s is removed, not served under a wrong Content-Length', async () => {
  const dir = await tempDir();
  const cache = new BlobCache({ dir: join(dir, 'cache'), maxBytes: 1024 * 1024 });
  await cache.init();
  const b = blob(10_000);
  await cache.adopt(b.digest, b.data.length, await spool(dir, b.data));
  await appendFile(join(dir, 'cache', `sha256-${b.digest.slice(7)}`), 'trailing bytes from somewhere else');
  assert.equal(await cache.open(b.digest), undefined);
  assert.equal(cache.has(b.digest), undefined);
  assert.deepEqual(await readdir(join(dir, 'cache')), []);
  // A spool that is not the committed size is not adopted either.
  await cache.adopt(b.digest, b.data.length, await spool(dir, Buffer.concat([b.data, Buffer.from('x')])));
  assert.equal(cache.has(b.digest), undefined);
});

test('the directory is private: created 0700, a loose one of ours tightened, another user\'s refused, symlinks never served', async () => {
  const dir = await tempDir();
  const fresh = new BlobCache({ dir: join(dir, 'fresh'), maxBytes: 1000 });
  await fresh.init();
  assert.equal((await stat(join(dir, 'fresh'))).mode & 0o777, 0o700);

  const loose = join(dir, 'loose');
  await mkdir(loose, { mode: 0o777 });
  await chmod(loose, 0o777);
  const secret = join(dir, 'secret.txt');
  await writeFile(secret, 'not a blob');
  const planted = blob(10);
  await symlink(secret, join(loose, `sha256-${planted.digest.slice(7)}`));
  const cache = new BlobCache({ dir: loose, maxBytes: 1000 });
  await cache.init();
  assert.equal((await stat(loose)).mode & 0o777, 0o700);
  assert.equal(cache.has(planted.digest), undefined, 'a symlink is not taken over as a cached blob');

  if (process.getuid?.() === 0) {
    const foreign = join(dir, 'foreign');
    await mkdir(foreign, { mode: 0o700 });
    await chown(foreign, 65534, 65534);
    await assert.rejects(new BlobCache({ dir: foreign, maxBytes: 1000 }).init(), (err: unknown) => {
      assert.ok(isTransshipError(err, 'TS_PERMISSION_DENIED'), String(err));
      assert.match((err as Error).message, /belongs to uid 65534/);
      return true;
    });
  }
});

test('empty blobs are not cached (no file, no failed fill)', async () => {
  const dir = await tempDir();
  const cache = new BlobCache({ dir, maxBytes: 1000 });
  await cache.init();
  const empty = blob(0);
  assert.equal(await buffer(cache.tee(empty.digest, 0, Readable.from([]))).then((b) => b.length), 0);
  await cache.adopt(empty.digest, 0, await spool(await tempDir(), empty.data));
  await sleep(50);
  assert.equal(cache.has(empty.digest), undefined);
  assert.deepEqual(await readdir(dir), []);
});
