// Auth as existing deployments have it, with the real pieces: `transship serve` (the CLI process) reading an
// htpasswd file written by Apache's `htpasswd -B`, an external token issuer in its own process with its own key
// (test/support/token-issuer.ts), and real skopeo pushing and pulling through them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeOciLayout } from '../support/images.js';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { SignJWT } from 'jose';
import { htpasswd, skopeo, spawnServe, type RunResult, type ServeProcess } from '../support/registry.js';
import { makeIssuerKeys, signToken, startTokenIssuer } from '../support/token-issuer.js';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function tempDir(prefix: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  cleanups.push(() => rm(d, { recursive: true, force: true }));
  return d;
}

function ok(r: RunResult, what: string): void {
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stderr}`);
}

test('issue 20 item 15: serve reads a bcrypt htpasswd file made by `htpasswd -B`; skopeo pushes and pulls with it', async () => {
  const dir = await tempDir('ts-htpw-');
  const file = join(dir, 'htpasswd');
  ok(await htpasswd(['-B', '-b', '-c', file, 'alice', 'alice-pw']), 'htpasswd -B');
  ok(await htpasswd(['-B', '-b', '-C', '12', file, 'bob', 'bob-pw']), 'htpasswd -B -C 12');
  assert.match(await readFile(file, 'utf8'), /^alice:\$2y\$05\$/m, 'the file holds bcrypt hashes as Apache writes them');
  const config = join(dir, 'config.yaml');
  await writeFile(
    config,
    [
      `store: dir:${join(dir, 'store')}`,
      'serve:',
      `  uploadDir: ${join(dir, 'spool')}`,
      '  auth:',
      `    htpasswd: ${file}`,
      '    access:',
      '      - { users: ["*"], repositories: ["{user}/*"], actions: [pull, push] }',
      '',
    ].join('\n'),
  );
  const serve = await spawnServe(['--config', config]);
  cleanups.push(() => serve.stop());
  const image = await makeOciLayout(await tempDir('ts-img-'), { tag: 'v1', seed: 'htpasswd' });
  ok(await skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-pw', `oci:${image.path}:v1`, `docker://${serve.host}/alice/app:v1`]), 'push with bcrypt credentials');
  const out = await tempDir('ts-pull-');
  ok(await skopeo(['copy', '--src-tls-verify=false', '--src-creds', 'alice:alice-pw', `docker://${serve.host}/alice/app:v1`, `oci:${out}:v1`]), 'pull');
  ok(await skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', 'bob:bob-pw', `docker://${serve.host}/bob/nothing-yet:v1`]).then((r) => ({ ...r, code: /manifest unknown/i.test(r.stderr) ? 0 : r.code || 1 })), 'bob (cost 12) logs in; his repository is simply empty');
  const wrong = await skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', 'alice:wrong', `docker://${serve.host}/alice/app:v1`]);
  assert.notEqual(wrong.code, 0, 'a wrong password is refused');
  assert.match(wrong.stderr, /401|unauthorized/i);
});

/** A `transship serve` process whose tokens come from `issuer`, trusted through `trust` (jwks or certificate). */
async function serveWithIssuer(dir: string, name: string, trust: string): Promise<ServeProcess> {
  const config = join(dir, `${name}.yaml`);
  await writeFile(config, [`store: dir:${join(dir, 'store')}`, 'serve:', `  uploadDir: ${join(dir, 'spool')}`, '  auth:', '    token:', ...trust.split('\n').map((l) => `      ${l}`), ''].join('\n'));
  const serve = await spawnServe(['--config', config]);
  cleanups.push(() => serve.stop());
  return serve;
}

