// The fs store (embedded default) against the shared conformance suite, plus fs-specific failure modes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, chmod, mkdir, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { spawnSync } from 'node:child_process';
import { FsStore, TEMP_ORPHAN_AGE_MS } from '../../src/store/fs-store.js';
import { digestOf } from '../../src/core/digest.js';
import { isTransshipError } from '../../src/core/errors.js';
import { blobStoreConformance } from '../support/store-conformance.js';
import { verifyStore } from '../../src/cli/verify.js';

const dirs: string[] = [];
test.after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

blobStoreConformance('fs store', {
  make: async () => {
    const d = await mkdtemp(join(tmpdir(), 'ts-fs-'));
    dirs.push(d);
    return new FsStore(d);
  },
});

test('fs store: a failed write leaves no temp file behind', async () => {
  const d = await mkdtemp(join(tmpdir(), 'ts-fs-'));
  dirs.push(d);
  const store = new FsStore(d);
  await assert.rejects(store.putBlob(digestOf('x'), () => Readable.from([Buffer.from('y')])), (e) => isTransshipError(e, 'TS_DIGEST_MISMATCH'));
  assert.deepEqual(await readdir(join(d, '.tmp')), []);
});

test('fs store: permission denied is TS_PERMISSION_DENIED with the path in the message', async () => {
  const d = await mkdtemp(join(tmpdir(), 'ts-fs-'));
  dirs.push(d);
  await chmod(d, 0o555);
  const script = `
    import { FsStore } from ${JSON.stringify(new URL('../../src/store/fs-store.ts', import.meta.url).pathname)};
    import { Readable } from 'node:stream';
import { spawnSync } from 'node:child_process';
    import { createHash } from 'node:crypto';
    const d = 'sha256:' + createHash('sha256').update('x').digest('hex');
    try { await new FsStore(${JSON.stringify(d)}).putBlob(d, () => Readable.from([Buffer.from('x')])); console.log('WROTE'); }
    catch (e) { console.log(e.code, e.message); }`;
  // root ignores file modes, so the check runs as an unprivileged user when we are root.
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    cwd: new URL('../..', import.meta.url).pathname,
    ...(process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {}),
  });
  assert.match(r.stdout, /^TS_PERMISSION_DENIED permission denied: .*ts-fs-/m, r.stderr);
});

test('fs store: a cancel between opening the temp file and the pipeline leaves no temp file (regression: flaky under concurrency)', async () => {
  const d = await mkdtemp(join(tmpdir(), 'ts-fs-'));
  dirs.push(d);
  const store = new FsStore(d);
  const data = Buffer.from('cancelled before the first byte');
  const ac = new AbortController();
  const source = Readable.from([data]);
  const open = () => {
    ac.abort(); // the temp file is open; the source is being opened; no byte has moved
    return source;
  };
  await assert.rejects(store.putBlob(digestOf(data), open, { signal: ac.signal }), (e) => isTransshipError(e, 'TS_CANCELLED'));
  assert.deepEqual(await readdir(join(d, '.tmp')), []);
  assert.equal(source.destroyed, true, 'the opened source is closed');
  assert.equal(await store.statBlob(digestOf(data)), undefined);
  // A source that fails to open leaves nothing either.
  await assert.rejects(store.putBlob(digestOf(data), () => {
    throw new Error('cannot open');
  }));
  assert.deepEqual(await readdir(join(d, '.tmp')), []);
});

test('fs store: temp files older than the limit are swept (killed writers), young ones (live writes) are kept, verify can list them', async () => {
  const d = await mkdtemp(join(tmpdir(), 'ts-fs-'));
  dirs.push(d);
  await mkdir(join(d, '.tmp'), { recursive: true });
  const old = join(d, '.tmp', 'deadbeefdeadbeef.part');
  await writeFile(old, Buffer.alloc(100));
  const past = new Date(Date.now() - 2 * TEMP_ORPHAN_AGE_MS);
  await utimes(old, past, past);
  await writeFile(join(d, '.tmp', 'live0000live0000.part'), 'x');
  const store = new FsStore(d);
  const listed = [];
  for await (const t of store.listTemporary()) listed.push(t.key);
  assert.deepEqual(listed, ['.tmp/deadbeefdeadbeef.part', '.tmp/live0000live0000.part']);
  // Swept on open, before the first write.
  await store.putBlob(digestOf('x'), () => Readable.from([Buffer.from('x')]));
  assert.deepEqual(await readdir(join(d, '.tmp')), ['live0000live0000.part']);
  // And on demand (what GC calls), with its own limit.
  assert.deepEqual(await store.sweepStaged(0), { multipart: 0, objects: 1 });
  assert.deepEqual(await readdir(join(d, '.tmp')), []);
});

test('verify reports the temp files a killed copy left in a dir: store (issue 20 item 8); the next write sweeps them', async () => {
  const d = await mkdtemp(join(tmpdir(), 'ts-fs-'));
  dirs.push(d);
  await mkdir(join(d, '.tmp'), { recursive: true });
  const part = join(d, '.tmp', '0123456789abcdef.part');
  await writeFile(part, Buffer.alloc(4096));
  const past = new Date(Date.now() - TEMP_ORPHAN_AGE_MS - 60_000);
  await utimes(part, past, past);
  await writeFile(join(d, '.tmp', 'fedcba9876543210.part'), 'a copy running now');
  const store = new FsStore(d);
  const r = await verifyStore(store);
  assert.deepEqual(r.problems, [], 'no data is wrong');
  assert.deepEqual(r.leftovers.map((l) => [l.key, l.size]), [['.tmp/0123456789abcdef.part', 4096]], 'only the old one; a young one may be live');
  await store.putBlob(digestOf('y'), () => Readable.from([Buffer.from('y')]));
  assert.deepEqual((await verifyStore(new FsStore(d))).leftovers, []);
});

test('fs store: cancelling a write rejects with TS_CANCELLED and leaves nothing', async () => {
  const d = await mkdtemp(join(tmpdir(), 'ts-fs-'));
  dirs.push(d);
  const store = new FsStore(d);
  const ac = new AbortController();
  const slow = () =>
    Readable.from(
      (async function* () {
        yield Buffer.alloc(1000);
        ac.abort(new Error('user pressed ^C'));
        await new Promise((r) => setTimeout(r, 50));
        yield Buffer.alloc(1000);
      })(),
    );
  await assert.rejects(store.putBlob(digestOf(Buffer.alloc(2000)), slow, { signal: ac.signal }), (e) => isTransshipError(e, 'TS_CANCELLED'));
  assert.equal(await store.statBlob(digestOf(Buffer.alloc(2000))), undefined);
});
