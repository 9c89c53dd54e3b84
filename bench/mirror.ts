// Mirror (issue 18): 8 concurrent clients pull one uncached image (3 layers, one of 256 MiB) through `transship
// serve` with a `mirror:` upstream and through Distribution in proxy mode (`proxy.remoteurl`), both in front of the
// same upstream (Distribution, filesystem storage), each behind its own counting proxy so upstream requests and
// bytes are counted where they arrive. Then the same 8 pulls again, warm. Both mirrors store on local disk (fs store,
// filesystem driver): this measures the mirror, not S3.
//
// A client is a plain HTTP puller (manifest, then its blobs in parallel, bodies read and discarded), so time to first
// byte of the large layer is measured as clients see it; skopeo and containerd pulls are in the integration test.
import { spawn } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startDistribution, type Distribution } from '../test/support/distribution.js';
import { startCountingProxy, type CountingProxy } from '../test/support/counting-proxy.js';
import { makeOciLayout } from '../test/support/images.js';
import { PUSH_FLAGS, TRANSSHIP_BIN, type BenchContext } from './context.js';
import { check, median } from './measure.js';
import { fmt, type Row, type Section } from './report.js';

const CLIENTS = 8;
const BIG_MIB = Number(process.env.MIRROR_BENCH_BIG_MIB ?? 256);

interface Pull {
  /** Time to first byte of the large layer, ms from the start of the pull. */
  ttfbMs: number;
  totalMs: number;
  bytes: number;
}

interface Round {
  pulls: Pull[];
  wallMs: number;
  upstreamRequests: number;
  upstreamBytes: number;
}

const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

async function pull(base: string, repo: string, big: string): Promise<Pull> {
  const started = performance.now();
  const m = await fetch(`${base}/v2/${repo}/manifests/v1`, { headers: { accept: ACCEPT } });
  if (!m.ok) throw new Error(`manifest: HTTP ${m.status} from ${base}`);
  const manifest = (await m.json()) as { config: { digest: string }; layers: Array<{ digest: string }> };
  let ttfbMs = Number.NaN;
  let bytes = 0;
  await Promise.all(
    [manifest.config, ...manifest.layers].map(async ({ digest }) => {
      const r = await fetch(`${base}/v2/${repo}/blobs/${digest}`);
      if (!r.ok || !r.body) throw new Error(`blob ${digest}: HTTP ${r.status} from ${base}`);
      const reader = r.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (digest === big && Number.isNaN(ttfbMs)) ttfbMs = performance.now() - started;
        bytes += value.byteLength;
      }
    }),
  );
  return { ttfbMs, totalMs: performance.now() - started, bytes };
}

async function round(base: string, repo: string, big: string, proxy: CountingProxy): Promise<Round> {
  proxy.reset();
  const started = performance.now();
  const pulls = await Promise.all(Array.from({ length: CLIENTS }, () => pull(base, repo, big)));
  return { pulls, wallMs: performance.now() - started, upstreamRequests: [...proxy.counts.values()].reduce((a, b) => a + b, 0), upstreamBytes: proxy.bytes };
}

