// Shared upload sessions (issue 17 item 4): what it costs that a push may continue on any instance. skopeo pushes
// the same images to transship with sessions kept in one process (`serve.sharedUploads.enabled: false`), with shared
// sessions (the default) on one instance, and through a balancer that sends every request to the next of two
// instances — and to Distribution, alone and as two instances sharing `http.secret` behind the same balancer (its
// own way of continuing uploads anywhere). Every contender has its own bucket, so nothing is deduplicated away.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startDistribution, type Distribution } from '../test/support/distribution.js';
import { startRoundRobinProxy, type RoundRobinProxy } from '../test/support/round-robin-proxy.js';
import type { ProxyCounts } from '../test/support/s3-proxy.js';
import { PUSH_FLAGS, serveUnavailable, type BenchContext } from './context.js';
import { check, median, processCpuMs } from './measure.js';
import { fmt, type Row, type Section } from './report.js';
import { startServe, type Serve } from './registry.js';

const TITLE = 'Shared upload sessions (issue 17 item 4): pushes that continue on any instance';

interface Contender {
  name: string;
  /** Where skopeo pushes: one registry, or the balancer in front of two. */
  host: string;
  pids: Array<number | undefined>;
  peer: boolean;
}

interface Op {
  wallMs: number;
  s3: ProxyCounts;
  cpuMs: number;
}

