#!/usr/bin/env node
// `npm run pack [-- --out DIR]`: the publishable package, installable anywhere with `npm i -g ./transship-<v>.tgz`.
// The CLI package (packages/transship) bundles the two workspace packages it depends on (@transship/core,
// @transship/containerd: "bundleDependencies") because they are not published on their own. npm does not bundle
// workspace links (they are symlinks in the root node_modules), so the package is staged in a temporary directory —
// its package.json and dist/, plus real copies of the bundled packages in its node_modules — and packed from there.
// The workspace itself is never touched.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outArg = process.argv.indexOf('--out');
const out = resolve(outArg > 0 ? process.argv[outArg + 1] : root);
const cli = join(root, 'packages', 'transship');
const readJson = (p) => JSON.parse(readFileSync(p, 'utf8'));
const noMaps = (p) => !/\.(map|tsbuildinfo)$/.test(p);

const sh = (cmd, args, cwd) => {
  const r = spawnSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed with ${r.status}`);
  return r.stdout;
};

// npm installs the dependencies of the package it installs, and counts every dependency of a bundled package as part
// of the bundle (expected inside the tarball): so the bundled copies lose their `dependencies`, and the CLI package
// must declare each of them itself, with the same range.
const cliManifest = readJson(join(cli, 'package.json'));
for (const name of ['core', 'containerd']) {
  const deps = readJson(join(root, 'packages', name, 'package.json')).dependencies ?? {};
  const missing = Object.keys(deps).filter((d) => !d.startsWith('@transship/') && cliManifest.dependencies[d] !== deps[d]);
  if (missing.length) throw new Error(`packages/transship/package.json must depend on ${missing.join(', ')} as @transship/${name} does (same ranges)`);
}

sh('npm', ['run', '--silent', 'build'], root);
mkdirSync(out, { recursive: true });
const stage = mkdtempSync(join(tmpdir(), 'transship-pack-'));
try {
  writeFileSync(join(stage, 'package.json'), JSON.stringify(cliManifest, null, 2) + '\n');
  cpSync(join(cli, 'dist'), join(stage, 'dist'), { recursive: true, filter: noMaps });
  for (const f of ['README.md', 'LICENSE']) {
    try {
      cpSync(join(root, f), join(stage, f));
    } catch {
      // optional
    }
  }
  for (const name of ['core', 'containerd']) {
    const from = join(root, 'packages', name);
    const to = join(stage, 'node_modules', '@transship', name);
    mkdirSync(to, { recursive: true });
    const manifest = readJson(join(from, 'package.json'));
    delete manifest.dependencies;
    writeFileSync(join(to, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
    cpSync(join(from, 'dist'), join(to, 'dist'), { recursive: true, filter: noMaps });
  }
  const file = sh('npm', ['pack', '--silent', '--pack-destination', out], stage).trim().split('\n').pop();
  console.log(join(out, file ?? `transship-${cliManifest.version}.tgz`));
} finally {
  rmSync(stage, { recursive: true, force: true });
}
