// Registry (issue 3): skopeo pushes and pulls the same images through `transship serve` (S3 store) and through
// Distribution (s3 driver), both on the same RGW behind the same counting proxy, scenario by scenario back to back.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, httpStatus, startDistribution, type Distribution } from '../test/support/distribution.js';
import type { ProxyCounts, ProxyLogEntry } from '../test/support/s3-proxy.js';
import { PULL_FLAGS, PUSH_FLAGS, TRANSSHIP_BIN, requestLines, serveUnavailable, type BenchContext } from './context.js';
import { check, median, processCpuMs, readHwm, waitForIdle } from './measure.js';
import { fmt, type Row, type Section } from './report.js';
import { SERVE_MALLOC_ENV } from '../packages/transship/src/server/malloc.js';
import { peerNotes } from './transfer.js';

const CONCURRENT_GETS = 50;

interface Contender {
  name: 'transship' | 'distribution';
  host: string;
  /** The registry process, whose CPU time each operation reports. */
  pid: number | undefined;
}

interface Op {
  wallMs: number;
  s3: ProxyCounts;
  requests: ProxyLogEntry[];
  bytes?: number;
  /** CPU time of the registry process during the operation, ms. */
  cpuMs?: number;
  /** CPU time of the RGW cluster (radosgw, OSD, monitor) during the operation, ms: the backend work it caused. */
  backendCpuMs?: number;
  /** CPU time of the counting relay (s3-relay.py) during the operation, ms: the instrument's own cost. */
  relayCpuMs?: number;
  /** How long RGW stayed busy (with what the previous operation left) before this one started, ms. */
  settleMs?: number;
}

const TITLE = 'Registry (issue 3): `transship serve` vs Distribution, both pushed to and pulled from by skopeo';

