// Transfer core (issue 2): `transship copy oci:… s3://…` against skopeo pushing the same OCI layout to Distribution
// (s3 driver) on the same RGW, and a raw single PutObject for the big-layer wall time. Request counts are taken at
// the counting proxy for both contenders; the CLI's own `--json` count is reported next to it as a cross-check.
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { startDistribution, type Distribution } from '../test/support/distribution.js';
import type { ProxyCounts, ProxyLogEntry } from '../test/support/s3-proxy.js';
import { PUSH_FLAGS, REPO_ROOT, buildSingleLayerImage, parseJsonSummary, requestLines, type BenchContext } from './context.js';
import { check, median, runMeasured, type Measured } from './measure.js';
import { fmt, type Row, type Section } from './report.js';

const MiB = 1024 * 1024;
const RSS_TARGET = 150e6;

interface CopySummary {
  blobs: { total: number; uploaded: number; skipped: Record<string, number> };
  bytes: { total: number; uploaded: number; skipped: number };
  requests: { total: number; byOperation: Record<string, number> };
  retries: number;
  elapsedMs: number;
}

interface CopyRun {
  wallMs: number;
  peakRss: number | undefined;
  cpuMs: number | undefined;
  s3: ProxyCounts;
  requests: ProxyLogEntry[];
  summary: CopySummary;
}

interface PushRun {
  wallMs: number;
  s3: ProxyCounts;
}

