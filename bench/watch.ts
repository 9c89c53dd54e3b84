// Benchmark (not a timed test): `transship watch` following N container lifecycles run at full speed on a private
// containerd. Targets from issue 6: the watcher keeps up (no unbounded queue, nothing dropped), adds < 5 % CPU on
// top of containerd's own, and stays < 100 MB RSS.
//
// Run: node --import tsx bench/watch.ts [lifecycles=1000] [concurrency=4] [--no-build] [--no-write]
//
// What is measured: the compiled CLI (`npm run build` first, then `node packages/transship/dist/cli/main.js watch`), in its own
// process, with OTLP span export on (to a sink in this process that counts the spans), so the cost includes the
// traces. Each lifecycle is `ctr run --rm` of busybox `true`: container create, task create, start, exit, task
// delete, container delete — 6+ events, 9 spans, a post-delete leak check. CPU is utime+stime from /proc/<pid>/stat
// over the workload window (from the first `ctr run` until the watcher has closed every trace), for the watcher and
// for the containerd daemon process alone (shims and runc are not counted on containerd's side, which makes the
// ratio stricter than "containerd as a whole"). Peak RSS is the watcher's VmHWM.
//
// A second ratio adds the runc-v2 shim daemons (containerd's own binary). A shim daemonizes, so it is an orphan whose
// CPU never reaches containerd's cutime; the bench therefore runs under bench/watch-reaper.py, a child subreaper that
// reaps those orphans and logs each one's own utime+stime read while it is a zombie (exact, including its exit). A
// third also adds the daemon's cutime+cstime: the short `containerd-shim-runc-v2 start`/`delete` runs it reaps, with
// the `runc delete` each `delete` waits for folded in. runc's other runs and the containers are counted nowhere.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd, IMAGE } from '../test/support/containerd.js';
import { machineLine, replaceSection } from './report.js';
import type { WatchStatus } from '@transship/containerd/watch/watcher';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const N = Number(positional[0] ?? 1000);
const CONCURRENCY = Number(positional[1] ?? 4);
const build = !process.argv.includes('--no-build');
const write = !process.argv.includes('--no-write');
/** --no-otlp: spans are not exported (the no-op tracer), to separate the cost of the traces. */
const otlp = !process.argv.includes('--no-otlp');
const TICK = 100; // USER_HZ on Linux: /proc/<pid>/stat times are in 1/100 s

// Re-run under the subreaper (see the file comment) unless this already is that run.
const REAPER_LOG = process.env.WATCH_BENCH_REAPER_LOG;
if (REAPER_LOG === undefined) {
  const logFile = join(tmpdir(), `transship-watch-reaper-${process.pid}.log`);
  const r = spawnSync('python3', [join(ROOT, 'bench', 'watch-reaper.py'), logFile, process.execPath, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit', env: { ...process.env, WATCH_BENCH_REAPER_LOG: logFile } });
  process.exit(r.status ?? 1);
}

function cpuMs(pid: number, withChildren = false): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12]) + (withChildren ? Number(f[13]) + Number(f[14]) : 0)) * 1000) / TICK;
}

/** Orphans reaped by bench/watch-reaper.py so far: one line each, `<t> <pid> <comm> <utime> <stime> <cutime> <cstime>`. */
function reaped(): Array<{ pid: number; comm: string; ownMs: number }> {
  if (!existsSync(REAPER_LOG as string)) return [];
  return readFileSync(REAPER_LOG as string, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' '))
    .map((f) => ({ pid: Number(f[1]), comm: f[2] ?? '', ownMs: ((Number(f[3]) + Number(f[4])) * 1000) / TICK }));
}

/** Live shims of one containerd (by the `-address` in their command line) → their own CPU ms so far. */
function liveShims(address: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (!argv[0]?.endsWith('containerd-shim-runc-v2') || argv[argv.indexOf('-address') + 1] !== address) continue;
      out.set(Number(d), cpuMs(Number(d)));
    } catch {
      // exited meanwhile: the reaper logged it
    }
  }
  return out;
}

/** CPU ms by thread name (main thread "node", V8 workers, libuv pool): where the watcher's CPU goes. */
function threadCpuMs(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/\d+$/, '');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(comm, (out.get(comm) ?? 0) + ((Number(f[11]) + Number(f[12])) * 1000) / TICK);
    } catch {
      // thread ended
    }
  }
  return out;
}