test('issue 20 item 16: tokens of an external issuer (its own process and key) are verified by JWKS and by certificate chain; skopeo goes through its token flow', async () => {
  const dir = await tempDir('ts-issuer-');
  const keys = await makeIssuerKeys(dir);
  const issuer = await startTokenIssuer({ key: keys.leafKey, chain: [keys.leafPem], issuer: 'test-issuer', users: { alice: 'alice-pw' } });
  cleanups.push(() => issuer.stop());
  const common = `realm: ${issuer.realm}\nservice: registry.test\nissuer: test-issuer`;
  const byJwks = await serveWithIssuer(dir, 'jwks', `${common}\njwks: ${issuer.jwks}`);
  const byCert = await serveWithIssuer(dir, 'cert', `${common}\ncertificate: ${keys.caPem}`);

  const image = await makeOciLayout(await tempDir('ts-img-'), { tag: 'v1', seed: 'issuer' });
  // Real skopeo: 401 challenge → the issuer's /token with Basic credentials → JWT → push and pull.
  ok(await skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-pw', `oci:${image.path}:v1`, `docker://${byJwks.host}/alice/app:v1`]), 'push through the external token flow (JWKS)');
  const out = await tempDir('ts-pull-');
  ok(await skopeo(['copy', '--src-tls-verify=false', '--src-creds', 'alice:alice-pw', `docker://${byCert.host}/alice/app:v1`, `oci:${out}:v1`]), 'pull through the external token flow (certificate chain)');
  const denied = await skopeo(['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-pw', `oci:${image.path}:v1`, `docker://${byJwks.host}/bob/app:v1`]);
  assert.notEqual(denied.code, 0, 'the issuer grants alice nothing on bob/*');

  const now = Math.floor(Date.now() / 1000);
  const good = { sub: 'alice', aud: 'registry.test', nbf: now - 5, exp: now + 300, access: [{ type: 'repository', name: 'alice/app', actions: ['pull'] }] };
  const other = createPrivateKey(await readFile(keys.otherKey));
  const otherChain = [new X509Certificate(await readFile(keys.otherPem))];
  const cases: Array<[string, string, number]> = [
    ['issued by the external issuer', await issuer.mint(good), 200],
    ['signed by another key (self-signed x5c)', await signToken(other, otherChain, { iss: 'test-issuer', ...good }), 401],
    ['signed by another key (no x5c)', await new SignJWT({ iss: 'test-issuer', ...good }).setProtectedHeader({ alg: 'ES256' }).sign(other), 401],
    ['expired', await issuer.mint({ ...good, exp: now - 120 }), 401],
    ['not valid yet', await issuer.mint({ ...good, nbf: now + 600 }), 401],
    ['wrong audience', await issuer.mint({ ...good, aud: 'another-registry' }), 401],
    ['wrong issuer', await issuer.mint({ ...good, iss: 'someone-else' }), 401],
    ['HMAC with the public JWK as secret', await new SignJWT({ iss: 'test-issuer', ...good }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(JSON.stringify((await (await fetch(issuer.jwks)).json())))), 401],
  ];
  for (const serve of [byJwks, byCert]) {
    for (const [what, token, status] of cases) {
      const r = await fetch(`${serve.url}/v2/alice/app/manifests/v1`, { headers: { authorization: `Bearer ${token}`, accept: 'application/vnd.oci.image.manifest.v1+json' } });
      assert.equal(r.status, status, `${what} (${serve === byJwks ? 'jwks' : 'certificate'})`);
      if (status === 401) {
        assert.equal(((await r.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAUTHORIZED');
        assert.equal(r.headers.get('www-authenticate'), `Bearer realm="${issuer.realm}",service="registry.test",error="invalid_token"`, what);
      } else await r.arrayBuffer();
    }
    // A valid token without the needed scope: challenged for it (the client asks the issuer again).
    const push = await fetch(`${serve.url}/v2/alice/app/blobs/uploads/`, { method: 'POST', headers: { authorization: `Bearer ${await issuer.mint(good)}` } });
    assert.equal(push.status, 401);
    assert.equal(push.headers.get('www-authenticate'), `Bearer realm="${issuer.realm}",service="registry.test",scope="repository:alice/app:pull,push",error="insufficient_scope"`);
    // transship's own token endpoint is off: the external service issues tokens.
    assert.equal((await fetch(`${serve.url}/token?scope=repository:alice/app:pull`)).status, 404);
  }
});