export async function runRegistry(ctx: BenchContext): Promise<Section> {
  const date = new Date().toISOString();
  const unavailable = serveUnavailable();
  if (unavailable) {
    return {
      id: 'registry',
      title: TITLE,
      intro: [],
      rows: [],
      details: [],
      date,
      skipped: `${unavailable}. This group runs as soon as it does.`,
    };
  }
  const images = await ctx.images();
  const { layout } = images;
  const rows: Row[] = [];
  const details: string[] = [];
  const tsBucket = await ctx.createBucket('ts-registry');
  const distBucket = await ctx.createBucket('dist-registry');
  let dist: Distribution | undefined;
  let serve: Serve | undefined;
  let distRedirect: Distribution | undefined;
  let serveRedirect: Serve | undefined;
  let serveCold: Serve | undefined;
  try {
    dist = await startDistribution({
      s3: { endpoint: ctx.proxy.url, accessKeyId: ctx.rgw.accessKeyId, secretAccessKey: ctx.rgw.secretAccessKey, bucket: distBucket },
      signal: ctx.signal,
      log: ctx.log,
    });
    serve = await startServe(ctx, `s3://${tsBucket}/reg`);
    const contenders: Contender[] = [
      { name: 'transship', host: serve.host, pid: serve.pid },
      { name: 'distribution', host: dist.host, pid: dist.pid },
    ];
    // The same bucket through an instance without the local blob cache: every pull reads S3, as Distribution's do.
    serveCold = await startServe(ctx, `s3://${tsBucket}/reg`, ['--blob-cache-max-bytes', '0']);
    const cold: Contender = { name: 'transship', host: serveCold.host, pid: serveCold.pid };
    const rgwPids = clusterPids(ctx.rgw.dir);
    /** Runs `fn` and adds the CPU the registry and RGW spent meanwhile. */
    const withCpu = async (c: Contender, fn: () => Promise<Op>): Promise<Op> => {
      const settleMs = await waitForIdle(rgwPids);
      const cpu0 = processCpuMs(c.pid);
      const rgw0 = rgwPids.reduce((n, p) => n + processCpuMs(p), 0);
      const relay0 = processCpuMs(ctx.proxy.pid);
      const op = await fn();
      return {
        ...op,
        cpuMs: processCpuMs(c.pid) - cpu0,
        backendCpuMs: rgwPids.reduce((n, p) => n + processCpuMs(p), 0) - rgw0,
        relayCpuMs: processCpuMs(ctx.proxy.pid) - relay0,
        settleMs,
      };
    };

    const push = async (c: Contender, tag: string, ref: string): Promise<Op> => withCpu(c, async () => {
      const { result, s3, requests } = await ctx.countS3(() => ctx.skopeo(['copy', ...PUSH_FLAGS, `oci:${layout}:${tag}`, `docker://${c.host}/${ref}`]));
      check(result);
      return { wallMs: result.wallMs, s3, requests };
    });
    let pulls = 0;
    const pull = async (c: Contender, ref: string, bytes: number): Promise<Op> => withCpu(c, async () => {
      const dir = join(ctx.work, `pull-${c.name}-${pulls++}`);
      try {
        const { result, s3, requests } = await ctx.countS3(() => ctx.skopeo(['copy', ...PULL_FLAGS, `docker://${c.host}/${ref}`, `oci:${dir}:x`]));
        check(result);
        return { wallMs: result.wallMs, s3, requests, bytes };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
    /** Runs `fn` for both contenders, transship first on even rounds and Distribution first on odd ones. */
    const both = async (what: string, fn: (c: Contender) => Promise<Op>, round = 0): Promise<Record<Contender['name'], Op>> => {
      ctx.log(`registry: ${what}`);
      const out: Partial<Record<Contender['name'], Op>> = {};
      for (const c of round % 2 === 0 ? contenders : [...contenders].reverse()) out[c.name] = await fn(c);
      return out as Record<Contender['name'], Op>;
    };
    /** `both`, ctx.rounds times. */
    const repeated = async (what: string, fn: (c: Contender, round: number) => Promise<Op>): Promise<Record<Contender['name'], Op[]>> => {
      const out: Record<Contender['name'], Op[]> = { transship: [], distribution: [] };
      for (let round = 0; round < ctx.rounds; round++) {
        const r = await both(`${what} (round ${round + 1}/${ctx.rounds})`, (c) => fn(c, round), round);
        out.transship.push(r.transship);
        out.distribution.push(r.distribution);
      }
      return out;
    };

    // ---- pushes: S3 requests ----
    const pushes = [
      { name: 'push a fresh image (3 × 10 MiB layers + config)', tag: 'a', ref: 'app:a' },
      { name: 'push an image sharing 2 of its layers (same repository)', tag: 'b', ref: 'app:b' },
      { name: 'cross-repository push (the first image to a new repository)', tag: 'a', ref: 'other:a' },
      { name: 'identical re-push of the first image', tag: 'a', ref: 'app:a' },
    ];
    details.push('### Pushes and pulls: every request, by operation', '');
    details.push('| scenario | contender | S3 requests | by operation | wall time | registry CPU / RGW CPU / relay CPU | waited for RGW to go idle first |', '| --- | --- | --- | --- | --- | --- | --- |');
    const traces: string[] = [];
    for (const p of pushes) {
      const r = await both(p.name, (c) => push(c, p.tag, p.ref));
      traces.push(`${p.name}:`, '', '```', ...requestLines(r.transship.requests), '```', '');
      const ratio = r.transship.s3.total / r.distribution.s3.total;
      rows.push({
        scenario: `${p.name} — S3 requests`,
        transship: String(r.transship.s3.total),
        peer: `${r.distribution.s3.total} (Distribution)`,
        ratio: fmt.ratio(ratio),
        target: '≤ 0.1×',
        met: ratio <= 0.1,
      });
      for (const c of contenders) details.push(detailRow(p.name, c.name, r[c.name]));
    }

    // ---- pulls of the small image, and 50 concurrent blob GETs ----
    const aBytes = images.a.blobs.reduce((n, b) => n + b.size, 0) + images.a.root.descriptor.size;
    const pullA = await repeated('pull the first image with skopeo', (c) => pull(c, 'app:a', aBytes));
    rows.push(throughputRow(`pull the first image (skopeo → OCI layout) — throughput (median of ${ctx.rounds})`, pullA));
    details.push(...detailRows('pull the first image', pullA));
    const pullACold: Op[] = [];
    for (let round = 0; round < ctx.rounds; round++) pullACold.push(await pull(cold, 'app:a', aBytes));
    rows.push(coldRow(`cache off: pull the first image — throughput (median of ${ctx.rounds})`, pullACold, pullA.distribution));
    details.push(...pullACold.map((op, i) => detailRow(`pull the first image, round ${i + 1}`, 'transship, cache off', op)));

    const layers = images.a.layers.map((l) => ({ digest: l.digest, size: l.size }));
    const gets = await repeated(`${CONCURRENT_GETS} concurrent blob GETs`, async (c) => {
      return withCpu(c, async () => {
        const { result, s3, requests } = await ctx.countS3(() => concurrentGets(c.host, 'app', layers, CONCURRENT_GETS));
        return { wallMs: result.wallMs, s3, requests, bytes: result.bytes };
      });
    });
    rows.push(throughputRow(`${CONCURRENT_GETS} concurrent blob GETs (10 MiB layers) — throughput (median of ${ctx.rounds})`, gets));
    details.push(...detailRows(`${CONCURRENT_GETS} concurrent blob GETs`, gets));
    const getsCold: Op[] = [];
    for (let round = 0; round < ctx.rounds; round++) {
      getsCold.push(await withCpu(cold, async () => {
        const { result, s3, requests } = await ctx.countS3(() => concurrentGets(cold.host, 'app', layers, CONCURRENT_GETS));
        return { wallMs: result.wallMs, s3, requests, bytes: result.bytes };
      }));
    }
    rows.push(coldRow(`cache off: ${CONCURRENT_GETS} concurrent blob GETs — throughput (median of ${ctx.rounds})`, getsCold, gets.distribution));
    details.push(...getsCold.map((op, i) => detailRow(`${CONCURRENT_GETS} concurrent blob GETs, round ${i + 1}`, 'transship, cache off', op)));

    // ---- the same pulls with both registries redirecting blob GETs to presigned S3 URLs ----
    // Distribution's default and transship's `--redirect`: the bytes go from S3 (through the same counting proxy)
    // to the client, not through the registry. A second instance of each serves the same bucket.
    distRedirect = await startDistribution({
      s3: { endpoint: ctx.proxy.url, accessKeyId: ctx.rgw.accessKeyId, secretAccessKey: ctx.rgw.secretAccessKey, bucket: distBucket },
      redirect: true,
      signal: ctx.signal,
      log: ctx.log,
    });
    serveRedirect = await startServe(ctx, `s3://${tsBucket}/reg`, ['--redirect']);
    const redirecting: Contender[] = [
      { name: 'transship', host: serveRedirect.host, pid: serveRedirect.pid },
      { name: 'distribution', host: distRedirect.host, pid: distRedirect.pid },
    ];
    const pick = (c: Contender): Contender => redirecting.find((r) => r.name === c.name) as Contender;
    const pullAR = await repeated('pull the first image with skopeo, redirect mode', (c) => pull(pick(c), 'app:a', aBytes));
    rows.push({ ...throughputRow(`redirect mode: pull the first image — throughput (median of ${ctx.rounds})`, pullAR), target: 'report', met: undefined });
    details.push(...detailRows('redirect mode: pull the first image', pullAR));
    const getsR = await repeated(`${CONCURRENT_GETS} concurrent blob GETs, redirect mode`, async (c) => {
      return withCpu(pick(c), async () => {
        const { result, s3, requests } = await ctx.countS3(() => concurrentGets(pick(c).host, 'app', layers, CONCURRENT_GETS));
        return { wallMs: result.wallMs, s3, requests, bytes: result.bytes };
      });
    });
    rows.push({ ...throughputRow(`redirect mode: ${CONCURRENT_GETS} concurrent blob GETs — throughput (median of ${ctx.rounds})`, getsR), target: 'report', met: undefined });
    details.push(...detailRows(`redirect mode: ${CONCURRENT_GETS} concurrent blob GETs`, getsR));

    // ---- one 256 MiB layer per round (new bytes each time): push wall time, then pull it back ----
    const bigPush: Record<Contender['name'], Op[]> = { transship: [], distribution: [] };
    const bigPull: Record<Contender['name'], Op[]> = { transship: [], distribution: [] };
    const bigPullR: Record<Contender['name'], Op[]> = { transship: [], distribution: [] };
    const bigPullCold: Op[] = [];
    // Warm-up, not in the medians (its numbers are in the details): the first 256 MiB push into a fresh process
    // and a fresh RGW pool costs both sides ~25 % more (JIT, heap growth, RGW's first large writes) than every later
    // one, which is not what a registry that has been running does.
    const warm = await both('push one 256 MiB layer (warm-up, not measured)', (c) => push(c, 'big-' + String(ctx.rounds), 'big:warmup'));
    details.push(...['transship', 'distribution'].map((name) => detailRow('push one 256 MiB layer, warm-up (not in the medians)', name, warm[name as Contender['name']])));
    await ctx.reclaim(tsBucket);
    await ctx.reclaim(distBucket);
    for (let round = 0; round < ctx.rounds; round++) {
      const image = images.bigs[round];
      if (!image) throw new Error(`no 256 MiB image for round ${round}`);
      const pushed = await both(`push one 256 MiB layer (round ${round + 1}/${ctx.rounds})`, (c) => push(c, `big-${round}`, `big:${round}`), round);
      const bytes = image.blobs.reduce((n, b) => n + b.size, 0) + image.root.descriptor.size;
      const pulled = await both(`pull the 256 MiB image (round ${round + 1}/${ctx.rounds})`, (c) => pull(c, `big:${round}`, bytes), round);
      const pulledR = await both(`pull the 256 MiB image, redirect mode (round ${round + 1}/${ctx.rounds})`, (c) => pull(pick(c), `big:${round}`, bytes), round);
      ctx.log(`registry: pull the 256 MiB image, cache off (round ${round + 1}/${ctx.rounds})`);
      bigPullCold.push(await pull(cold, `big:${round}`, bytes));
      for (const name of ['transship', 'distribution'] as const) {
        bigPush[name].push(pushed[name]);
        bigPull[name].push(pulled[name]);
        bigPullR[name].push(pulledR[name]);
      }
      // Frees RGW's memory; every later round pushes new digests, so no registry's presence cache is misled.
      await ctx.reclaim(tsBucket);
      await ctx.reclaim(distBucket);
    }
    const tsPush = median(bigPush.transship.map((o) => o.wallMs));
    const distPush = median(bigPush.distribution.map((o) => o.wallMs));
    rows.push({
      scenario: `push one 256 MiB layer — wall time (median of ${ctx.rounds})`,
      transship: fmt.ms(tsPush),
      peer: `${fmt.ms(distPush)} (Distribution)`,
      ratio: fmt.ratio(tsPush / distPush),
      target: '≤ 0.33×',
      met: tsPush / distPush <= 1 / 3,
    });
    const firstPush = { transship: bigPush.transship[0] as Op, distribution: bigPush.distribution[0] as Op };
    rows.push({
      scenario: 'push one 256 MiB layer — S3 requests',
      transship: String(firstPush.transship.s3.total),
      peer: `${firstPush.distribution.s3.total} (Distribution)`,
      ratio: fmt.ratio(firstPush.transship.s3.total / firstPush.distribution.s3.total),
      target: 'report',
      met: undefined,
    });
    rows.push(cpuRow('push one 256 MiB layer — CPU of the registry process (median)', bigPush, (o) => o.cpuMs));
    rows.push(cpuRow('push one 256 MiB layer — CPU of RGW caused by it (median)', bigPush, (o) => o.backendCpuMs));
    details.push(...detailRows('push one 256 MiB layer', bigPush));
    traces.push('push one 256 MiB layer (round 1):', '', '```', ...requestLines(firstPush.transship.requests), '```', '');
    rows.push(throughputRow(`pull the 256 MiB image (skopeo → OCI layout) — throughput (median of ${ctx.rounds})`, bigPull));
    rows.push(cpuRow('pull the 256 MiB image — CPU of the registry process (median)', bigPull, (o) => o.cpuMs));
    details.push(...detailRows('pull the 256 MiB image', bigPull));
    rows.push(coldRow(`cache off: pull the 256 MiB image — throughput (median of ${ctx.rounds})`, bigPullCold, bigPull.distribution));
    rows.push(cpuRow('cache off: pull the 256 MiB image — CPU of the registry process (median)', { transship: bigPullCold, distribution: bigPull.distribution }, (o) => o.cpuMs));
    details.push(...bigPullCold.map((op, i) => detailRow(`pull the 256 MiB image, round ${i + 1}`, 'transship, cache off', op)));
    rows.push({ ...throughputRow(`redirect mode: pull the 256 MiB image — throughput (median of ${ctx.rounds})`, bigPullR), target: 'report', met: undefined });
    details.push(...detailRows('redirect mode: pull the 256 MiB image', bigPullR));
    details.push('');
    details.push(
      '- Throughput rows: ratio = transship ÷ Distribution in MB/s (higher is better; target ≥ 1×). Pull wall time is ' +
        'skopeo\'s whole run (process start, manifest, blobs, writing the layout).',
      `- \`transship serve\` peak RSS over the whole group: ${serve.peakRss() ? fmt.mib(serve.peakRss() ?? 0) : 'n/a'}.`,
      '',
    );
    details.push('#### transship serve\'s S3 requests, in order', '', ...traces);
    details.push(...peerNotes(dist));
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(serve ? `${message}\n--- tail of the transship serve log ---\n${serve.logTail()}` : message, { cause: err });
  } finally {
    await serve?.stop();
    await dist?.stop();
    await serveRedirect?.stop();
    await serveCold?.stop();
    await distRedirect?.stop();
    await ctx.reclaim(tsBucket).catch(() => {});
    await ctx.reclaim(distBucket).catch(() => {});
  }
  return {
    id: 'registry',
    title: TITLE,
    intro: [
      '`transship serve --store s3://BUCKET/reg --listen 127.0.0.1:PORT` and Distribution 2.8 (s3 driver) run side by side on the ' +
        'same RGW behind the same counting proxy; skopeo pushes (`oci:` → `docker://`) and pulls (`docker://` → `oci:`) the same ' +
        'images to and from each, one scenario at a time (transship first; in repeated timings the order alternates per round). ' +
        '"Ratio" is transship ÷ Distribution. Each 256 MiB round pushes a new layer, so nothing is deduplicated away; one unmeasured warm-up push of another ' +
        '256 MiB layer comes first on both sides (its numbers are in the details). Every operation starts once the RGW ' +
        'cluster is idle (under 5 % of a core for 250 ms; at most 5 s, the wait is in the details), so background work one ' +
        'contender left in the shared backend is not charged to the other. `serve` runs with the glibc malloc settings ' +
        'deploy/ ships (MALLOC_TRIM_THRESHOLD_=64 MiB, MALLOC_MMAP_THRESHOLD_=4 MiB; src/server/malloc.ts).',
      '`transship serve` runs as configured by default: on an S3 store it keeps blobs it received or served in a local disk ' +
        'cache (`serve.blobCache`, 2 GiB, LRU) and answers GETs of them from there, so the pull rows read what the pushes ' +
        'before them left on its disk (one instance, as in a single-instance deployment). The "cache off" rows pull the same ' +
        'images through a second instance with `--blob-cache-max-bytes 0`: every byte comes from S3, as for Distribution and for ' +
        'an instance that has not seen a blob yet.',
    ],
    rows,
    details,
    date,
  };
}

function detailRow(scenario: string, who: string, op: Op): string {
  const rate = op.bytes !== undefined ? ` (${fmt.rate(op.bytes, op.wallMs)})` : '';
  const cpu = op.cpuMs !== undefined ? `${fmt.ms(op.cpuMs)} / ${fmt.ms(op.backendCpuMs ?? 0)} / ${fmt.ms(op.relayCpuMs ?? 0)}` : '—';
  return `| ${scenario} | ${who} | ${op.s3.total} | ${fmt.ops(op.s3.byOperation)} | ${fmt.ms(op.wallMs)}${rate} | ${cpu} | ${op.settleMs !== undefined ? fmt.ms(op.settleMs) : '—'} |`;
}

function detailRows(scenario: string, r: Record<Contender['name'], Op[]>): string[] {
  const out: string[] = [];
  for (let i = 0; i < r.transship.length; i++) {
    for (const name of ['transship', 'distribution'] as const) {
      const op = r[name][i];
      if (op) out.push(detailRow(`${scenario}, round ${i + 1}`, name, op));
    }
  }
  return out;
}

/** Median CPU time of each side (a report row: on 2 cores, CPU is what bounds the wall time of a push). */
function cpuRow(scenario: string, r: Record<Contender['name'], Op[]>, pick: (o: Op) => number | undefined): Row {
  const ts = median(r.transship.map((o) => pick(o) ?? 0));
  const dist = median(r.distribution.map((o) => pick(o) ?? 0));
  return { scenario, transship: fmt.ms(ts), peer: `${fmt.ms(dist)} (Distribution)`, ratio: fmt.ratio(ts / dist), target: 'report', met: undefined };
}

/** The RGW test cluster's processes (radosgw, OSD, monitor, manager): their command lines name its directory. */
function clusterPids(dir: string): number[] {
  const out = spawnSync('pgrep', ['-f', dir], { encoding: 'utf8' }).stdout;
  return out.split('\n').map(Number).filter((p) => p > 0 && p !== process.pid);
}

/** A report row: transship without its blob cache (every pull reads S3) against the same Distribution pulls. */
function coldRow(scenario: string, coldOps: Op[], dist: Op[]): Row {
  return { ...throughputRow(scenario, { transship: coldOps, distribution: dist }), target: 'report', met: undefined };
}

/** Median throughput of each side; ratio = transship ÷ Distribution (higher is better). */
function throughputRow(scenario: string, r: Record<Contender['name'], Op[]>): Row {
  const rate = (ops: Op[]) => median(ops.map((o) => (o.bytes ?? 0) / 1e6 / (o.wallMs / 1000)));
  const ts = rate(r.transship);
  const dist = rate(r.distribution);
  return {
    scenario,
    transship: `${ts.toFixed(0)} MB/s`,
    peer: `${dist.toFixed(0)} MB/s (Distribution)`,
    ratio: fmt.ratio(ts / dist),
    target: '≥ 1× (throughput)',
    met: ts / dist >= 1,
  };
}

/** `count` GETs of the given blobs (round robin), all in flight at once; checks every body's length. */
async function concurrentGets(host: string, repo: string, blobs: Array<{ digest: string; size: number }>, count: number): Promise<{ wallMs: number; bytes: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: count });
  const started = process.hrtime.bigint();
  try {
    const sizes = await Promise.all(
      Array.from({ length: count }, (_, i) => {
        const blob = blobs[i % blobs.length] as { digest: string; size: number };
        const get = (url: string, hops: number): Promise<number> => new Promise<number>((resolve, reject) => {
          const req = request(url, { agent }, (res) => {
            const location = res.headers.location;
            if (res.statusCode === 307 && location && hops < 1) {
              res.resume();
              resolve(get(location, hops + 1));
              return;
            }
            let n = 0;
            res.on('data', (chunk: Buffer) => (n += chunk.length));
            res.once('error', reject);
            res.once('end', () => {
              if (res.statusCode !== 200) reject(new Error(`GET ${blob.digest} from ${host}: HTTP ${res.statusCode}`));
              else if (n !== blob.size) reject(new Error(`GET ${blob.digest} from ${host}: ${n} bytes, expected ${blob.size}`));
              else resolve(n);
            });
          });
          req.once('error', reject);
          req.end();
        });
        return get(`http://${host}/v2/${repo}/blobs/${blob.digest}`, 0);
      }),
    );
    return { wallMs: Number(process.hrtime.bigint() - started) / 1e6, bytes: sizes.reduce((a, b) => a + b, 0) };
  } finally {
    agent.destroy();
  }
}

export interface Serve {
  host: string;
  pid: number | undefined;
  peakRss(): number | undefined;
  logTail(): string;
  stop(): Promise<void>;
}

/** Starts `transship serve` as its own process (group) and waits for `/v2/`; `stop()` ends exactly that group. */
export async function startServe(ctx: BenchContext, store: string, extraArgs: string[] = []): Promise<Serve> {
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const logFile = join(ctx.work, 'serve.log');
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    // Its own upload dir, so its blob cache (<uploadDir>/transship-blob-cache) starts empty and dies with the run.
    const uploads = join(ctx.work, `serve-uploads-${port}`);
    child = spawn(process.execPath, [TRANSSHIP_BIN, 'serve', '--store', store, '--listen', host, '--upload-dir', uploads, ...extraArgs], {
      // glibc malloc settings as deploy/ ships them (src/server/malloc.ts).
      env: { ...ctx.transshipEnv(), ...SERVE_MALLOC_ENV },
      cwd: ctx.work,
      stdio: ['ignore', fd, fd],
      detached: true,
    });
  } finally {
    closeSync(fd);
  }
  let exit: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, sig) => {
      exit = sig ?? `exit code ${code}`;
      resolve();
    });
    child.once('error', (err) => {
      exit = err.message;
      resolve();
    });
  });
  let hwm: number | undefined;
  const sample = () => {
    hwm = Math.max(hwm ?? 0, readHwm(child.pid) ?? 0) || hwm;
  };
  const sampler = setInterval(sample, 200);
  const logTail = () => {
    try {
      return readFileSync(logFile, 'utf8').slice(-3000);
    } catch {
      return '(no log)';
    }
  };
  const stop = async () => {
    clearInterval(sampler);
    if (exit !== undefined || child.pid === undefined) return;
    sample();
    const pid = child.pid;
    const kill = (sig: NodeJS.Signals) => {
      try {
        process.kill(-pid, sig);
      } catch {
        // Already gone.
      }
    };
    kill('SIGTERM');
    const timer = setTimeout(() => kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exit !== undefined) {
      clearInterval(sampler);
      throw new Error(`transship serve exited during startup (${exit}):\n${logTail()}`);
    }
    if ((await httpStatus(`http://${host}/v2/`)) === 200) break;
    if (Date.now() > deadline || ctx.signal.aborted) {
      await stop();
      throw new Error(`transship serve did not answer on http://${host}/v2/ in time:\n${logTail()}`);
    }
    await sleep(100);
  }
  ctx.log(`registry: transship serve on ${host} (pid ${child.pid})`);
  return { host, pid: child.pid, peakRss: () => hwm, logTail, stop };
}

