// Benchmark (not a timed test): a full `transship doctor` diagnosis of a node with 200 containers, 100 of them
// running, on a private containerd. Target from issue 5: under 1 s wall time and under 100 MB RSS.
// Run: node --import tsx bench/doctor.ts [containers=200] [running=100]
// Wall time is measured in-process (median of 5 runs after one warm-up); RSS is the peak of a separate process that
// runs one diagnosis from cold, so it includes Node, tsx's loader and the gRPC stack — what an operator pays.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { startContainerd, IMAGE } from '../test/support/containerd.js';
import { diagnose } from '@transship/containerd/diagnose';

const total = Number(process.argv[2] ?? 200);
const running = Number(process.argv[3] ?? 100);

async function inBatches(n: number, size: number, fn: (i: number) => Promise<void>): Promise<void> {
  for (let i = 0; i < n; i += size) await Promise.all(Array.from({ length: Math.min(size, n - i) }, (_, k) => fn(i + k)));
}

const c = await startContainerd();
try {
  const setup = Date.now();
  await inBatches(running, 8, async (i) => {
    await c.runContainer(`run-${i}`);
  });
  await inBatches(total - running, 16, async (i) => {
    const r = await c.ctr(['container', 'create', IMAGE, `created-${i}`, 'sleep', '1']);
    if (r.code !== 0) throw new Error(r.stderr);
  });
  console.log(`setup: ${total} containers (${running} running) in ${((Date.now() - setup) / 1000).toFixed(1)} s`);

  const opts = { address: c.address, stateDir: c.state, logs: true, minBundleAgeMs: 0 };
  const warm = await diagnose(opts);
  if (warm.snapshot.containers.length !== total || warm.snapshot.tasks.length !== running) throw new Error(`saw ${warm.snapshot.containers.length} containers / ${warm.snapshot.tasks.length} tasks`);
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const d = await diagnose(opts);
    times.push(performance.now() - t0);
    if (d.findings.some((f) => f.severity !== 'info')) throw new Error(`unexpected findings: ${d.findings.map((f) => f.code).join(', ')}`);
  }
  times.sort((a, b) => a - b);
  const median = times[2] ?? NaN;

  // Cold, separate process: peak RSS of one full diagnosis (including journal/dmesg evidence lookups), once from
  // source through tsx and once from the compiled dist/ build (what `transship doctor` runs after `npm run build`).
  const source = new URL('../packages/containerd/src/diagnose.ts', import.meta.url).pathname;
  const compiled = new URL('../packages/containerd/dist/diagnose.js', import.meta.url).pathname;
  const runIn = async (module: string, loader: string[], diagnoseToo: boolean): Promise<{ ms: number; maxRssKb: number }> => {
    const script = diagnoseToo
      ? `
    const { diagnose } = await import(${JSON.stringify(module)});
    const t0 = performance.now();
    await diagnose({ address: ${JSON.stringify(c.address)}, stateDir: ${JSON.stringify(c.state)}, logs: true });
    const ms = performance.now() - t0;
    process.stdout.write(JSON.stringify({ ms, maxRssKb: process.resourceUsage().maxRSS }));
  `
      : `await import(${JSON.stringify(module)}); process.stdout.write(JSON.stringify({ ms: 0, maxRssKb: process.resourceUsage().maxRSS }));`;
    const child = spawn(process.execPath, [...loader, '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    await new Promise((resolve) => child.on('exit', resolve));
    return JSON.parse(out) as { ms: number; maxRssKb: number };
  };
  const cold = await runIn(source, ['--import', 'tsx'], true);
  // Baseline: the same process that only loads the modules (tsx transpiles them in memory), to separate the cost of
  // running from source from the cost of the diagnosis itself.
  const base = await runIn(source, ['--import', 'tsx'], false);
  const built = existsSync(compiled) ? await runIn(compiled, [], true) : undefined;
  const mib = (kb: number): string => `${(kb / 1024).toFixed(1)} MiB (${((kb * 1024) / 1e6).toFixed(1)} MB)`;

  console.log('| benchmark | value | target |');
  console.log('|---|---|---|');
  console.log(`| doctor diagnosis, ${total} containers / ${running} running, warm median of 5 | ${median.toFixed(0)} ms (min ${times[0]?.toFixed(0)}, max ${times[4]?.toFixed(0)}) | < 1000 ms |`);
  console.log(`| same, cold separate process (first diagnosis) | ${cold.ms.toFixed(0)} ms | < 1000 ms |`);
  console.log(`| peak RSS of that process (Node + tsx + gRPC) | ${mib(cold.maxRssKb)} | < 100 MB |`);
  console.log(`| peak RSS of a process that only loads the modules via tsx | ${mib(base.maxRssKb)} | — |`);
  if (built) console.log(`| compiled dist/ build (\`npm run build\`): cold diagnosis, peak RSS | ${built.ms.toFixed(0)} ms, ${mib(built.maxRssKb)} | < 100 MB |`);
  else console.log('| compiled dist/ build | not measured: run `npm run build` first | < 100 MB |');
} finally {
  await c.stop();
}
