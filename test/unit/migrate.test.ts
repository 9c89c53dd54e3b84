// `transship migrate` on the fs store: the old layout (repos/<name>/tags|manifests|blobs|referrers, repos/_placement,
// which misread a repository named team/tags/app) is rewritten to the reserved one, idempotently.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { FsStore } from '../../src/store/fs-store.js';
import { migrateLayout } from '../../src/store/migrate.js';
import { migrateStory, migratedKeys, seedOldLayout } from '../support/migrate-scenario.js';
import { storeContents } from '../support/store-conformance.js';

const dirs: string[] = [];
test.after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function fresh(): Promise<{ dir: string; store: FsStore }> {
  const dir = await mkdtemp(join(tmpdir(), 'ts-migrate-'));
  dirs.push(dir);
  return { dir, store: new FsStore(dir) };
}

test('migrate (fs): dry run changes nothing, migrate moves every old key once, newer keys win, re-run is a no-op', async () => {
  const { dir, store } = await fresh();
  await migrateStory(store, 3);
  // The old layout's directories are gone with their keys.
  assert.deepEqual((await readdir(join(dir, 'repos', 'library', 'app'))).sort(), ['_layers', '_manifests', '_referrers', '_tags']);
  assert.deepEqual(await readdir(join(dir, 'repos')), ['library', 'team']);
});

test('migrate (fs): killed mid-way (aborted after the first batch), a re-run finishes with the same result', async () => {
  const { store } = await fresh();
  await seedOldLayout(store);
  const ac = new AbortController();
  let moves = 0;
  await assert.rejects(migrateLayout(store, { batchSize: 2, signal: ac.signal, onMove: () => ++moves === 3 && ac.abort() }));
  assert.ok(moves >= 3);
  const r = await migrateLayout(new FsStore(store.root), { batchSize: 2 });
  assert.equal(r.marker, true);
  assert.deepEqual((await storeContents(store)).keys, migratedKeys(store));
});

test('transship migrate DIR --dry-run --json prints the plan; without --dry-run it migrates', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const run = (args: string[]) => spawnSync(process.execPath, [join(root, 'bin', 'transship.js'), ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, TRANSSHIP_CONFIG: '' }, timeout: 60_000 });
  return (async () => {
    const { dir, store } = await fresh();
    await seedOldLayout(store);
    const dry = run(['migrate', `dir:${dir}`, '--dry-run', '--json']);
    assert.equal(dry.status, 0, dry.stderr);
    const plan = JSON.parse(dry.stdout);
    assert.equal(plan.dryRun, true);
    assert.equal(plan.moves.length, 10);
    const done = run(['migrate', `dir:${dir}`, '--json']);
    assert.equal(done.status, 0, done.stderr);
    assert.equal(JSON.parse(done.stdout).marker, true);
    assert.deepEqual((await storeContents(store)).keys, migratedKeys(store));
  })();
});