export async function runMirror(ctx: BenchContext): Promise<Section> {
  const work = join(ctx.work, 'mirror');
  await mkdir(work, { recursive: true });
  const cleanups: Array<() => Promise<unknown>> = [];
  try {
    const upstream: Distribution = await startDistribution({ signal: ctx.signal, log: ctx.log });
    cleanups.push(() => upstream.stop());
    ctx.log(`mirror: building the image (${BIG_MIB} MiB + 4 MiB + 64 KiB layers)`);
    const img = await makeOciLayout(join(work, 'image'), {
      tag: 'v1',
      layers: [{ size: BIG_MIB * 1024 * 1024, seed: 'mirror-bench-big', gzip: false }, { size: 4 * 1024 * 1024, seed: 'mirror-bench-2', gzip: false }, { size: 64 * 1024, seed: 'mirror-bench-3', gzip: false }],
      seed: 'mirror-bench',
    });
    check(await ctx.skopeo(['copy', ...PUSH_FLAGS, `oci:${img.path}:v1`, `docker://${upstream.host}/team/big:v1`]));
    const big = img.layers.reduce((a, b) => (b.size > a.size ? b : a)).digest;
    const imageBytes = img.blobs.reduce((a, b) => a + b.size, 0);

    // transship: a mirror of the upstream through its counting proxy.
    const tProxy = await startCountingProxy(upstream.url);
    cleanups.push(() => tProxy.stop());
    const config = join(work, 'transship.yaml');
    await writeFile(config, JSON.stringify({ mirror: { upstreams: [{ registry: tProxy.host, url: tProxy.url, prefix: 'upstream' }] } }));
    const tStore = join(work, 'transship-store');
    const serve = spawn(process.execPath, [TRANSSHIP_BIN, 'serve', '--store', `dir:${tStore}`, '--listen', '127.0.0.1:0', '--config', config, '--upload-dir', work], {
      env: { ...ctx.transshipEnv(), TRANSSHIP_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    cleanups.push(async () => {
      serve.kill('SIGTERM');
      await new Promise((resolve) => serve.once('exit', resolve));
    });
    const tUrl = await new Promise<string>((resolve, reject) => {
      let out = '';
      serve.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m?.[1]) resolve(m[1]);
      });
      serve.once('exit', (code) => reject(new Error(`transship serve exited (${code})`)));
    });

    // Distribution in proxy mode, in front of the same upstream through its own counting proxy.
    const dProxy = await startCountingProxy(upstream.url);
    cleanups.push(() => dProxy.stop());
    const dist = await startDistribution({ proxyRemoteUrl: dProxy.url, signal: ctx.signal, log: ctx.log });
    cleanups.push(() => dist.stop());

    ctx.log('mirror: transship cold');
    const counts = (p: CountingProxy) => [...p.counts].map(([k, v]) => `${k.replace(/sha256:([0-9a-f]{12})[0-9a-f]+/, 'sha256:$1…')} ×${v}`).join(', ');
    const tCold = await round(tUrl, 'upstream/team/big', big, tProxy);
    const tColdCounts = counts(tProxy);
    ctx.log('mirror: distribution cold');
    const dCold = await round(dist.url, 'team/big', big, dProxy);
    const dColdCounts = counts(dProxy);
    ctx.log('mirror: transship warm');
    const tWarm = await round(tUrl, 'upstream/team/big', big, tProxy);
    ctx.log('mirror: distribution warm');
    const dWarm = await round(dist.url, 'team/big', big, dProxy);
    for (const r of [tCold, dCold, tWarm, dWarm]) for (const p of r.pulls) if (p.bytes !== imageBytes) throw new Error(`a client read ${p.bytes} bytes, the image has ${imageBytes}`);

    const ttfb = (r: Round) => median(r.pulls.map((p) => p.ttfbMs));
    const rows: Row[] = [
      { scenario: `cold: upstream body bytes (8 clients, image ${fmt.mib(imageBytes)})`, transship: fmt.mb(tCold.upstreamBytes), peer: fmt.mb(dCold.upstreamBytes), ratio: fmt.ratio(tCold.upstreamBytes / dCold.upstreamBytes), target: 'transship = 1× the image', met: tCold.upstreamBytes <= imageBytes * 1.01 },
      { scenario: 'cold: upstream requests', transship: String(tCold.upstreamRequests), peer: String(dCold.upstreamRequests), ratio: fmt.ratio(tCold.upstreamRequests / dCold.upstreamRequests), target: '≤ peer', met: tCold.upstreamRequests <= dCold.upstreamRequests },
      { scenario: 'cold: time to first byte of the large layer (median of 8)', transship: fmt.ms(ttfb(tCold)), peer: fmt.ms(ttfb(dCold)), ratio: fmt.ratio(ttfb(tCold) / ttfb(dCold)), target: '≤ peer', met: ttfb(tCold) <= ttfb(dCold) },
      { scenario: 'cold: all 8 pulls done', transship: fmt.ms(tCold.wallMs), peer: fmt.ms(dCold.wallMs), ratio: fmt.ratio(tCold.wallMs / dCold.wallMs), target: '≤ peer', met: tCold.wallMs <= dCold.wallMs },
      { scenario: 'warm: upstream requests', transship: String(tWarm.upstreamRequests), peer: String(dWarm.upstreamRequests), ratio: '', target: 'informational (tags within their TTL)', met: undefined },
      { scenario: 'warm: all 8 pulls done', transship: fmt.ms(tWarm.wallMs), peer: fmt.ms(dWarm.wallMs), ratio: fmt.ratio(tWarm.wallMs / dWarm.wallMs), target: 'informational', met: undefined },
    ];
    return {
      id: 'mirror',
      title: 'Mirror (issue 18)',
      intro: [
        `${CLIENTS} clients pull one uncached image (${fmt.mib(imageBytes)}: layers of ${BIG_MIB} MiB, 4 MiB, 64 KiB + config) at once through \`transship serve\` with \`mirror:\` and through Distribution in proxy mode (\`proxy.remoteurl\`), both in front of the same upstream (Distribution, filesystem storage), each behind its own counting proxy; then the same pulls warm. Both store on local disk. Clients are plain HTTP pullers (manifest, then blobs in parallel).`,
      ],
      rows,
      details: [
        `- cold upstream requests, transship: ${tColdCounts}`,
        `- cold upstream requests, Distribution: ${dColdCounts}`,
        `- clients' time to first byte of the large layer, cold: transship ${tCold.pulls.map((p) => fmt.ms(p.ttfbMs)).join(', ')}; Distribution ${dCold.pulls.map((p) => fmt.ms(p.ttfbMs)).join(', ')}`,
        '- Warm pulls are the registry\'s ordinary GETs from the fs store (the mirror only adds a store lookup per request); Distribution\'s filesystem driver serves them faster on this machine, which is the registry read path\'s business, not the mirror\'s. Cold transship clients all end together: each is held one byte short of the end until the single upstream fetch is verified, so the total is the upstream transfer time.',
        `- per-client totals, cold: transship ${tCold.pulls.map((p) => fmt.ms(p.totalMs)).join(', ')}; Distribution ${dCold.pulls.map((p) => fmt.ms(p.totalMs)).join(', ')}`,
      ],
      date: new Date().toISOString(),
    };
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
}