export async function runTransfer(ctx: BenchContext): Promise<Section> {
  const date = new Date().toISOString();
  const images = await ctx.images();
  const { layout } = images;
  const details: string[] = [];
  const rows: Row[] = [];

  // Warm-ups: tsx compiles the CLI once (cached afterwards), skopeo's first start loads its config. The second
  // `--version` is the CLI's baseline: a Node process with the loader and every module, doing nothing.
  check(await ctx.transship(['--version']));
  const idle = check(await ctx.transship(['--version']));
  check(await ctx.skopeo(['--version']));

  const tsBucket = await ctx.createBucket('ts-transfer');
  const distBucket = await ctx.createBucket('dist-transfer');
  const dist = await startDistribution({
    s3: { endpoint: ctx.proxy.url, accessKeyId: ctx.rgw.accessKeyId, secretAccessKey: ctx.rgw.secretAccessKey, bucket: distBucket },
    signal: ctx.signal,
    log: ctx.log,
  });
  try {
    const copy = async (tag: string, dest: string, cache: boolean): Promise<CopyRun> => {
      const args = ['copy', `oci:${layout}:${tag}`, dest, '--json', '--no-progress', ...(cache ? [] : ['--no-cache'])];
      const { result, s3, requests } = await ctx.countS3(() => ctx.transship(args));
      return { wallMs: result.wallMs, peakRss: result.peakRss, cpuMs: result.cpuMs, s3, requests, summary: parseJsonSummary<CopySummary>(result) };
    };
    const push = async (tag: string, ref: string): Promise<PushRun> => {
      const { result, s3 } = await ctx.countS3(() => ctx.skopeo(['copy', ...PUSH_FLAGS, `oci:${layout}:${tag}`, `docker://${dist.host}/${ref}`]));
      check(result);
      return { wallMs: result.wallMs, s3 };
    };

    // ---- request counts: fresh, shared, identical re-copy ----
    const scenarios = [
      { name: 'fresh image: 3 layers × 10 MiB + config', tag: 'a', target: 8 },
      { name: 'second image sharing 2 of those layers', tag: 'b', target: 6 },
      { name: 'identical re-copy of the second image', tag: 'b', target: 2 },
    ];
    const cold: CopyRun[] = [];
    const peer: PushRun[] = [];
    for (const s of scenarios) {
      ctx.log(`transfer: ${s.name}`);
      cold.push(await copy(s.tag, `s3://${tsBucket}/cold/app:${s.tag}`, false));
      peer.push(await push(s.tag, `app:${s.tag}`));
    }
    // The same sequence with the local presence cache on (its own prefix, so the store starts empty again).
    const warm: CopyRun[] = [];
    for (const s of scenarios) warm.push(await copy(s.tag, `s3://${tsBucket}/warm/app:${s.tag}`, true));

    scenarios.forEach((s, i) => {
      const c = cold[i] as CopyRun;
      const p = peer[i] as PushRun;
      rows.push({
        scenario: `${s.name} — S3 requests (cold cache)`,
        transship: String(c.s3.total),
        peer: `${p.s3.total} (Distribution)`,
        ratio: fmt.ratio(c.s3.total / p.s3.total),
        target: `≤ ${s.target}`,
        met: c.s3.total <= s.target,
      });
    });
    scenarios.forEach((s, i) => {
      const w = warm[i] as CopyRun;
      const p = peer[i] as PushRun;
      rows.push({
        scenario: `${s.name} — S3 requests (warm presence cache)`,
        transship: String(w.s3.total),
        peer: `${p.s3.total} (Distribution)`,
        ratio: fmt.ratio(w.s3.total / p.s3.total),
        target: 'report',
        met: undefined,
      });
    });
    details.push('### Small images: every request, by operation', '');
    details.push('| scenario | contender | S3 requests (proxy) | by operation | CLI\'s own count | retries | wall time | blobs uploaded / skipped |');
    details.push('| --- | --- | --- | --- | --- | --- | --- | --- |');
    scenarios.forEach((s, i) => {
      for (const [who, r] of [['transship, cold cache', cold[i]], ['transship, warm cache', warm[i]]] as const) {
        if (!r) continue;
        const skipped = Object.entries(r.summary.blobs.skipped).map(([k, v]) => `${v} ${k}`).join(', ') || '0';
        details.push(`| ${s.name} | ${who} | ${r.s3.total} | ${fmt.ops(r.s3.byOperation)} | ${r.summary.requests.total} | ${r.summary.retries} | ${fmt.ms(r.wallMs)} | ${r.summary.blobs.uploaded} / ${skipped} |`);
      }
      const p = peer[i] as PushRun;
      details.push(`| ${s.name} | skopeo → Distribution | ${p.s3.total} | ${fmt.ops(p.s3.byOperation)} | — | — | ${fmt.ms(p.wallMs)} | — |`);
    });
    details.push('');
    details.push('#### transship\'s requests, in order (cold cache)', '');
    scenarios.forEach((s, i) => {
      const c = cold[i] as CopyRun;
      details.push(`${s.name}:`, '', '```', ...requestLines(c.requests), '```', '');
    });
    const mismatches = [...cold, ...warm].filter((r) => r.summary.requests.total !== r.s3.total);
    if (mismatches.length) {
      details.push(`**Count mismatch:** the CLI's own request count differed from the proxy's in ${mismatches.length} run(s) ` +
        `(${mismatches.map((r) => `CLI ${r.summary.requests.total} vs proxy ${r.s3.total}`).join('; ')}).`, '');
    }
    await ctx.reclaim(tsBucket);

    // ---- one 256 MiB layer: transship, a raw PutObject and Distribution, each round with new bytes ----
    const rawBucket = await ctx.createBucket('raw-put');
    const raws: Array<{ wallMs: number; elapsedMs: number; cpuMs: number | undefined; s3: ProxyCounts }> = [];
    const bigs: CopyRun[] = [];
    const distBigs: PushRun[] = [];
    for (let round = 0; round < ctx.rounds; round++) {
      ctx.log(`transfer: 256 MiB layer, round ${round + 1}/${ctx.rounds}`);
      const image = images.bigs[round];
      const layer = image?.layers[0];
      if (!image || !layer) throw new Error(`no 256 MiB image for round ${round}`);
      const tag = `big-${round}`;
      const runs = [
        async () => {
          const file = join(layout, 'blobs', 'sha256', layer.digest.slice(7));
          const { result, s3 } = await ctx.countS3(() => runRaw(ctx, file, rawBucket, tag));
          const out = JSON.parse(check(result).stdout.trim()) as { elapsedMs: number };
          raws.push({ wallMs: result.wallMs, elapsedMs: out.elapsedMs, cpuMs: result.cpuMs, s3 });
        },
        async () => {
          bigs.push(await copy(tag, `s3://${tsBucket}/${tag}/app:big`, false));
        },
        async () => {
          distBigs.push(await push(tag, `big:${round}`));
        },
      ];
      // Rotate who goes first, so no contender always meets a freshly garbage-collected RGW.
      for (let k = 0; k < runs.length; k++) await (runs[(round + k) % runs.length] as () => Promise<void>)();
      for (const b of [tsBucket, rawBucket, distBucket]) await ctx.reclaim(b);
    }
    const bigLayer = images.bigs[0]?.layers[0];
    if (!bigLayer) throw new Error('big image has no layer');
    const tsWall = median(bigs.map((r) => r.wallMs));
    const rawWall = median(raws.map((r) => r.wallMs));
    const tsXfer = median(bigs.map((r) => r.summary.elapsedMs));
    const rawXfer = median(raws.map((r) => r.elapsedMs));
    const bytes = bigLayer.size;
    rows.push({
      scenario: `one 256 MiB layer — wall time, process start to exit (median of ${ctx.rounds})`,
      transship: `${fmt.ms(tsWall)} (${fmt.rate(bytes, tsWall)})`,
      peer: `${fmt.ms(rawWall)} (raw PutObject)`,
      ratio: fmt.ratio(tsWall / rawWall),
      target: '≤ 1.3×',
      met: tsWall / rawWall <= 1.3,
    });
    rows.push({
      scenario: `one 256 MiB layer — transfer time only, no process start (median of ${ctx.rounds})`,
      transship: `${fmt.ms(tsXfer)} (${fmt.rate(bytes, tsXfer)})`,
      peer: `${fmt.ms(rawXfer)} (raw PutObject)`,
      ratio: fmt.ratio(tsXfer / rawXfer),
      target: 'report',
      met: undefined,
    });
    const distWall = median(distBigs.map((r) => r.wallMs));
    rows.push({
      scenario: `one 256 MiB layer — wall time vs skopeo → Distribution (median of ${ctx.rounds})`,
      transship: fmt.ms(tsWall),
      peer: `${fmt.ms(distWall)} (Distribution)`,
      ratio: fmt.ratio(tsWall / distWall),
      target: 'report',
      met: undefined,
    });
    const bigRun = bigs[0] as CopyRun;
    const distBig = distBigs[0] as PushRun;
    rows.push({
      scenario: 'one 256 MiB layer — S3 requests',
      transship: String(bigRun.s3.total),
      peer: `${distBig.s3.total} (Distribution); ${raws[0]?.s3.total ?? '?'} (raw)`,
      ratio: fmt.ratio(bigRun.s3.total / distBig.s3.total),
      target: 'report',
      met: undefined,
    });
    details.push('### One 256 MiB layer, every round', '');
    details.push('| round | contender | wall time | transfer time | CPU time (user+sys) | peak RSS | retries | S3 requests (proxy) |', '| --- | --- | --- | --- | --- | --- | --- | --- |');
    for (let i = 0; i < ctx.rounds; i++) {
      const r = raws[i];
      const t = bigs[i];
      if (r) details.push(`| ${i + 1} | raw PutObject | ${fmt.ms(r.wallMs)} | ${fmt.ms(r.elapsedMs)} | ${cpu(r.cpuMs)} | — | — | ${r.s3.total} (${fmt.ops(r.s3.byOperation)}) |`);
      if (t) details.push(`| ${i + 1} | transship copy | ${fmt.ms(t.wallMs)} | ${fmt.ms(t.summary.elapsedMs)} | ${cpu(t.cpuMs)} | ${rss(t.peakRss)} | ${t.summary.retries} | ${t.s3.total} (${fmt.ops(t.s3.byOperation)}) |`);
      const d = distBigs[i];
      if (d) details.push(`| ${i + 1} | skopeo → Distribution | ${fmt.ms(d.wallMs)} | — | — | — | — | ${d.s3.total} (${fmt.ops(d.s3.byOperation)}) |`);
    }
    details.push('');
    details.push('transship\'s requests for the 256 MiB layer (round 1), in order:', '', '```', ...requestLines(bigRun.requests), '```', '');

    // ---- peak RSS while copying a 1 GiB layer ----
    ctx.log('transfer: 1 GiB layer (peak RSS)');
    const hugeDir = join(ctx.work, 'huge');
    await buildSingleLayerImage(hugeDir, 'huge', 1024 * MiB);
    let huge: CopyRun;
    try {
      const { result, s3 } = await ctx.countS3(() =>
        ctx.transship(['copy', `oci:${hugeDir}:t`, `s3://${tsBucket}/huge/app:t`, '--json', '--no-progress', '--no-cache']));
      huge = { wallMs: result.wallMs, peakRss: result.peakRss, cpuMs: result.cpuMs, s3, requests: [], summary: parseJsonSummary<CopySummary>(result) };
    } finally {
      await rm(hugeDir, { recursive: true, force: true });
      await ctx.reclaim(tsBucket);
    }
    rows.push({
      scenario: 'peak RSS of `transship copy` while copying a 1 GiB layer',
      transship: rss(huge.peakRss),
      peer: '—',
      ratio: '—',
      target: '≤ 150 MB',
      met: huge.peakRss !== undefined && huge.peakRss <= RSS_TARGET,
    });
    rows.push({
      scenario: 'peak RSS of `transship --version` (baseline: Node and every module, compiled, no work)',
      transship: `${rss(idle.peakRss)}, ${fmt.ms(idle.wallMs)}`,
      peer: '—',
      ratio: '—',
      target: 'report',
      met: undefined,
    });
    const bigRss = bigs.map((b) => b.peakRss ?? 0);
    details.push('### Memory', '');
    details.push(
      `- 1 GiB layer: peak RSS ${rss(huge.peakRss)}, wall ${fmt.ms(huge.wallMs)} (${fmt.rate(huge.summary.bytes.total, huge.wallMs)}), ` +
        `${huge.s3.total} S3 requests (${fmt.ops(huge.s3.byOperation)}), ${huge.summary.retries} retries.`,
      `- 256 MiB layer: peak RSS ${bigRss.map((b) => rss(b)).join(', ')}.`,
      '- Peak RSS is the CLI process\'s ru_maxrss (GNU time `%M`), which includes Node itself and the tsx loader ' +
        'the bin uses to run the TypeScript sources.',
      '',
    );
    details.push(...peerNotes(dist));
  } finally {
    await dist.stop();
  }
  return {
    id: 'transfer',
    title: 'Transfer core (issue 2): `transship copy` vs skopeo → Distribution',
    intro: [
      'transship: `transship copy oci:LAYOUT:TAG s3://BUCKET/PREFIX/app:TAG --json --no-cache` (a new Node process per copy). ' +
        'Peer: `skopeo copy oci:LAYOUT:TAG docker://DISTRIBUTION/app:TAG` into Distribution 2.8 with its s3 driver. ' +
        'Both write to the same RGW through the same counting proxy. Layers are uncompressed random data, so sizes are real. ' +
        '"Ratio" is transship ÷ peer (lower is better). For the big layer the peer is a single raw PutObject of the same ' +
        `file (@aws-sdk/client-s3, no checksums, its own Node process); ${ctx.rounds} rounds, each with a new 256 MiB layer, ` +
        'rotating who goes first; medians reported.',
    ],
    rows,
    details,
    date,
  };
}