/** Voluntary context switches of a process's main thread: how often it went to sleep, i.e. how often it was woken. */
function wakeups(pid: number): number {
  return Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

function statusKb(pid: number, key: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? NaN);
}

function containerdPid(dir: string): number {
  const out = spawnSync('pgrep', ['-f', `containerd --config ${join(dir, 'config.toml')}`], { encoding: 'utf8' }).stdout;
  const pid = out.split('\n').map(Number).find((p) => p > 0);
  if (pid === undefined) throw new Error('containerd pid not found');
  return pid;
}

if (build) {
  console.log('building dist/ (npm run build)…');
  const r = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('npm run build failed (someone else\'s work in progress? retry, or pass --no-build with a fresh dist/)');
}
const entry = join(ROOT, 'packages', 'transship', 'dist', 'cli', 'main.js');
if (!existsSync(entry)) throw new Error(`${entry} missing: run npm run build`);

// OTLP sink: accepts the exporter's JSON, counts spans by name.
const spanCounts = new Map<string, number>();
let otlpRequests = 0;
const unobserved: string[] = [];
let withShimPid = 0;
const sink = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    otlpRequests++;
    try {
      type KV = { key: string; value: { stringValue?: string; boolValue?: boolean } };
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { resourceSpans?: Array<{ scopeSpans?: Array<{ spans?: Array<{ name: string; attributes?: KV[] }> }> }> };
      for (const rs of body.resourceSpans ?? []) {
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spanCounts.set(s.name, (spanCounts.get(s.name) ?? 0) + 1);
            const attr = (k: string): KV['value'] | undefined => s.attributes?.find((a) => a.key === k)?.value;
            // A root that did not start from its /containers/create: adopted by a reconcile or opened by a later event.
            if (s.name === 'containerd.task.create' && attr('containerd.shim.pid') !== undefined) withShimPid++;
            if (s.name === 'containerd.container' && attr('containerd.create_observed')?.boolValue === false) unobserved.push(`${attr('container.id')?.stringValue ?? '?'}${attr('containerd.reconciled')?.boolValue ? ' (reconciled)' : ''}`);
          }
        }
      }
    } catch {
      spanCounts.set('(unparsed request)', (spanCounts.get('(unparsed request)') ?? 0) + 1);
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
});
await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
const sinkPort = (sink.address() as { port: number }).port;

const c = await startContainerd();
const ctrd = containerdPid(c.dir);
// WATCH_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' profiles the watcher (SIGTERM lets it write the profile).
const nodeArgs = (process.env.WATCH_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
const nodeArgsNote = nodeArgs.length > 0 ? ` with node ${nodeArgs.join(' ')}` : ' with node defaults';
const watcher = spawn(process.execPath, [...nodeArgs, entry, 'watch', '--address', c.address, '--state', c.state, '--namespace', c.namespace, '--listen', '127.0.0.1:0', ...(otlp ? ['--otlp-endpoint', `http://127.0.0.1:${sinkPort}`] : [])], {
  env: { ...process.env, TRANSSHIP_CONFIG: '', TRANSSHIP_LOG_LEVEL: 'warn' },
  stdio: ['ignore', 'ignore', 'pipe'],
});
// WATCH_BENCH_BASELINE=<another build's packages/transship/dist/cli/main.js>: a second watcher from that build follows the same
// containerd beside this one (same events, same load at the same moment), so a change's effect on CPU is measured
// side by side instead of across runs on a machine whose load varies. Its spans go to a sink that only counts its task
// creates and how many name the shim (how often a shim is gone before it is read depends on the moment, so coverage is
// compared in the same run too).
const baselineEntry = process.env.WATCH_BENCH_BASELINE;
let baselineCreates = 0;
let baselineWithShimPid = 0;
const baselineSink = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8');
    // One span per object; a task create span names the shim pid in its attributes.
    for (const span of text.split('{"traceId"')) {
      if (!span.includes('"name":"containerd.task.create"')) continue;
      baselineCreates++;
      if (span.includes('"key":"containerd.shim.pid"')) baselineWithShimPid++;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
});
await new Promise<void>((resolve) => baselineSink.listen(0, '127.0.0.1', resolve));
const baseline = baselineEntry
  ? spawn(process.execPath, [...nodeArgs, baselineEntry, 'watch', '--address', c.address, '--state', c.state, '--namespace', c.namespace, '--listen', '127.0.0.1:0', ...(otlp ? ['--otlp-endpoint', `http://127.0.0.1:${(baselineSink.address() as { port: number }).port}`] : [])], { env: { ...process.env, TRANSSHIP_CONFIG: '', TRANSSHIP_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'ignore'] })
  : undefined;
