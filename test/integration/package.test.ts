// The published package as a user installs it: `npm run pack` → `npm i -g ./transship-<version>.tgz` into a private
// prefix, then the installed `transship` runs the README's main job and offers both products' commands. Guards the
// bundling of the workspace packages (npm does not bundle workspace links by itself: the install used to fail with
// ERR_MODULE_NOT_FOUND for @transship/core, then for the bundled packages' own dependencies).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { REPO_ROOT } from '../support/cli.js';

const tmp = await mkdtemp(join(tmpdir(), 'ts-pack-'));
test.after(() => rm(tmp, { recursive: true, force: true }));
// npm and the installed bin's `#!/usr/bin/env node` use the Node that runs this test.
const env = { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}`, TRANSSHIP_CONFIG: '', XDG_DATA_HOME: join(tmp, 'data'), XDG_CACHE_HOME: join(tmp, 'cache') };
const sh = (cmd: string, args: string[], timeout = 240_000) => spawnSync(cmd, args, { cwd: REPO_ROOT, env, encoding: 'utf8', timeout });

test('npm pack → npm i -g installs a transship that runs copy, serve --help, doctor and watch', () => {
  const pack = sh(process.execPath, ['scripts/pack.mjs', '--out', tmp]);
  assert.equal(pack.status, 0, pack.stderr);
  const tgz = pack.stdout.trim().split('\n').pop()!;
  assert.match(tgz, /transship-\d+\.\d+\.\d+\.tgz$/);
  const prefix = join(tmp, 'prefix');
  const install = sh('npm', ['i', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', tgz]);
  assert.equal(install.status, 0, install.stderr);
  const bin = join(prefix, 'bin', 'transship');
  const version = sh(bin, ['--version']);
  assert.equal(version.status, 0, version.stderr);
  assert.match(version.stdout, /^\d+\.\d+\.\d+/);
  const copy = sh(bin, ['copy', `oci:${join(REPO_ROOT, 'examples', 'hello')}:latest`, `dir:${join(tmp, 'store')}/hello:latest`, '--json']);
  assert.equal(copy.status, 0, copy.stderr);
  assert.equal(JSON.parse(copy.stdout).blobs.uploaded, 6);
  assert.equal(copy.stderr, '', 'nothing on stderr: no runtime warning');
  for (const cmd of ['serve', 'doctor', 'watch', 'verify', 'ls']) {
    const help = sh(bin, [cmd, '--help']);
    assert.equal(help.status, 0, `${cmd} --help: ${help.stderr}`);
  }
  // doctor loads the containerd package (gRPC, its .proto files): an unreachable socket is exit 1 with a code.
  const doctor = sh(bin, ['doctor', '--address', join(tmp, 'no.sock'), '--json']);
  assert.equal(doctor.status, 1, doctor.stderr);
  assert.equal(JSON.parse(doctor.stdout).containerd.error.code, 'TS_CONTAINERD_UNREACHABLE');
});