function cpu(ms: number | undefined): string {
  return ms === undefined ? 'n/a' : fmt.ms(ms);
}

function rss(bytes: number | undefined): string {
  return bytes === undefined ? 'n/a' : `${(bytes / 1e6).toFixed(0)} MB (${fmt.mib(bytes)})`;
}

function runRaw(ctx: BenchContext, file: string, bucket: string, key: string): Promise<Measured> {
  // cwd = the repository, so `--import tsx` resolves the project's own tsx.
  return runMeasured(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', 'raw-put.ts'), file, bucket, key], {
    env: ctx.transshipEnv(),
    cwd: REPO_ROOT,
    signal: ctx.signal,
  });
}

export function peerNotes(dist: Distribution): string[] {
  return [
    '### Peer setup',
    '',
    `- Distribution ${dist.host}: Debian docker-registry 2.8.2, \`storage.s3\` with \`regionendpoint\` = the counting proxy ` +
      '(path-style follows from it in 2.8), `secure: false`, `v4auth: true`, `storage.cache.blobdescriptor: inmemory` (the packaged ' +
      'default), `redirect.disable: true` (it serves blob bytes itself, as transship does), upload purging and the storage ' +
      'health check off (no background S3 traffic during a measurement), default 10 MiB chunk size. See test/support/distribution.ts.',
    '- skopeo pushes with `--dest-tls-verify=false --preserve-digests` (plain HTTP on loopback; without `--preserve-digests` skopeo gzips every uncompressed layer on the way, charging seconds of CPU per 256 MiB to the registry being measured) and pulls with `--preserve-digests --dest-oci-accept-uncompressed-layers`; its blob-info cache (/var/lib/containers/cache) ' +
      'is the system one, keyed by registry host:port, and each run uses new ports, so it only knows what this run pushed.',
    '',
  ];
}
