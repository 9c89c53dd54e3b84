// Spool directories left by crashed `serve` processes are removed when the next one starts spooling — only when
// their process is gone *and* nothing was written in them for longer than the idle limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UploadSessions, removeLeftoverSpools } from '../../packages/transship/src/registry/uploads.js';

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

test('leftover spools: removed only when their process is gone and they were idle past the limit', async () => {
  const parent = await mkdtemp(join(tmpdir(), 'transship-spools-'));
  try {
    const dead = deadPid();
    const old = new Date(Date.now() - 3600_000);
    const make = async (name: string, stale: boolean) => {
      const dir = join(parent, name);
      await mkdir(dir);
      await writeFile(join(dir, 'x.spool'), 'bytes');
      if (stale) {
        await utimes(join(dir, 'x.spool'), old, old);
        await utimes(dir, old, old);
      }
    };
    await make(`transship-uploads-${dead}-crashed`, true); // gone and idle: removed
    await make(`transship-uploads-${dead}-writing`, false); // pid unknown here but written to just now: kept
    await make(`transship-uploads-${process.pid}-mine`, true); // this process: kept
    await make('transship-uploads-1-init', true); // pid 1 exists: kept
    await make('something-else', true); // not ours: kept
    assert.equal(await removeLeftoverSpools(parent, 600_000), 1);
    assert.deepEqual((await readdir(parent)).sort(), [`transship-uploads-${dead}-writing`, `transship-uploads-${process.pid}-mine`, 'something-else', 'transship-uploads-1-init'].sort());

    // A new session store does this before it creates its own spool directory.
    await utimes(join(parent, `transship-uploads-${dead}-writing`, 'x.spool'), old, old);
    await utimes(join(parent, `transship-uploads-${dead}-writing`), old, old);
    const sessions = new UploadSessions({ dir: parent, idleMs: 600_000, maxBytes: 1024 });
    const s = await sessions.create('app');
    assert.ok(existsSync(s.path));
    assert.equal(existsSync(join(parent, `transship-uploads-${dead}-writing`)), false);
    await sessions.close();
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});
