// The state token of shared upload sessions (registry/upload-state.ts): what it carries survives the round trip, and
// every way a token can be wrong — altered, signed with another secret, another session's, expired, too old — is
// BLOB_UPLOAD_UNKNOWN (clients restart that blob). The generated secret is one per store, whoever writes it first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_SESSION_MS, UploadStateCodec, uploadStateSecret, type UploadState } from '../../packages/transship/src/registry/upload-state.js';
import { RegistryError } from '../../packages/transship/src/registry/errors.js';
import { FsStore } from '../../packages/transship/src/store/fs-store.js';
import { UploadSessions } from '../../packages/transship/src/registry/uploads.js';
import type { StagedTails } from '../../packages/transship/src/store/contract.js';

const NOW = 1_800_000_000_000;
const codec = new UploadStateCodec(Buffer.from('a secret of thirty-two characters'));
const state: UploadState = {
  repo: 'team/app',
  id: '0b0e8a3c-8f0e-4c59-a1e8-2a4e3c1d9f10',
  size: 27 * 1024 * 1024 + 5,
  version: 'v1AbC',
  started: NOW - 1000,
  expires: NOW + 900_000,
  staged: { uploadId: '2~aBcDeF-upload', parts: 5, bytes: 25 * 1024 * 1024, etags: 'q1w2e3r4t5y6u7i8o9p0aZ' },
  stored: undefined,
  hashed: `sha256:${'b'.repeat(64)}`,
};

function unknown(fn: () => unknown): void {
  assert.throws(fn, (err: unknown) => err instanceof RegistryError && err.code === 'BLOB_UPLOAD_UNKNOWN' && err.status === 404);
}

test('a state token round-trips, is URL-safe and short', () => {
  const token = codec.encode(state);
  assert.match(token, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
  assert.ok(token.length < 600, `${token.length} characters: far below the 8 KiB request-line limits of proxies`);
  assert.deepEqual(codec.decode(token, state.repo, state.id, NOW), state);
  const stored: UploadState = { ...state, staged: undefined, stored: `sha256:${'a'.repeat(64)}`, hashed: undefined };
  assert.deepEqual(codec.decode(codec.encode(stored), state.repo, state.id, NOW), stored);
  const bare: UploadState = { ...state, staged: { uploadId: 'u', parts: 0, bytes: 0, etags: undefined }, hashed: undefined };
  assert.deepEqual(codec.decode(codec.encode(bare), state.repo, state.id, NOW), bare);
});

test('altered, foreign-secret, other-session, expired and too-old tokens are BLOB_UPLOAD_UNKNOWN', () => {
  const token = codec.encode(state);
  const [body = '', mac = ''] = token.split('.');
  const tampered = JSON.parse(Buffer.from(body, 'base64url').toString()) as Record<string, unknown>;
  tampered.n = 1; // claim fewer bytes
  unknown(() => codec.decode(`${Buffer.from(JSON.stringify(tampered)).toString('base64url')}.${mac}`, state.repo, state.id, NOW));
  unknown(() => codec.decode(`${body}.${mac.slice(1)}x`, state.repo, state.id, NOW));
  unknown(() => codec.decode(body, state.repo, state.id, NOW));
  unknown(() => codec.decode(`${token}.extra`, state.repo, state.id, NOW));
  unknown(() => new UploadStateCodec(Buffer.from('another deployment secret......')).decode(token, state.repo, state.id, NOW));
  unknown(() => codec.decode(token, 'team/other', state.id, NOW));
  unknown(() => codec.decode(token, state.repo, '1b0e8a3c-8f0e-4c59-a1e8-2a4e3c1d9f10', NOW));
  unknown(() => codec.decode(token, state.repo, state.id, state.expires + 1));
  unknown(() => codec.decode(codec.encode({ ...state, started: NOW - MAX_SESSION_MS - 1 }), state.repo, state.id, NOW));
});

test('the generated secret is written once per store and read by every instance; a configured one wins', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ts-upload-secret-'));
  try {
    const store = new FsStore(dir);
    const [one, two] = await Promise.all([uploadStateSecret(store.objects, undefined), uploadStateSecret(store.objects, undefined)]);
    assert.equal(one.length, 32);
    assert.ok(one.equals(two), 'concurrent first starts agree');
    assert.ok((await uploadStateSecret(new FsStore(dir).objects, undefined)).equals(one), 'a later instance reads the same');
    assert.equal((await uploadStateSecret(store.objects, 'configured-secret-value')).toString(), 'configured-secret-value');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a secret that cannot be loaded: upload sessions answer 503 UNAVAILABLE naming the fix, and the next request tries again', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ts-upload-nosecret-'));
  let attempts = 0;
  const sessions = new UploadSessions({
    dir,
    idleMs: 60_000,
    maxBytes: 1 << 20,
    shared: {
      store: { stageBlob: () => Promise.reject(new Error('not used')) },
      tails: {} as StagedTails,
      storeBlob: () => Promise.reject(new Error('not used')),
      readBlob: () => Promise.reject(new Error('not used')),
      codec: () => {
        attempts++;
        return Promise.reject(new Error('AccessDenied: _keys/upload-state'));
      },
    },
  });
  try {
    for (let i = 1; i <= 2; i++) {
      await assert.rejects(sessions.create('team/app'), (err: unknown) => err instanceof RegistryError && err.code === 'UNAVAILABLE' && err.status === 503 && /serve\.sharedUploads\.secret/.test(err.message) && /AccessDenied/.test(err.message));
      assert.equal(attempts, i);
      assert.equal(sessions.count, 0, 'no session left behind');
    }
  } finally {
    await sessions.close();
    await rm(dir, { recursive: true, force: true });
  }
});
