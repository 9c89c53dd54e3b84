#!/usr/bin/env node
// `npm run pack [-- --out DIR]`: the publishable package. The CLI package (packages/transship) bundles the two
// workspace packages it depends on (@transship/core, @transship/containerd: "bundleDependencies"), because they
// are not published on their own. npm does not bundle workspace links (they are symlinks in the root
// node_modules), so this copies each one's package.json and compiled dist/ into packages/transship/node_modules
// for the length of `npm pack`, then removes the copies again (they would shadow the workspace links).
// The result installs anywhere with `npm i -g ./transship-<version>.tgz`.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outArg = process.argv.indexOf('--out');
const out = resolve(outArg > 0 ? process.argv[outArg + 1] : root);
const cli = join(root, 'packages', 'transship');
const bundled = join(cli, 'node_modules', '@transship');

const sh = (cmd, args, cwd) => {
  const r = spawnSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed with ${r.status}`);
  return r.stdout;
};

// npm installs the dependencies of the package it installs, not those of its bundled packages: the CLI package must
// declare every runtime dependency of core and containerd itself.
const cliDeps = JSON.parse(readFileSync(join(cli, 'package.json'), 'utf8')).dependencies;
for (const name of ['core', 'containerd']) {
  const deps = JSON.parse(readFileSync(join(root, 'packages', name, 'package.json'), 'utf8')).dependencies ?? {};
  const missing = Object.keys(deps).filter((d) => !d.startsWith('@transship/') && cliDeps[d] !== deps[d]);
  if (missing.length) throw new Error(`packages/transship/package.json must depend on ${missing.join(', ')} as @transship/${name} does (same ranges)`);
}

sh('npm', ['run', '--silent', 'build'], root);
mkdirSync(out, { recursive: true });
try {
  for (const name of ['core', 'containerd']) {
    const from = join(root, 'packages', name);
    const to = join(bundled, name);
    rmSync(to, { recursive: true, force: true });
    mkdirSync(to, { recursive: true });
    // Without its `dependencies`: npm counts every dependency of a bundled package as part of the bundle and would
    // expect them inside the tarball; the CLI package declares them all instead (checked above).
    const manifest = JSON.parse(readFileSync(join(from, 'package.json'), 'utf8'));
    delete manifest.dependencies;
    writeFileSync(join(to, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
    cpSync(join(from, 'dist'), join(to, 'dist'), { recursive: true, filter: (p) => !/\.(map|tsbuildinfo)$/.test(p) });
  }
  const file = sh('npm', ['pack', '--silent', '--pack-destination', out], cli).trim().split('\n').pop();
  const { version } = JSON.parse(readFileSync(join(cli, 'package.json'), 'utf8'));
  console.log(join(out, file ?? `transship-${version}.tgz`));
} finally {
  rmSync(bundled, { recursive: true, force: true });
}
