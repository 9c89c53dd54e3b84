#!/usr/bin/env node
// The one test command (`npm test`): installs missing Debian packages, starts the real test bed (Ceph RGW, and
// whatever else test/support/services.ts declares), runs lint, typecheck and every test with node's test runner,
// then stops only the processes it started. `--unit` skips the test bed and runs test/unit only.
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';

register();
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const filters = args.filter((a) => !a.startsWith('--'));

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

let files = findTests(join(root, 'test', 'unit'));
if (!unitOnly) files.push(...findTests(join(root, 'test', 'integration')));
if (filters.length) files = files.filter((f) => filters.some((x) => f.includes(x)));

let status = 0;
if (!args.includes('--no-lint') && !filters.length) {
  console.log('# typecheck');
  status ||= await run('npx', ['tsc', '-p', 'tsconfig.json', '--noEmit']);
  console.log('# build (the CLI runs compiled code when dist/ is fresh)');
  status ||= await run('npm', ['run', '--silent', 'build']);
  console.log('# lint');
  status ||= await run('npx', ['eslint', '--max-warnings=0', '.']);
  if (status) {
    console.error('typecheck or lint failed');
    process.exit(status);
  }
}

const services = unitOnly ? undefined : await import('./support/services.ts');
const env = { TRANSSHIP_LOG_LEVEL: 'fatal', ...process.env };
let stop = async () => {};
if (services && files.some((f) => f.includes('/integration/'))) {
  const started = await services.startServices(files);
  Object.assign(env, started.env);
  stop = started.stop;
}
const onSignal = () => void stop().finally(() => process.exit(130));
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
try {
  status = await run(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', ...files], env);
} finally {
  await stop();
}
process.exit(status);
