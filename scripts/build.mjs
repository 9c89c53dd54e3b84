#!/usr/bin/env node
// `npm run build` (also `prepare`, so `npm ci` builds): compiles the three workspace packages in dependency order
// (core → containerd → transship; each compiles against the previous one's dist/ declarations) and copies the
// containerd .proto files next to the compiled client that loads them. Incremental: a no-change rebuild is quick.
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
for (const pkg of ['core', 'containerd', 'transship']) {
  const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'packages', pkg, 'tsconfig.build.json')], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
cpSync(join(root, 'packages/containerd/src/proto'), join(root, 'packages/containerd/dist/proto'), { recursive: true, filter: (p) => !p.endsWith('.md') });
chmodSync(join(root, 'packages/transship/dist/cli/main.js'), 0o755);
