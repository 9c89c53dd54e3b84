// The docker:// destination (transfer/registry-destination.ts) against transship's own registry in-process (fs
// store), and the credential lookup (transfer/sources/registry-credentials.ts) against real files and a real helper
// program. Regressions guarded: large blobs must go in bounded chunks (not one buffered body); bytes that do not
// match their digest must never become visible; auth files are read the way skopeo/podman/docker read them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { isTransshipError } from '@transship/core/errors';
import { startTestRegistry, tempFsStore } from '../support/registry.js';
import { parseImageReference, type DockerReference } from '../../packages/transship/src/transfer/reference.js';
import { RegistryDestination } from '../../packages/transship/src/transfer/registry-destination.js';
import { authFiles, lookupCredentials } from '../../packages/transship/src/transfer/sources/registry-credentials.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function registry(): Promise<string> {
  const { store, meta, cleanup } = await tempFsStore();
  const reg = await startTestRegistry({ store, meta });
  cleanups.push(cleanup, () => reg.close());
  return reg.host;
}

function ref(s: string): DockerReference {
  const r = parseImageReference(s);
  if (r.transport !== 'docker') throw new Error(`${s} is not a docker:// reference`);
  return r;
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

test('a blob above the monolithic limit goes up in PATCH chunks of the chunk size, and reads back byte-identical', async () => {
  const host = await registry();
  const dest = new RegistryDestination(ref(`docker://${host}/chunks/app:v1`), { monolithicMaxBytes: 1024 * 1024, chunkBytes: 1024 * 1024 });
  const blob = randomBytes(5 * 1024 * 1024 + 17);
  const desc = { mediaType: 'application/octet-stream', digest: sha(blob), size: blob.length };
  let progress = 0;
  // The source hands out small pieces, as a network stream does: chunks are assembled to the chunk size.
  const pieces = Array.from({ length: Math.ceil(blob.length / 65536) }, (_, i) => blob.subarray(i * 65536, (i + 1) * 65536));
  const r = await dest.putBlob(desc, async () => Readable.from(pieces), { onProgress: (n) => (progress += n) });
  assert.equal(r.status, 'written');
  assert.equal(progress, blob.length);
  assert.deepEqual(dest.requestCounts(), { GET: 1, POST: 1, PATCH: 6, PUT: 1 }, 'the version check, then the upload');
  const back = await fetch(`http://${host}/v2/chunks/app/blobs/${desc.digest}`);
  assert.ok(Buffer.from(await back.arrayBuffer()).equals(blob));
});

test('a small blob is one POST and one PUT with the body', async () => {
  const host = await registry();
  const dest = new RegistryDestination(ref(`docker://${host}/small/app:v1`));
  const blob = randomBytes(1000);
  assert.equal((await dest.putBlob({ mediaType: 'x', digest: sha(blob), size: blob.length }, async () => Readable.from([blob]))).status, 'written');
  assert.deepEqual(dest.requestCounts(), { GET: 1, POST: 1, PUT: 1 });
});

for (const [name, chunk] of [['monolithic', undefined], ['chunked', 4096]] as const) {
  test(`${name}: bytes that do not match the digest fail with TS_DIGEST_MISMATCH and the blob never becomes visible`, async () => {
    const host = await registry();
    const dest = new RegistryDestination(ref(`docker://${host}/bad/app:v1`), chunk ? { monolithicMaxBytes: chunk, chunkBytes: chunk } : {});
    const claimed = randomBytes(20_000);
    const served = Buffer.from(claimed);
    served[100] = (served[100] ?? 0) ^ 1;
    const desc = { mediaType: 'x', digest: sha(claimed), size: claimed.length };
    await assert.rejects(dest.putBlob(desc, async () => Readable.from([served])), (err) => isTransshipError(err, 'TS_DIGEST_MISMATCH'));
    assert.equal((await fetch(`http://${host}/v2/bad/app/blobs/${desc.digest}`, { method: 'HEAD' })).status, 404);
    assert.equal(dest.requestCounts().DELETE, 1, 'the upload session was cancelled');
  });
}

test('a destination by digest is refused: the digest is whatever the source has', () => {
  assert.throws(() => new RegistryDestination(ref(`docker://127.0.0.1:1/app@sha256:${'a'.repeat(64)}`)), (err) => isTransshipError(err, 'TS_INVALID_REFERENCE'));
});

test('auth files: REGISTRY_AUTH_FILE wins over XDG_RUNTIME_DIR; docker config after the containers files', () => {
  assert.deepEqual(authFiles({ HOME: '/h', REGISTRY_AUTH_FILE: '/a.json', XDG_RUNTIME_DIR: '/run/u' }), ['/a.json', '/h/.config/containers/auth.json', '/h/.docker/config.json']);
  assert.deepEqual(authFiles({ HOME: '/h', XDG_RUNTIME_DIR: '/run/u', DOCKER_CONFIG: '/d' }), ['/run/u/containers/auth.json', '/h/.config/containers/auth.json', '/d/config.json']);
});

test('credential lookup: explicit, then the most specific auths entry, docker.io legacy key, helpers (hit and miss)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ts-creds-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const file = join(dir, 'auth.json');
  await writeFile(file, JSON.stringify({ auths: { 'reg.example:5000': { auth: b64('host:pw') }, 'reg.example:5000/team': { auth: b64('team:pw') }, 'https://index.docker.io/v1/': { auth: b64('hub:pw:with:colons') } } }));
  const env = { HOME: dir, REGISTRY_AUTH_FILE: file, DOCKER_CONFIG: join(dir, 'none') };
  assert.deepEqual(await lookupCredentials('reg.example:5000', 'team/app', { env }), { username: 'team', password: 'pw' });
  assert.deepEqual(await lookupCredentials('reg.example:5000', 'other/app', { env }), { username: 'host', password: 'pw' });
  assert.deepEqual(await lookupCredentials('docker.io', 'library/busybox', { env }), { username: 'hub', password: 'pw:with:colons' });
  assert.equal(await lookupCredentials('elsewhere.example', 'app', { env }), undefined);
  assert.deepEqual(await lookupCredentials('reg.example:5000', 'team/app', { env, explicit: { username: 'x', password: 'y' } }), { username: 'x', password: 'y' });

  // A credsStore helper (a real program on PATH) that knows one server and says "not found" for the others.
  const bin = join(dir, 'bin');
  await mkdir(bin);
  await writeFile(join(bin, 'docker-credential-unit'), '#!/bin/sh\nread s\n[ "$s" = "helped.example" ] || { echo "credentials not found in native keychain"; exit 1; }\necho \'{"Username":"helper","Secret":"s3cret"}\'\n');
  await chmod(join(bin, 'docker-credential-unit'), 0o755);
  const docker = join(dir, 'docker');
  await mkdir(docker);
  await writeFile(join(docker, 'config.json'), JSON.stringify({ credsStore: 'unit' }));
  const henv = { HOME: dir, DOCKER_CONFIG: docker, PATH: `${bin}:${process.env.PATH ?? ''}` };
  assert.deepEqual(await lookupCredentials('helped.example', 'app', { env: henv }), { username: 'helper', password: 's3cret' });
  assert.equal(await lookupCredentials('unknown.example', 'app', { env: henv }), undefined);
});
