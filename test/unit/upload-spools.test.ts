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

test('issue 20 item 8: the sweep is periodic — spools of an instance killed while this one runs, and files no live session owns, go after the idle limit', async () => {
  const parent = await mkdtemp(join(tmpdir(), 'transship-spools-'));
  const sessions = new UploadSessions({ dir: parent, idleMs: 1000, maxBytes: 1 << 20 });
  try {
    const live = await sessions.create('app'); // the start-up sweep has run: everything below comes later
    const mine = (await readdir(parent)).find((n) => n.startsWith(`transship-uploads-${process.pid}-`))!;
    const old = new Date(Date.now() - 3600_000);
    // An instance killed after this one started: its spool directory, untouched since.
    const killed = join(parent, `transship-uploads-${deadPid()}-killed`);
    await mkdir(killed);
    await writeFile(join(killed, 'y.spool'), Buffer.alloc(64 * 1024));
    await utimes(join(killed, 'y.spool'), old, old);
    await utimes(killed, old, old);
    // A file in our own directory that no session owns (a removal that failed).
    const orphan = join(parent, mine, 'orphan.spool');
    await writeFile(orphan, 'bytes');
    await utimes(orphan, old, old);
    const deadline = Date.now() + 10_000;
    while (existsSync(killed) || existsSync(orphan)) {
      assert.ok(Date.now() < deadline, 'swept within 10 s (the sweep runs every second with a 1 s idle limit)');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(existsSync(join(parent, mine)), 'our own directory stays');
    void live;
  } finally {
    await sessions.close();
    await rm(parent, { recursive: true, force: true });
  }
});
