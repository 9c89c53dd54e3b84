import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PresenceCache } from '../../packages/transship/src/index/presence-cache.js';

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
