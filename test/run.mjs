#!/usr/bin/env node
// The one test command (`npm test`): typecheck, build, lint, then every test with node's test runner on each
// supported Node LTS (24: the root devDependency `node`, first on PATH inside npm scripts; 26: tools/node26,
// installed here with `npm ci` when missing). Integration tests get the real test bed (Ceph RGW, and whatever
// test/support/services.ts declares; each service installs its Debian packages when missing), started once and
// shared by both runtimes; only the processes it started are stopped.
//   node test/run.mjs                     everything, on Node 24 and 26
//   node test/run.mjs --unit              unit tests only (no test bed)
//   node test/run.mjs NAME…               only test files whose path contains NAME (skips typecheck and lint)
//   --node 24|26|both                     which runtimes (default: both for a full run, 24 when filtered)
//   --no-lint                             skip typecheck and lint (the build always runs: tests spawn the real CLI)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';

register();
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const nodeArg = args.includes('--node') ? args[args.indexOf('--node') + 1] : undefined;
const filters = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--node');

function findTests(dir) {
  const out = [];
  for (const entry of readdirSync(dir)) {
    const p = join(dir, entry);
    if (statSync(p).isDirectory()) out.push(...findTests(p));
    else if (entry.endsWith('.test.ts')) out.push(p);
  }
  return out.sort();
}

function run(cmd, cmdArgs, env = process.env) {
  return new Promise((resolve) => {
    const child = spawn(cmd, cmdArgs, { stdio: 'inherit', cwd: root, env });
    child.on('exit', (code, sig) => resolve(code ?? (sig ? 1 : 0)));
  });
}

/** The Node binaries to test on, installed if missing. */
function runtimes() {
  const want = nodeArg ?? (filters.length ? '24' : 'both');
  const out = [];
  if (want === '24' || want === 'both') {
    const bin = join(root, 'node_modules', 'node', 'bin', 'node');
    if (!existsSync(bin)) throw new Error('Node 24 is missing: run `npm ci` first (it is the root devDependency "node")');
    out.push({ name: 'Node 24', bin });
  }
  if (want === '26' || want === 'both') {
    const dir = join(root, 'tools', 'node26');
    const bin = join(dir, 'node_modules', 'node', 'bin', 'node');
    if (!existsSync(bin)) {
      const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund', '--prefix', dir], { stdio: 'inherit' });
      if (r.status !== 0) throw new Error('installing Node 26 (npm ci in tools/node26) failed');
    }
    out.push({ name: 'Node 26', bin });
  }
  if (!out.length) throw new Error(`--node ${want}: expected 24, 26 or both`);
  return out;
}

let unit = findTests(join(root, 'test', 'unit'));
let integration = unitOnly ? [] : findTests(join(root, 'test', 'integration'));
if (filters.length) {
  const match = (f) => filters.some((x) => f.includes(x));
  unit = unit.filter(match);
  integration = integration.filter(match);
}
const nodes = runtimes();

let status = 0;
if (!args.includes('--no-lint') && !filters.length) {
  console.log('# typecheck');
  status ||= await run('npx', ['tsc', '-p', 'tsconfig.json', '--noEmit']);
}
console.log('# build (tests run the compiled CLI, as users do)');
status ||= await run('npm', ['run', '--silent', 'build']);
if (!args.includes('--no-lint') && !filters.length) {
  console.log('# lint');
  status ||= await run('npx', ['eslint', '--max-warnings=0', '.']);
}
if (status) {
  console.error('typecheck, build or lint failed');
  process.exit(status);
}

const services = integration.length ? await import('./support/services.ts') : undefined;
const env = { TRANSSHIP_LOG_LEVEL: 'fatal', ...process.env };
let stop = async () => {};
if (services) {
  const started = await services.startServices(integration);
  Object.assign(env, started.env);
  stop = started.stop;
}
const onSignal = () => void stop().finally(() => process.exit(130));
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
// Tests import the TypeScript sources: tsx compiles them, and the "development" condition resolves the workspace
// packages (@transship/core/…) to their sources too (packages/*/package.json "exports").
const testArgs = (concurrency, files) => ['--conditions=development', '--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...files];
const results = [];
try {
  for (const [i, node] of nodes.entries()) {
    // The GC soak runs its full length once; a second runtime runs the same code paths for 30 s (unless set).
    const runEnv = i > 0 && env.TRANSSHIP_GC_SOAK_SECONDS === undefined ? { ...env, TRANSSHIP_GC_SOAK_SECONDS: '30' } : env;
    // Unit tests run in parallel (each file is its own process and owns its temp dirs); integration tests share one
    // test bed (RGW, containerd) and run one file at a time.
    if (unit.length) {
      console.log(`# unit tests on ${node.name}`);
      const code = await run(node.bin, testArgs(availableParallelism(), unit), runEnv);
      results.push(`${node.name} unit: ${code === 0 ? 'pass' : 'FAIL'}`);
      status ||= code;
    }
    if (integration.length) {
      console.log(`# integration tests on ${node.name}`);
      const code = await run(node.bin, testArgs(1, integration), runEnv);
      results.push(`${node.name} integration: ${code === 0 ? 'pass' : 'FAIL'}`);
      status ||= code;
    }
  }
} finally {
  await stop();
}
console.log(`# ${results.join(' · ')}`);
process.exit(status);
