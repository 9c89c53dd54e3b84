// deploy/ names what the project builds: the systemd units run the binary `npm i -g` installs, and every Kubernetes
// manifest runs the image the Dockerfile builds, at the package's version (they once named /usr/bin/transship and an
// image nothing built).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../support/cli.js';

test('deploy/ names the installed binary and the image the Dockerfile builds, at the package version', async () => {
  const { version } = JSON.parse(await readFile(join(REPO_ROOT, 'packages', 'transship', 'package.json'), 'utf8')) as { version: string };
  const dockerfile = await readFile(join(REPO_ROOT, 'Dockerfile'), 'utf8');
  assert.match(dockerfile, new RegExp(`docker build -t ghcr\\.io/transship/transship:${version.replace(/\./g, '\\.')} \\.`));
  assert.match(dockerfile, /scripts\/pack\.mjs/);
  for (const unit of await readdir(join(REPO_ROOT, 'deploy', 'systemd'))) {
    const text = await readFile(join(REPO_ROOT, 'deploy', 'systemd', unit), 'utf8');
    for (const m of text.matchAll(/^ExecStart=(\S+)/gm)) assert.equal(m[1], '/usr/local/bin/transship', unit);
  }
  for (const file of await readdir(join(REPO_ROOT, 'deploy', 'kubernetes'))) {
    const text = await readFile(join(REPO_ROOT, 'deploy', 'kubernetes', file), 'utf8');
    const images = [...text.matchAll(/image:\s*(\S+)/g)].map((m) => m[1]);
    assert.ok(images.length > 0, file);
    for (const image of images) assert.equal(image, `ghcr.io/transship/transship:${version}`, file);
  }
});
