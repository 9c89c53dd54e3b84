import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COPY_HINT_TTL_MS, PresenceCache, REGISTRY_HINT_TTL_MS, maxPresenceHintMs } from '../../packages/transship/src/index/presence-cache.js';
import { DEFAULT_GRACE_MS } from '../../packages/transship/src/placement/evict.js';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { RegistryContext } from '../../packages/transship/src/registry/context.js';

test('presence cache: hits expire after the TTL (a hint, never proof)', () => {
  let now = 1000;
  const c = new PresenceCache({ ttlMs: 100, now: () => now });
  c.markPresent('s3://b', ['sha256:a', 'sha256:b']);
  assert.deepEqual([...c.known('s3://b', ['sha256:a', 'sha256:c'])], ['sha256:a']);
  assert.equal(c.known('s3://other', ['sha256:a']).size, 0, 'per store');
  now += 101;
  assert.equal(c.known('s3://b', ['sha256:a']).size, 0);
});

test('presence cache: invalidate removes at once; persisted across instances; torn lines skipped', async () => {
  const file = join(await mkdtemp(join(tmpdir(), 'ts-cache-')), 'p.jsonl');
  const a = new PresenceCache({ file });
  a.markPresent('dir:/x', ['sha256:1', 'sha256:2']);
  a.invalidate('dir:/x', 'sha256:2');
  await appendFile(file, '{"s":"dir:/x","d":"sha256:3","e":9');
  const b = new PresenceCache({ file });
  assert.deepEqual([...b.known('dir:/x', ['sha256:1', 'sha256:2', 'sha256:3'])], ['sha256:1']);
  await writeFile(file, 'garbage\n');
  assert.equal(new PresenceCache({ file }).size, 0);
});

// One presence-hint implementation (the registry's blob and link hints used a second TTL map, registry/cache.ts).
test('presence hints: sizes are kept (and persisted), the bound drops the oldest, TTL 0 keeps nothing', async () => {
  let now = 1000;
  const file = join(await mkdtemp(join(tmpdir(), 'ts-cache-')), 'p.jsonl');
  const a = new PresenceCache({ file, now: () => now });
  a.markPresent('s3://b', ['sha256:a'], { size: 42 });
  assert.deepEqual(new PresenceCache({ file, now: () => now }).get('s3://b', 'sha256:a'), { size: 42 });
  const bounded = new PresenceCache({ maxEntries: 2, now: () => now });
  bounded.markPresent('s', ['1', '2', '3']);
  assert.deepEqual([...bounded.known('s', ['1', '2', '3'])], ['2', '3']);
  const off = new PresenceCache({ ttlMs: 0 });
  off.markPresent('s', ['1']);
  assert.equal(off.known('s', ['1']).size, 0);
  now += 7 * 3600_000;
  assert.equal(new PresenceCache({ file, now: () => now }).get('s3://b', 'sha256:a'), undefined, 'expired after the default 6 h');
});

test('maxPresenceHintMs: what a GC grace must exceed follows the config', () => {
  assert.equal(maxPresenceHintMs({}), COPY_HINT_TTL_MS);
  assert.equal(maxPresenceHintMs({ cache: { ttlSeconds: 86400 } }), 86_400_000);
  assert.equal(maxPresenceHintMs({ cache: { enabled: false } }), REGISTRY_HINT_TTL_MS);
  assert.ok(DEFAULT_GRACE_MS > maxPresenceHintMs({}), 'placement eviction grace outlasts the default hints');
});

test('the registry answers "present" from the same hints, and they expire', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ts-hints-'));
  const store = new FsStore(dir);
  const ctx = new RegistryContext({ store, presenceTtlMs: 50 });
  ctx.notePresent('sha256:' + 'a'.repeat(64), 3);
  assert.deepEqual(ctx.known('sha256:' + 'a'.repeat(64)), { digest: 'sha256:' + 'a'.repeat(64), size: 3 });
  ctx.forget('sha256:' + 'a'.repeat(64));
  assert.equal(ctx.known('sha256:' + 'a'.repeat(64)), undefined);
  await ctx.close();
  await store.close();
});
