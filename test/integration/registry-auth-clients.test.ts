// Auth as existing deployments have it, with the real pieces: `transship serve` (the CLI process) reading an
// htpasswd file written by Apache's `htpasswd -B`, and real skopeo pushing and pulling through it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeOciLayout } from '../support/images.js';
import { htpasswd, skopeo, spawnServe, type RunResult } from '../support/registry.js';

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
