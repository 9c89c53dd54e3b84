// Auth: Basic and docker-style Bearer tokens with per-repository pull/push rules, and the cross-repository leak
// rules (no reading, mounting or referencing another repository's blobs without pull rights there).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { pino } from 'pino';
import { buildServer, type ServerOptions } from '../../src/server/server.js';
import { Authenticator, hashPassword, parseHtpasswd, verifyPassword } from '../../src/registry/auth.js';
import { isTransshipError } from '../../src/core/errors.js';
import { errorCode, injector, pushImage, snapshot, tempFsStore, testImage, uploadBlob, type Inject } from '../support/registry.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const basic = (user: string, pw: string): Record<string, string> => ({ authorization: `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}` });
const sha1Hash = (pw: string): string => `{SHA}${createHash('sha1').update(pw).digest('base64')}`;

const AUTH = {
  service: 'transship-test',
  tokenSecret: 'a-test-secret-of-enough-length',
  users: { alice: hashPassword('alice-pw'), bob: sha1Hash('bob-pw') },
  access: [
    { users: ['*'], repositories: ['{user}/*'], actions: ['pull', 'push', 'delete'] as Array<'pull' | 'push' | 'delete'> },
    { users: ['anonymous', '*'], repositories: ['public/*'], actions: ['pull'] as Array<'pull' | 'push' | 'delete'> },
    { users: ['alice'], repositories: ['public/*'], actions: ['push'] as Array<'pull' | 'push' | 'delete'> },
  ],
};

async function setup(opts: Partial<ServerOptions> = {}) {
  const fs = await tempFsStore();
  cleanups.push(fs.cleanup);
  const app = await buildServer({ store: fs.store, meta: fs.meta, logger: pino({ level: 'silent' }), auth: AUTH, ...opts });
  cleanups.push(() => app.close());
  const inject: Inject = injector(app);
  return { inject, store: fs.store, meta: fs.meta };
}

async function token(inject: Inject, scope: string, creds?: Record<string, string>): Promise<Record<string, string>> {
  const r = await inject({ method: 'GET', url: `/token?service=transship-test&scope=${encodeURIComponent(scope)}`, headers: creds ?? {} });
  assert.equal(r.statusCode, 200, r.body);
  return { authorization: `Bearer ${r.json<{ token: string }>().token}` };
}