export async function runUploads(ctx: BenchContext): Promise<Section> {
  const date = new Date().toISOString();
  const unavailable = serveUnavailable();
  if (unavailable) return { id: 'uploads', title: TITLE, intro: [], rows: [], details: [], date, skipped: unavailable };
  const images = await ctx.images();
  const stops: Array<() => Promise<unknown>> = [];
  const rows: Row[] = [];
  const details: string[] = [];
  try {
    const s3 = (bucket: string) => ({ endpoint: ctx.proxy.url, accessKeyId: ctx.rgw.accessKeyId, secretAccessKey: ctx.rgw.secretAccessKey, bucket });
    const buckets: string[] = [];
    const bucket = async (name: string): Promise<string> => {
      const b = await ctx.createBucket(name);
      buckets.push(b);
      return b;
    };
    const serve = async (name: string, args: string[] = []): Promise<Serve> => {
      const s = await startServe(ctx, `s3://${await bucket(name)}/reg`, args);
      stops.push(() => s.stop());
      return s;
    };
    const dist = async (bucket: string, httpSecret?: string): Promise<Distribution> => {
      const d = await startDistribution({ s3: s3(bucket), httpSecret, signal: ctx.signal, log: ctx.log });
      stops.push(() => d.stop());
      return d;
    };
    const balance = async (urls: string[]): Promise<RoundRobinProxy> => {
      const lb = await startRoundRobinProxy(urls);
      stops.push(() => lb.close());
      return lb;
    };
    const unshared = join(ctx.work, 'unshared.yaml');
    await writeFile(unshared, 'serve:\n  sharedUploads:\n    enabled: false\n');

    const off = await serve('ts-up-off', ['--config', unshared]);
    const on = await serve('ts-up-on');
    const twoBucket = await bucket('ts-up-two');
    const two = [await startServe(ctx, `s3://${twoBucket}/reg`), await startServe(ctx, `s3://${twoBucket}/reg`)];
    for (const s of two) stops.push(() => s.stop());
    const twoLb = await balance(two.map((s) => `http://${s.host}`));
    const d1 = await dist(await bucket('dist-up-one'));
    const secret = 'bench-shared-secret-0123456789';
    const distBucket = await bucket('dist-up-two');
    const d2 = [await dist(distBucket, secret), await dist(distBucket, secret)];
    const d2Lb = await balance(d2.map((d) => d.url));

    const contenders: Contender[] = [
      { name: 'transship, 1 instance, sessions in one process (`sharedUploads.enabled: false`)', host: off.host, pids: [off.pid], peer: false },
      { name: 'transship, 1 instance, shared sessions (default)', host: on.host, pids: [on.pid], peer: false },
      { name: 'transship, 2 instances, every request to the next one', host: twoLb.host, pids: two.map((s) => s.pid), peer: false },
      { name: 'Distribution, 1 instance', host: d1.host, pids: [d1.pid], peer: true },
      { name: 'Distribution, 2 instances (same http.secret), every request to the next one', host: d2Lb.host, pids: d2.map((d) => d.pid), peer: true },
    ];
    const push = async (c: Contender, tag: string, ref: string): Promise<Op> => {
      const cpu0 = c.pids.reduce((n: number, p) => n + processCpuMs(p), 0);
      const { result, s3: counts } = await ctx.countS3(() => ctx.skopeo(['copy', ...PUSH_FLAGS, `oci:${images.layout}:${tag}`, `docker://${c.host}/${ref}`]));
      check(result);
      return { wallMs: result.wallMs, s3: counts, cpuMs: c.pids.reduce((n: number, p) => n + processCpuMs(p), 0) - cpu0 };
    };

    details.push('| scenario | contender | S3 requests | by operation | wall time | registry CPU (all instances) |', '| --- | --- | --- | --- | --- | --- |');
    const detail = (scenario: string, c: Contender, op: Op) =>
      details.push(`| ${scenario} | ${c.name} | ${op.s3.total} | ${fmt.ops(op.s3.byOperation)} | ${fmt.ms(op.wallMs)} | ${fmt.ms(op.cpuMs)} |`);

    const small = new Map<Contender, Op>();
    for (const c of contenders) {
      ctx.log(`uploads: fresh small image → ${c.name}`);
      const op = await push(c, 'a', 'app:a');
      small.set(c, op);
      detail('push a fresh image (3 × 10 MiB layers + config)', c, op);
    }
    const big = new Map<Contender, Op[]>(contenders.map((c) => [c, []]));
    // RGW's memstore holds every byte in memory: five contenders × 256 MiB a round are freed after each round (every
    // round pushes new digests, so no registry's presence cache is misled).
    for (const b of buckets) await ctx.reclaim(b);
    for (let round = 0; round < ctx.rounds; round++) {
      for (const c of round % 2 === 0 ? contenders : [...contenders].reverse()) {
        ctx.log(`uploads: 256 MiB layer, round ${round + 1}/${ctx.rounds} → ${c.name}`);
        const op = await push(c, `big-${round}`, `big:${round}`);
        big.get(c)?.push(op);
        detail(`push one 256 MiB layer, round ${round + 1}`, c, op);
      }
      for (const b of buckets) await ctx.reclaim(b);
    }

    const [tOff, tOn, tTwo, dOne, dTwo] = contenders as [Contender, Contender, Contender, Contender, Contender];
    const req = (c: Contender) => small.get(c)?.s3.total ?? 0;
    for (const c of [tOff, tOn, tTwo]) {
      rows.push({ scenario: `push a fresh image (3 × 10 MiB layers + config) — S3 requests: ${c.name}`, transship: String(req(c)), peer: `${req(dOne)} (Distribution, 1 instance)`, ratio: fmt.ratio(req(c) / req(dOne)), target: '≤ 0.1×', met: req(c) / req(dOne) <= 0.1 });
    }
    rows.push({ scenario: 'push a fresh image — S3 requests: Distribution, 2 instances behind the balancer', transship: '—', peer: String(req(dTwo)), ratio: '—', target: 'report', met: undefined });
    const wall = (c: Contender) => median((big.get(c) ?? []).map((o) => o.wallMs));
    const cpu = (c: Contender) => median((big.get(c) ?? []).map((o) => o.cpuMs));
    const bigReq = (c: Contender) => median((big.get(c) ?? []).map((o) => o.s3.total));
    for (const [c, peer] of [[tOff, dOne], [tOn, dOne], [tTwo, dTwo]] as const) {
      rows.push({ scenario: `push one 256 MiB layer — wall time (median of ${ctx.rounds}): ${c.name}`, transship: fmt.ms(wall(c)), peer: `${fmt.ms(wall(peer))} (${peer.name})`, ratio: fmt.ratio(wall(c) / wall(peer)), target: '≤ 1×', met: wall(c) / wall(peer) <= 1 });
    }
    rows.push({ scenario: 'push one 256 MiB layer through 2 instances ÷ through 1 (shared sessions) — wall time', transship: `${fmt.ms(wall(tTwo))} vs ${fmt.ms(wall(tOn))}`, peer: `${fmt.ms(wall(dTwo))} vs ${fmt.ms(wall(dOne))} (Distribution)`, ratio: `${fmt.ratio(wall(tTwo) / wall(tOn))} vs ${fmt.ratio(wall(dTwo) / wall(dOne))}`, target: 'report', met: undefined });
    for (const c of [tOff, tOn, tTwo]) {
      rows.push({ scenario: `push one 256 MiB layer — S3 requests, registry CPU (median): ${c.name}`, transship: `${bigReq(c)}, ${fmt.ms(cpu(c))}`, peer: `${bigReq(c.name.includes('2 instances') ? dTwo : dOne)}, ${fmt.ms(cpu(c.name.includes('2 instances') ? dTwo : dOne))} (Distribution)`, ratio: fmt.ratio(bigReq(c) / bigReq(c.name.includes('2 instances') ? dTwo : dOne)), target: 'report', met: undefined });
    }
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  }
  return {
    id: 'uploads',
    title: TITLE,
    intro: [
      'skopeo (`--preserve-digests`) pushes a fresh small image (3 × 10 MiB layers + config) and then, per round, one new 256 MiB layer to five contenders, each with its own bucket on the same RGW behind the same counting proxy. "Every request to the next one" is a balancer (test/support/round-robin-proxy.ts) that sends each HTTP request — not each connection — to the next instance, as an HTTP ingress does: POST, PATCH and PUT of one blob land on different instances.',
      'With shared sessions every PATCH is checkpointed to S3 (a session not staged yet is stored as the blob its bytes are; a staged one has its parts awaited and the rest written as a tail object). A commit on an instance that did not see the first bytes of a staged session reads the staged object back to check the digest (one GetObject of the whole blob).',
    ],
    rows,
    details,
    date,
  };
}
