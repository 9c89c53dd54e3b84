// Auth: Basic and docker-style Bearer tokens with per-repository pull/push rules, and the cross-repository leak
// rules (no reading, mounting or referencing another repository's blobs without pull rights there).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { pino } from 'pino';
import { buildServer, type ServerOptions } from '../../packages/transship/src/server/server.js';
import { Authenticator, hashPassword, parseHtpasswd, verifyPassword } from '../../packages/transship/src/registry/auth.js';
import { isTransshipError } from '@transship/core/errors';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hashPasswordSsha256 } from '../../packages/transship/src/registry/passwords.js';
import { SignJWT, decodeJwt, decodeProtectedHeader } from 'jose';
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
  users: { alice: hashPassword('alice-pw', 4), bob: sha1Hash('bob-pw'), carl: hashPasswordSsha256('carl-pw') },
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

test('password hashes: bcrypt ($2a$/$2b$/$2y$), {SSHA256} and {SHA} verify; other schemes are refused at load time', async () => {
  // A published bcrypt test vector (OpenBSD's): password "U*U", cost 5; htpasswd writes the same hash as $2y$.
  const vector = '$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW';
  for (const prefix of ['$2a$', '$2b$', '$2y$']) {
    assert.ok(await verifyPassword('U*U', prefix + vector.slice(4)), prefix);
    assert.ok(!(await verifyPassword('U*V', prefix + vector.slice(4))), prefix);
  }
  assert.ok(await verifyPassword('pw', sha1Hash('pw')));
  assert.ok(!(await verifyPassword('nope', sha1Hash('pw'))));
  const old = hashPasswordSsha256('pw');
  assert.ok(await verifyPassword('pw', old));
  assert.ok(!(await verifyPassword('pw2', old)));
  const h = hashPassword('pw', 4);
  assert.match(h, /^\$2y\$04\$/, 'transship makes bcrypt hashes, spelled as htpasswd -B does');
  assert.ok(await verifyPassword('pw', h));
  assert.ok(!(await verifyPassword('pw2', h)));
  assert.notEqual(hashPassword('pw', 4), h, 'salted');
  assert.equal(parseHtpasswd(`# comment\nbob:${sha1Hash('x')}\ncarol:${vector}\n`, 'f').size, 2);
  assert.throws(() => parseHtpasswd('carol:$2y$05$abcdefghijklmnopqrstuv', 'f'), (e) => isTransshipError(e, 'TS_CONFIG_INVALID'), 'truncated bcrypt');
  assert.throws(() => parseHtpasswd('dave:$apr1$abc$def', 'f'), (e) => isTransshipError(e, 'TS_CONFIG_INVALID'), 'MD5 htpasswd');
  assert.throws(() => new Authenticator({ users: { carol: 'plain' } }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID'));
});

test('issue 20 item 15: a bcrypt htpasswd file (fixed hash) authenticates Basic and /token; a wrong password is a 401', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ts-htpasswd-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'htpasswd');
  await writeFile(file, 'carol:$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW\n');
  const { inject } = await setup({ auth: { ...AUTH, users: {}, htpasswd: file } });
  assert.equal((await inject({ method: 'GET', url: '/v2/', headers: basic('carol', 'U*U') })).statusCode, 200);
  assert.equal((await inject({ method: 'GET', url: '/v2/', headers: basic('carol', 'U*U') })).statusCode, 200, 'again (remembered check)');
  assert.equal((await pushImage(inject, 'carol/app', 'v1', testImage('carol'), basic('carol', 'U*U'))).statusCode, 201);
  const wrong = await inject({ method: 'GET', url: '/v2/', headers: basic('carol', 'U*V') });
  assert.equal(wrong.statusCode, 401);
  assert.equal(errorCode(wrong), 'UNAUTHORIZED');
  const tok = await token(inject, 'repository:carol/app:pull', basic('carol', 'U*U'));
  assert.equal((await inject({ method: 'GET', url: '/v2/carol/app/manifests/v1', headers: tok })).statusCode, 200);
  assert.equal((await inject({ method: 'GET', url: '/token?scope=repository:carol/app:pull', headers: basic('carol', 'nope') })).statusCode, 401);
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

test('regression (issue 20 item 14): {user} is matched literally — a user named "b*" cannot read or push bob/secret', async () => {
  const users = { bob: hashPassword('bob-pw', 4), 'b*': hashPassword('star-pw', 4), 'bob/secret': hashPassword('slash-pw', 4) };
  const { inject, store, meta } = await setup({ auth: { ...AUTH, users, access: [{ users: ['*'], repositories: ['{user}/*'], actions: ['pull', 'push', 'delete'] }] } });
  const secret = testImage('bob-secret');
  assert.equal((await pushImage(inject, 'bob/secret', 'v1', secret, basic('bob', 'bob-pw'))).statusCode, 201);
  const before = await snapshot(store, meta);
  for (const [user, pw] of [['b*', 'star-pw'], ['bob/secret', 'slash-pw']] as const) {
    const creds = basic(user, pw);
    const read = await inject({ method: 'GET', url: '/v2/bob/secret/manifests/v1', headers: creds });
    assert.equal(read.statusCode, 403, `${user} reads`);
    assert.equal(errorCode(read), 'DENIED');
    const push = await uploadBlob(inject, 'bob/secret', Buffer.from('planted'), creds);
    assert.equal(push.statusCode, 403, `${user} pushes`);
    // Through the token flow too: the token grants nothing on bob/secret.
    const tok = await token(inject, 'repository:bob/secret:pull,push', creds);
    assert.equal((await inject({ method: 'GET', url: '/v2/bob/secret/manifests/v1', headers: tok })).statusCode, 403);
    assert.equal((await uploadBlob(inject, 'bob/secret', Buffer.from('planted'), tok)).statusCode, 403);
  }
  assert.deepEqual(await snapshot(store, meta), before, 'nothing written to bob/secret');
  // The rule still works for its owner.
  assert.equal((await inject({ method: 'GET', url: '/v2/bob/secret/manifests/v1', headers: basic('bob', 'bob-pw') })).statusCode, 200);
});

test('issue 20 item 16: /token issues standard JWTs (HS256; iss, sub, aud, iat, nbf, exp, jti, access); altered or expired ones are refused', async () => {
  const { inject } = await setup();
  const r = await inject({ method: 'GET', url: '/token?service=transship-test&scope=repository:alice/app:pull,push', headers: basic('alice', 'alice-pw') });
  const { token } = r.json<{ token: string }>();
  assert.equal(decodeProtectedHeader(token).alg, 'HS256');
  const claims = decodeJwt(token);
  assert.equal(claims.iss, 'transship');
  assert.equal(claims.sub, 'alice');
  assert.equal(claims.aud, 'transship-test');
  assert.ok(typeof claims.jti === 'string' && typeof claims.nbf === 'number' && typeof claims.iat === 'number');
  assert.equal(claims.exp, (claims.iat ?? 0) + 300);
  assert.deepEqual(claims.access, [{ type: 'repository', name: 'alice/app', actions: ['pull', 'push'] }]);
  assert.equal((await inject({ method: 'GET', url: '/v2/alice/app/tags/list', headers: { authorization: `Bearer ${token}` } })).statusCode, 404, 'accepted (the repository is empty)');
  const secret = new TextEncoder().encode(AUTH.tokenSecret);
  const now = Math.floor(Date.now() / 1000);
  const forged = [
    // Same secret, but expired.
    await new SignJWT({ ...claims, iat: now - 900, nbf: now - 900, exp: now - 600 }).setProtectedHeader({ alg: 'HS256' }).sign(secret),
    // Another secret.
    await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode('another-secret-of-enough-length')),
    // Widened access with the signature of the original.
    `${token.split('.')[0]}.${Buffer.from(JSON.stringify({ ...claims, access: [{ type: 'repository', name: 'bob/app', actions: ['pull'] }] })).toString('base64url')}.${token.split('.')[2]}`,
  ];
  for (const t of forged) {
    const denied = await inject({ method: 'GET', url: '/v2/alice/app/tags/list', headers: { authorization: `Bearer ${t}` } });
    assert.equal(denied.statusCode, 401);
    assert.equal(denied.headers['www-authenticate'], 'Bearer realm="http://localhost:80/token",service="transship-test",error="invalid_token"');
  }
});

test('issue 20 item 3: under token auth a cross-repository mount challenges for pull on the source too, and mounts (201) with a token that has it', async () => {
  const { inject } = await setup();
  const alice = basic('alice', 'alice-pw');
  const secret = testImage('mount-src');
  assert.equal((await pushImage(inject, 'alice/secret', 'v1', secret, alice)).statusCode, 201);
  const url = `/v2/alice/copy/blobs/uploads/?mount=${secret.layerDigest}&from=alice/secret`;
  // A token for the target only (what a challenge-driven client holds): challenged for both scopes.
  const targetOnly = await token(inject, 'repository:alice/copy:pull,push', alice);
  const challenged = await inject({ method: 'POST', url, headers: targetOnly });
  assert.equal(challenged.statusCode, 401);
  assert.equal(challenged.headers['www-authenticate'], 'Bearer realm="http://localhost:80/token",service="transship-test",scope="repository:alice/copy:pull,push repository:alice/secret:pull",error="insufficient_scope"');
  // The token the client gets for that challenge mounts.
  const r = await inject({ method: 'GET', url: `/token?service=transship-test&scope=${encodeURIComponent('repository:alice/copy:pull,push')}&scope=${encodeURIComponent('repository:alice/secret:pull')}`, headers: alice });
  const both = { authorization: `Bearer ${r.json<{ token: string }>().token}` };
  const mounted = await inject({ method: 'POST', url, headers: both });
  assert.equal(mounted.statusCode, 201);
  assert.equal(mounted.headers.location, `/v2/alice/copy/blobs/${secret.layerDigest}`);
  assert.equal((await inject({ method: 'HEAD', url: `/v2/alice/copy/blobs/${secret.layerDigest}`, headers: both })).statusCode, 200);
  // bob asked for alice/secret and was refused: no challenge loop, the mount falls back to an upload session.
  const bobTok = await token(inject, 'repository:bob/app:pull,push repository:alice/secret:pull', basic('bob', 'bob-pw'));
  assert.equal((await inject({ method: 'POST', url: `/v2/bob/app/blobs/uploads/?mount=${secret.layerDigest}&from=alice/secret`, headers: bobTok })).statusCode, 202);
  // bob with a target-only token is not challenged for a repository his rules never give him.
  const bobNarrow = await token(inject, 'repository:bob/app:pull,push', basic('bob', 'bob-pw'));
  assert.equal((await inject({ method: 'POST', url: `/v2/bob/app/blobs/uploads/?mount=${secret.layerDigest}&from=alice/secret`, headers: bobNarrow })).statusCode, 202);
});