test('password hashes: {SHA} and {SSHA256} verify, bcrypt is refused at load time', () => {
  assert.ok(verifyPassword('pw', sha1Hash('pw')));
  assert.ok(!verifyPassword('nope', sha1Hash('pw')));
  const h = hashPassword('pw');
  assert.match(h, /^\{SSHA256\}/);
  assert.ok(verifyPassword('pw', h));
  assert.ok(!verifyPassword('pw2', h));
  assert.notEqual(hashPassword('pw'), h, 'salted');
  assert.equal(parseHtpasswd(`# comment\nbob:${sha1Hash('x')}\n`, 'f').size, 1);
  assert.throws(() => parseHtpasswd('carol:$2y$05$abcdefghijklmnopqrstuv', 'f'), (e) => isTransshipError(e, 'TS_CONFIG_INVALID'));
  assert.throws(() => new Authenticator({ users: { carol: 'plain' } }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID'));
});

test('missing auth → 401 UNAUTHORIZED with a Bearer challenge naming realm, service and scope; store unchanged', async () => {
  const { inject, store, meta } = await setup();
  const before = await snapshot(store, meta);
  const base = await inject({ method: 'GET', url: '/v2/' });
  assert.equal(base.statusCode, 401);
  assert.equal(errorCode(base), 'UNAUTHORIZED');
  assert.equal(base.headers['www-authenticate'], 'Bearer realm="http://localhost:80/token",service="transship-test"');
  const push = await uploadBlob(inject, 'alice/app', Buffer.from('x'));
  assert.equal(push.statusCode, 401);
  assert.equal(errorCode(push), 'UNAUTHORIZED');
  assert.match(String(push.headers['www-authenticate']), /^Bearer realm="[^"]+\/token",service="transship-test",scope="repository:alice\/app:pull,push"$/);
  const manifest = await inject({ method: 'PUT', url: '/v2/alice/app/manifests/v1', headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, payload: testImage('x').manifest });
  assert.equal(manifest.statusCode, 401);
  const wrong = await inject({ method: 'GET', url: '/v2/', headers: basic('alice', 'wrong') });
  assert.equal(wrong.statusCode, 401);
  assert.equal(errorCode(await inject({ method: 'GET', url: '/v2/', headers: { authorization: 'Bearer forged.token' } })), 'UNAUTHORIZED');
  assert.deepEqual(await snapshot(store, meta), before);
});

test('Basic credentials and /token bearer tokens: push and pull within granted scopes', async () => {
  const { inject } = await setup();
  assert.equal((await inject({ method: 'GET', url: '/v2/', headers: basic('alice', 'alice-pw') })).statusCode, 200);
  const img = testImage('alice-img');
  assert.equal((await pushImage(inject, 'alice/app', 'v1', img, basic('alice', 'alice-pw'))).statusCode, 201);
  const tok = await token(inject, 'repository:alice/app:pull,push', basic('alice', 'alice-pw'));
  assert.equal((await inject({ method: 'GET', url: '/v2/alice/app/manifests/v1', headers: tok })).statusCode, 200);
  assert.equal((await inject({ method: 'GET', url: `/v2/alice/app/blobs/${img.layerDigest}`, headers: tok })).body, img.layer.toString());
  // A token only carries what was granted: bob asking for alice's repository gets an empty grant.
  const bobTok = await token(inject, 'repository:alice/app:pull', basic('bob', 'bob-pw'));
  const denied = await inject({ method: 'GET', url: '/v2/alice/app/manifests/v1', headers: bobTok });
  assert.equal(denied.statusCode, 403);
  assert.equal(errorCode(denied), 'DENIED');
  // A token that lacks a scope its user would get → 401 insufficient_scope (the client fetches a new token).
  const narrow = await token(inject, 'repository:alice/app:pull', basic('alice', 'alice-pw'));
  const needPush = await uploadBlob(inject, 'alice/app', Buffer.from('more'), narrow);
  assert.equal(needPush.statusCode, 401);
  assert.match(String(needPush.headers['www-authenticate']), /error="insufficient_scope"/);
  // Wrong password on /token.
  assert.equal((await inject({ method: 'GET', url: '/token?scope=repository:alice/app:pull', headers: basic('alice', 'nope') })).statusCode, 401);
  // Basic user without rights → 403 DENIED.
  const bobPush = await uploadBlob(inject, 'alice/app', Buffer.from('bob was here'), basic('bob', 'bob-pw'));
  assert.equal(bobPush.statusCode, 403);
  assert.equal(errorCode(bobPush), 'DENIED');
});

test('anonymous pull where a rule allows it; catalog lists only what the caller may pull', async () => {
  const { inject } = await setup();
  const img = testImage('public');
  assert.equal((await pushImage(inject, 'public/base', 'v1', img, basic('alice', 'alice-pw'))).statusCode, 201);
  assert.equal((await pushImage(inject, 'alice/private', 'v1', img, basic('alice', 'alice-pw'))).statusCode, 201);
  const anon = await token(inject, 'repository:public/base:pull');
  assert.equal((await inject({ method: 'GET', url: '/v2/public/base/manifests/v1', headers: anon })).statusCode, 200);
  assert.equal((await inject({ method: 'GET', url: '/v2/public/base/manifests/v1' })).statusCode, 200, 'anonymous without a token, where allowed');
  assert.equal((await inject({ method: 'GET', url: '/v2/alice/private/manifests/v1' })).statusCode, 401);
  const bobCatalog = await inject({ method: 'GET', url: '/v2/_catalog', headers: basic('bob', 'bob-pw') });
  assert.deepEqual(bobCatalog.json(), { repositories: ['public/base'] });
  const aliceCatalog = await inject({ method: 'GET', url: '/v2/_catalog', headers: basic('alice', 'alice-pw') });
  assert.deepEqual(aliceCatalog.json(), { repositories: ['alice/private', 'public/base'] });
});

test('no cross-repository leak: bob cannot read, HEAD, mount or reference a blob that only alice uploaded', async () => {
  const { inject, store, meta } = await setup();
  const alice = basic('alice', 'alice-pw');
  const bob = basic('bob', 'bob-pw');
  const secret = testImage('alice-secret');
  assert.equal((await pushImage(inject, 'alice/secret', 'v1', secret, alice)).statusCode, 201);
  const before = await snapshot(store, meta);
  // Reading through his own repository by digest: unknown there.
  for (const method of ['GET', 'HEAD']) {
    const r = await inject({ method, url: `/v2/bob/app/blobs/${secret.layerDigest}`, headers: bob });
    assert.equal(r.statusCode, 404, method);
    if (method === 'GET') assert.equal(errorCode(r), 'BLOB_UNKNOWN');
  }
  // Mounting from alice's repository falls back to an upload session (bob may not pull there).
  const mount = await inject({ method: 'POST', url: `/v2/bob/app/blobs/uploads/?mount=${secret.layerDigest}&from=alice/secret`, headers: bob });
  assert.equal(mount.statusCode, 202);
  // A manifest in his repository referencing alice's blobs is refused.
  const stolen = await inject({ method: 'PUT', url: '/v2/bob/app/manifests/v1', headers: { ...bob, 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, payload: secret.manifest });
  assert.equal(stolen.statusCode, 400);
  assert.equal(errorCode(stolen), 'MANIFEST_BLOB_UNKNOWN');
  assert.equal((await inject({ method: 'GET', url: `/v2/alice/secret/blobs/${secret.layerDigest}`, headers: bob })).statusCode, 403);
  assert.deepEqual((await snapshot(store, meta)).filter((l) => !l.includes('upload')), before, 'nothing changed');
  // Uploading the same bytes himself makes them his: dedup still stores them once.
  const puts = store.requestCounts().put ?? 0;
  assert.equal((await pushImage(inject, 'bob/app', 'v1', secret, bob)).statusCode, 201);
  assert.equal(await store.statBlob(secret.layerDigest).then((i) => i?.size), secret.layer.length);
  assert.ok((store.requestCounts().put ?? 0) - puts <= 5, 'only links, manifest link and tag written');
  // Alice may mount her own blob into another of her repositories.
  const own = await inject({ method: 'POST', url: `/v2/alice/copy/blobs/uploads/?mount=${secret.layerDigest}&from=alice/secret`, headers: alice });
  assert.equal(own.statusCode, 201);
});

test('blobs referenced by manifests pushed before auth was turned on count as linked to their repository', async () => {
  const fs = await tempFsStore();
  cleanups.push(fs.cleanup);
  const open = await buildServer({ store: fs.store, meta: fs.meta, logger: pino({ level: 'silent' }) });
  const img = testImage('legacy');
  assert.equal((await pushImage(injector(open), 'alice/legacy', 'v1', img)).statusCode, 201);
  await open.close();
  assert.deepEqual((await fs.meta.list('repos/')).filter((k) => k.includes('/_layers/')), [], 'no blob links written with auth off');
  const closed = await buildServer({ store: fs.store, meta: fs.meta, logger: pino({ level: 'silent' }), auth: AUTH });
  cleanups.push(() => closed.close());
  const inject = injector(closed);
  assert.equal((await inject({ method: 'GET', url: `/v2/alice/legacy/blobs/${img.layerDigest}`, headers: basic('alice', 'alice-pw') })).statusCode, 200);
  assert.equal((await inject({ method: 'PUT', url: '/v2/alice/legacy/manifests/v2', headers: { ...basic('alice', 'alice-pw'), 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, payload: img.manifest })).statusCode, 201);
  assert.ok((await fs.meta.list('repos/alice/legacy/_layers/')).includes(`repos/alice/legacy/_layers/sha256/${img.layerDigest.slice(7)}`), 'link healed');
  void sha;
});

test('Basic-only mode challenges with Basic', async () => {
  const { inject } = await setup({ auth: { ...AUTH, basicOnly: true } });
  const r = await inject({ method: 'GET', url: '/v2/' });
  assert.equal(r.headers['www-authenticate'], 'Basic realm="transship-test"');
});