// Peer, same run, same events: containerd's own Go client (`ctr events`, output to /dev/null) subscribed beside the
// watcher. It only receives and prints; what it costs is the floor for any subscriber on this machine.
const peer = spawn('ctr', ['--address', c.address, 'events'], { stdio: ['ignore', 'ignore', 'ignore'] });
let stderr = '';
watcher.stderr.on('data', (b: Buffer) => (stderr += b.toString()));


async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

try {
  const port = await waitFor('watcher listening', async () => /metrics on http:\/\/127\.0\.0\.1:(\d+)\//.exec(stderr)?.[1], 30_000);
  const base = `http://127.0.0.1:${port}`;
  const status = async (): Promise<WatchStatus> => (await (await fetch(`${base}/healthz`)).json()) as WatchStatus;
  await waitFor('watcher subscribed', async () => ((await status()).subscribed ? true : undefined), 30_000);
  const rssIdleKb = statusKb(watcher.pid!, 'VmRSS');

  const load0 = loadavg()[0] ?? 0;
  const w0 = cpuMs(watcher.pid!);
  const p0 = cpuMs(peer.pid!);
  const b0 = baseline ? cpuMs(baseline.pid!) : 0;
  const bw0 = baseline ? wakeups(baseline.pid!) : 0;
  const threads0 = threadCpuMs(watcher.pid!);
  const wake0 = wakeups(watcher.pid!);
  const c0 = cpuMs(ctrd);
  const cc0 = cpuMs(ctrd, true);
  const reaped0 = reaped().length;
  const shims0 = liveShims(c.address);
  const t0 = performance.now();
  let next = 0;
  let failed = 0;
  // Halfway through, the CPU so far: the second half shows the steady state, without the watcher's start-up (V8
  // compiling its hot functions as they become hot is a one-time cost that a short run over-weights).
  let finished = 0;
  let half: { at: number; w: number; b: number; c: number } | undefined;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let i = next++; i < N; i = next++) {
        const r = await c.ctr(['run', '--rm', '--null-io', IMAGE, `b${i}`, 'true'], { timeoutMs: 120_000 });
        if (r.code !== 0) failed++;
        if (++finished === Math.floor(N / 2)) half = { at: finished - failed, w: cpuMs(watcher.pid!), b: baseline ? cpuMs(baseline.pid!) : 0, c: cpuMs(ctrd) };
        if (i % 100 === 99) console.log(`${i + 1} lifecycles, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      }
    }),
  );
  const workloadMs = performance.now() - t0;
  // Caught up = every lifecycle's trace closed (its leak check included) and the queue empty.
  const caughtUp = await waitFor('watcher to close every trace', async () => {
    await new Promise((r) => setTimeout(r, 250));
    const s = await status();
    return s.containersTracked === 0 && s.queueDepth === 0 && s.pendingLeakChecks === 0 ? s : undefined;
  }, 120_000);
  const lagMs = performance.now() - t0 - workloadMs;
  const w1 = cpuMs(watcher.pid!);
  const p1 = cpuMs(peer.pid!);
  const b1 = baseline ? cpuMs(baseline.pid!) : 0;
  const bw1 = baseline ? wakeups(baseline.pid!) : 0;
  const threads1 = threadCpuMs(watcher.pid!);
  const wake1 = wakeups(watcher.pid!);
  const byThread = [...threads1].map(([k, v]) => [k, v - (threads0.get(k) ?? 0)] as const).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${(v / 1000).toFixed(2)} s`).join(', ');
  const c1 = cpuMs(ctrd);
  const cc1 = cpuMs(ctrd, true);
  // Shim CPU in the window: shims reaped in it (minus what those alive at the start had already used), plus the
  // growth of those still alive.
  const shims1 = liveShims(c.address);
  const reapedShims = reaped().slice(reaped0).filter((r) => r.comm.startsWith('containerd-shim'));
  let shimCpu = 0;
  for (const r of reapedShims) shimCpu += r.ownMs - (shims0.get(r.pid) ?? 0);
  for (const [pid, ms] of shims1) shimCpu += ms - (shims0.get(pid) ?? 0);
  const spawnedCpu = cc1 - cc0 - (c1 - c0);
  const load1 = loadavg()[0] ?? 0;
  const metrics = await (await fetch(`${base}/metrics`)).text();
  const lifetimes = Number(/containerd_watch_phase_duration_seconds_count\{phase="lifetime"\} (\d+)/.exec(metrics)?.[1] ?? NaN);
  const leakClean = Number(/containerd_watch_leak_checks_total\{result="clean"\} (\d+)/.exec(metrics)?.[1] ?? 0);
  const peakKb = statusKb(watcher.pid!, 'VmHWM');
  const found = ((await (await fetch(`${base}/findings`)).json()) as { findings: Array<{ code: string; containerId?: string }> }).findings;
  const findingCodes = [...new Set(found.map((f) => f.code))].map((code) => `${code} ×${found.filter((f) => f.code === code).length}`).join(', ') || 'none';
  watcher.kill('SIGTERM');
  await new Promise((r) => watcher.on('exit', r));
  const roots = spanCounts.get('containerd.container') ?? 0;
  const totalSpans = [...spanCounts.values()].reduce((a, b) => a + b, 0);

  const watcherCpu = w1 - w0;
  const ctrdCpu = c1 - c0;
  const pct = (100 * watcherCpu) / ctrdCpu;
  const peerPct = (100 * (p1 - p0)) / ctrdCpu;
  const withShims = ctrdCpu + shimCpu;
  const pctShims = (100 * watcherCpu) / withShims;
  const peerPctShims = (100 * (p1 - p0)) / withShims;
  const allCpu = withShims + spawnedCpu;
  const pctAll = (100 * watcherCpu) / allCpu;
  const keepsUp = caughtUp.eventsDropped === 0 && lifetimes === N - failed;
  const rows = [
    ['lifecycles run (`ctr run --rm … true`, concurrency ' + CONCURRENCY + ')', `${N - failed} ok, ${failed} failed, in ${(workloadMs / 1000).toFixed(1)} s (${((N - failed) / (workloadMs / 1000)).toFixed(1)}/s)`, '—', '—'],
    ['watcher keeps up: events dropped / deepest queue seen / traces closed', `${caughtUp.eventsDropped} / ${caughtUp.queueHighWater} of ${caughtUp.queueCapacity} / ${lifetimes}`, `0 dropped, all ${N - failed} closed`, keepsUp ? '✅ yes' : '❌ **no**'],
    ['catch-up after the last lifecycle finished (last leak check included)', `${(lagMs / 1000).toFixed(2)} s`, '—', '—'],
    ['watcher CPU ÷ containerd daemon CPU over the workload', `${(watcherCpu / 1000).toFixed(1)} s ÷ ${(ctrdCpu / 1000).toFixed(1)} s = ${pct.toFixed(1)} %`, '< 5 %', pct < 5 ? '✅ yes' : '❌ **no**'],
    [`second reading: watcher CPU ÷ (containerd daemon + its ${reapedShims.length + shims1.size} shim daemons, each shim's own CPU)`, `${(watcherCpu / 1000).toFixed(1)} s ÷ (${(ctrdCpu / 1000).toFixed(1)} + ${(shimCpu / 1000).toFixed(1)} s) = ${pctShims.toFixed(1)} %`, '< 5 % (second reading)', pctShims < 5 ? '✅ yes' : '❌ **no**'],
    ['third reading: also the short `containerd-shim-runc-v2 start`/`delete` runs the daemon spawns and reaps (its cutime+cstime, which also holds the `runc delete` each `shim delete` waits for)', `${(watcherCpu / 1000).toFixed(1)} s ÷ (${(withShims / 1000).toFixed(1)} + ${(spawnedCpu / 1000).toFixed(1)} s) = ${pctAll.toFixed(1)} %`, 'report', '—'],
    ['peer: `ctr events` (Go, receives and prints the same events) CPU ÷ containerd daemon CPU', `${((p1 - p0) / 1000).toFixed(1)} s ÷ ${(ctrdCpu / 1000).toFixed(1)} s = ${peerPct.toFixed(1)} % (${peerPctShims.toFixed(1)} % of daemon + shim daemons; watcher ÷ peer: ${((w1 - w0) / (p1 - p0)).toFixed(1)}×)`, 'report', '—'],
    [`watcher peak RSS (VmHWM, compiled dist/, OTLP export ${otlp ? 'on' : 'off'}${nodeArgsNote})`, `${(peakKb / 1024).toFixed(1)} MiB (idle after start: ${(rssIdleKb / 1024).toFixed(1)} MiB)`, '< 100 MB', peakKb * 1024 < 100e6 ? '✅ yes' : '❌ **no**'],
    ['spans exported (sink count) / roots', `${totalSpans} / ${roots} in ${otlpRequests} OTLP requests`, `${N - failed} roots`, '—'],
  ];
  // The daemon-only row is the target; the daemon + shims row is reported beside it, not counted as a second target.
  const judged = rows.filter((r) => r[3] !== '—' && r[2] !== '< 5 % (second reading)');
  const met = judged.filter((r) => r[3]?.startsWith('✅')).length;
  const lines = [
    '<!-- section:watch -->',
    '## containerd watch (issue 6): `transship watch` following container lifecycles at full speed',
    '',
    `_Measured ${new Date().toISOString()}; ${machineLine()}; load average ${load0.toFixed(1)} before, ${load1.toFixed(1)} after (1 min, ${availableParallelism()} CPUs)._`,
    '',
    `Standalone: \`node --import tsx bench/watch.ts ${N} ${CONCURRENCY}\` (builds dist/ first). A private containerd 1.6 + runc; ${CONCURRENCY} parallel \`ctr run --rm\` of busybox \`true\`; the watcher is the compiled CLI in its own process with OTLP export to a counting sink. CPU is utime+stime from the first \`ctr run\` until the watcher closed every trace: of the watcher, and — the target's row — of the containerd daemon process alone. The second reading adds the runc-v2 shim daemons, containerd's own binary: they are orphans (their CPU never reaches the daemon's cutime), so the bench runs under a child subreaper (bench/watch-reaper.py) that reads each shim's own utime+stime while it is a zombie and reaps it — exact, exit included. The third adds the daemon's cutime+cstime: the \`shim start\`/\`shim delete\` runs it reaps, with the \`runc delete\` those wait for folded in (cutime cannot separate it), so it overstates containerd's share a little. runc's other runs, the containers and ctr are counted in no row.  The bench does not poll the watcher during the workload (an HTTP request costs the watcher more CPU than a lifecycle); the deepest queue is the watcher's own high-water mark.`,
    '',
    `**${met} of ${judged.length} targets met.**`,
    '',
    '| measurement | transship watch | target | met? |',
    '| --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    ...(half ? [`Second half only (lifecycles ${half.at + 1}–${N - failed}, steady state): watcher ${((w1 - half.w) / (N - failed - half.at)).toFixed(1)} ms per lifecycle, ${((100 * (w1 - half.w)) / (c1 - half.c)).toFixed(1)} % of the daemon${baseline ? `; side-by-side build ${((b1 - half.b) / (N - failed - half.at)).toFixed(1)} ms` : ''}.`, ''] : []),
    `Spans by name: ${[...spanCounts.entries()].sort().map(([k, v]) => `${k} ${v}`).join(', ')}. Findings during the run: ${findingCodes}; leak checks clean: ${leakClean}; task create spans naming the shim pid: ${withShimPid} of ${spanCounts.get('containerd.task.create') ?? 0}; traces not started from their create event: ${unobserved.length}${unobserved.length ? ` (${unobserved.slice(0, 5).join(', ')})` : ''}; resubscriptions: ${caughtUp.resubscriptions}, reconciles: ${caughtUp.reconciles}. Watcher CPU by thread: ${byThread}; per lifecycle ${(watcherCpu / (N - failed)).toFixed(1)} ms and ${((wake1 - wake0) / (N - failed)).toFixed(1)} wakeups of its main thread (voluntary context switches).`,
    ...(baseline ? ['', `Side by side in the same run, the watcher built from ${baselineEntry} (task create spans naming the shim pid: ${baselineWithShimPid} of ${baselineCreates}): ${((b1 - b0) / 1000).toFixed(1)} s, ${((b1 - b0) / (N - failed)).toFixed(1)} ms and ${((bw1 - bw0) / (N - failed)).toFixed(1)} wakeups per lifecycle (${((100 * (b1 - b0)) / ctrdCpu).toFixed(1)} % of the daemon).`] : []),
    '',
    '<!-- /section:watch -->',
  ];
  console.log(lines.join('\n'));
  if (write) {
    await replaceSection(join(ROOT, 'bench', 'RESULTS.md'), 'watch', lines.join('\n'));
    console.log('wrote the watch section of bench/RESULTS.md');
  }
} finally {
  if (watcher.exitCode === null) watcher.kill('SIGKILL');
  peer.kill('SIGKILL');
  baseline?.kill('SIGKILL');
  sink.close();
  baselineSink.close();
  await c.stop();
}
