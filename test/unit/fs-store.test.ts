// The fs store (embedded default) against the shared conformance suite, plus fs-specific failure modes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, chmod, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { spawnSync } from 'node:child_process';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { digestOf } from '@transship/core/digest';
import { isTransshipError } from '@transship/core/errors';
import { blobStoreConformance } from '../support/store-conformance.js';

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
    import { FsStore } from ${JSON.stringify(new URL('../../packages/transship/src/store/fs-store.ts', import.meta.url).pathname)};
    import { Readable } from 'node:stream';
    import { createHash } from 'node:crypto';
    const d = 'sha256:' + createHash('sha256').update('x').digest('hex');
    try { await new FsStore(${JSON.stringify(d)}).putBlob(d, () => Readable.from([Buffer.from('x')])); console.log('WROTE'); }
    catch (e) { console.log(e.code, e.message); }`;
  // root ignores file modes, so the check runs as an unprivileged user when we are root.
  const r = spawnSync(process.execPath, ['--conditions=development', '--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    cwd: new URL('../..', import.meta.url).pathname,
    ...(process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {}),
  });
  assert.match(r.stdout, /^TS_PERMISSION_DENIED permission denied: .*ts-fs-/m, r.stderr);
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
