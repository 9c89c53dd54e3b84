// Garbage collection (issue 15): `transship gc` on a store of many blobs, half unreachable, against Distribution's
// `registry garbage-collect` on the same RGW, both through the counting relay. Wall time, S3 requests, peak RSS and
// read-only time (Distribution must not serve writes while it runs — its whole run; ours runs online: 0).
//
// Scale: our store is generated straight into the bucket (TRANSSHIP_BENCH_GC_BLOBS, default 100 000 blobs in
// manifests of 10 — 10 000 manifests, half linked and tagged, half not); Distribution's is filled through its own API
// (TRANSSHIP_BENCH_GC_DIST_BLOBS, default 2 000: every blob is a POST and a PUT, so its fill is the slow part). The
// two are compared per blob and Distribution is extrapolated linearly to our size (its mark reads every link and
// manifest and its sweep deletes blob by blob: linear in both); the report says so.
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { distributionConfig, startDistribution, DISTRIBUTION_BINARY } from '../test/support/distribution.js';
import type { BenchContext } from './context.js';
import { check, runMeasured, type Measured } from './measure.js';
import type { Row, Section } from './report.js';

const PER_MANIFEST = 10; // a config, 8 layers and the manifest itself

interface Side {
  blobs: number;
  manifests: number;
  m: Measured;
  requests: number;
  byOp: Record<string, number>;
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** One image's blobs (config + 8 layers) and manifest bytes, all distinct. */
function image(i: number): { blobs: Buffer[]; manifest: Buffer } {
  const blobs = Array.from({ length: PER_MANIFEST - 1 }, (_, j) => Buffer.concat([Buffer.from(`${i}/${j}/`), randomBytes(48)]));
  const desc = (b: Buffer, mediaType: string) => ({ mediaType, digest: `sha256:${sha(b)}`, size: b.length });
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: desc(blobs[0] as Buffer, 'application/vnd.oci.image.config.v1+json'),
    layers: blobs.slice(1).map((b) => desc(b, 'application/vnd.oci.image.layer.v1.tar')),
  }));
  return { blobs, manifest };
}

async function pool<T>(items: readonly T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    for (let i = next++; i < items.length; i = next++) await fn(items[i] as T);
  }));
}

/** Our layout, written directly (not counted): blobs, and for the even images a link and a tag. */
async function fillTransship(ctx: BenchContext, bucket: string, manifests: number): Promise<void> {
  const put = (Key: string, Body: Buffer | string) => ctx.admin.send(new PutObjectCommand({ Bucket: bucket, Key, Body }), { abortSignal: ctx.signal });
  let done = 0;
  await pool(Array.from({ length: manifests }, (_, i) => i), 48, async (i) => {
    const { blobs, manifest } = image(i);
    for (const b of [...blobs, manifest]) await put(`blobs/sha256/${sha(b)}`, b);
    if (i % 2 === 0) {
      const repo = `bench/r${Math.floor(i / 100)}`;
      await put(`repos/${repo}/_manifests/sha256/${sha(manifest)}`, `sha256:${sha(manifest)}`);
      await put(`repos/${repo}/_tags/t${i}`, `sha256:${sha(manifest)}`);
    }
    if (++done % 1000 === 0) ctx.log(`gc: generated ${done}/${manifests} images`);
  });
}

/** Distribution's store, through its API: every blob uploaded (POST + PUT), the manifests PUT, odd ones deleted. */
async function fillDistribution(url: string, manifests: number): Promise<void> {
  await pool(Array.from({ length: manifests }, (_, i) => i), 16, async (i) => {
    const repo = `bench/r${Math.floor(i / 100)}`;
    const { blobs, manifest } = image(1_000_000 + i);
    for (const b of blobs) {
      const start = await fetch(`${url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
      await start.arrayBuffer();
      const loc = new URL(start.headers.get('location') ?? '', url);
      loc.searchParams.set('digest', `sha256:${sha(b)}`);
      const done = await fetch(loc, { method: 'PUT', body: b, headers: { 'content-type': 'application/octet-stream' } });
      await done.arrayBuffer();
      if (done.status !== 201) throw new Error(`distribution blob upload: ${done.status}`);
    }
    const r = await fetch(`${url}/v2/${repo}/manifests/t${i}`, { method: 'PUT', body: manifest, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
    await r.arrayBuffer();
    if (r.status !== 201) throw new Error(`distribution manifest put: ${r.status}`);
    if (i % 2 === 1) {
      const d = await fetch(`${url}/v2/${repo}/manifests/sha256:${sha(manifest)}`, { method: 'DELETE' });
      await d.arrayBuffer();
    }
  });
}

const mb = (b: number | undefined) => (b === undefined ? 'n/a' : `${(b / 1024 / 1024).toFixed(0)} MB`);
const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export async function runGc(ctx: BenchContext): Promise<Section> {
  const ourBlobs = Number(process.env.TRANSSHIP_BENCH_GC_BLOBS ?? 100_000);
  const distBlobs = Number(process.env.TRANSSHIP_BENCH_GC_DIST_BLOBS ?? 2_000);
  const ourManifests = Math.max(2, Math.round(ourBlobs / PER_MANIFEST));
  const distManifests = Math.max(2, Math.round(distBlobs / PER_MANIFEST));

  // --- transship ---
  const ours = await ctx.createBucket('gc-ts');
  const t0 = Date.now();
  await fillTransship(ctx, ours, ourManifests);
  ctx.log(`gc: our store filled (${ourManifests * PER_MANIFEST} blobs) in ${s(Date.now() - t0)}`);
  const config = join(ctx.work, 'gc-bench.yaml');
  // A short grace the safety rule allows with room for a long pass (the work of a pass does not depend on the
  // grace), then age the store past it: 1 + 1 + 120 + 0 + 6 < 130.
  await writeFile(config, 'cache:\n  ttlSeconds: 5\ngc:\n  graceSeconds: 130\n  refreshAfterSeconds: 1\n  horizonSeconds: 1\n  maxPassSeconds: 120\n  clockSkewSeconds: 0\n  settleSeconds: 6\n');
  const aged = Date.now() + 131_000;
  while (Date.now() < aged) await new Promise((r) => setTimeout(r, Math.min(5000, aged - Date.now())));
  const run = await ctx.countS3(() => ctx.transship(['gc', `s3://${ours}`, '--json'], { TRANSSHIP_CONFIG: config }));
  check(run.result);
  const report = JSON.parse(run.result.stdout) as { result: string; removed: Record<string, number>; reclaimedBytes: number; mark: { markBytes: number; durationMs: number } };
  const our: Side = { blobs: ourManifests * PER_MANIFEST, manifests: ourManifests, m: run.result, requests: run.s3.total, byOp: run.s3.byOperation };
  ctx.log(`gc: transship ${s(our.m.wallMs)}, ${our.requests} requests, ${mb(our.m.peakRss)}; ${report.result}, removed ${JSON.stringify(report.removed)}`);
  await ctx.reclaim(ours);

  // --- Distribution ---
  const theirs = await ctx.createBucket('gc-dist');
  const s3 = { endpoint: ctx.proxy.url, accessKeyId: ctx.rgw.accessKeyId, secretAccessKey: ctx.rgw.secretAccessKey, bucket: theirs };
  const dist = await startDistribution({ s3, signal: ctx.signal, log: ctx.log });
  const t1 = Date.now();
  try {
    await fillDistribution(dist.url, distManifests);
  } finally {
    await dist.stop(); // garbage-collect needs the registry stopped (or read-only): that is its read-only time
  }
  ctx.log(`gc: distribution filled (${distManifests * PER_MANIFEST} blobs) in ${s(Date.now() - t1)}`);
  const dcfg = join(ctx.work, 'distribution-gc.yml');
  await writeFile(dcfg, JSON.stringify(distributionConfig({ s3 }, 5999), null, 2));
  const drun = await ctx.countS3(() => runMeasured(DISTRIBUTION_BINARY, ['garbage-collect', dcfg], { signal: ctx.signal, timeoutMs: 3_600_000 }));
  check(drun.result);
  const deleted = (drun.result.stdout.match(/blob eligible for deletion|Deleting blob/g) ?? []).length;
  const their: Side = { blobs: distManifests * PER_MANIFEST, manifests: distManifests, m: drun.result, requests: drun.s3.total, byOp: drun.s3.byOperation };
  ctx.log(`gc: distribution ${s(their.m.wallMs)}, ${their.requests} requests, ${mb(their.m.peakRss)}, ${deleted} deletions logged`);
  await ctx.reclaim(theirs);

  // --- comparison, per blob and extrapolated to our size ---
  const scale = our.blobs / their.blobs;
  const theirWall = their.m.wallMs * scale;
  const theirReq = their.requests * scale;
  const perM = (v: number, n: number) => (v / n) * 1_000_000;
  const rows: Row[] = [
    { scenario: `wall time, ${our.blobs} blobs / ${our.manifests} manifests, half unreachable`, transship: s(our.m.wallMs), peer: `${s(theirWall)} (extrapolated from ${s(their.m.wallMs)} at ${their.blobs} blobs)`, ratio: (our.m.wallMs / theirWall).toFixed(2), target: '≤ 0.33', met: our.m.wallMs / theirWall <= 1 / 3 },
    { scenario: 'S3 requests', transship: String(our.requests), peer: `${Math.round(theirReq)} (extrapolated from ${their.requests})`, ratio: (our.requests / theirReq).toFixed(2), target: '≤ 0.33', met: our.requests / theirReq <= 1 / 3 },
    { scenario: 'peak RSS', transship: mb(our.m.peakRss), peer: `${mb(their.m.peakRss)} (at ${their.blobs} blobs)`, ratio: our.m.peakRss && their.m.peakRss ? (our.m.peakRss / their.m.peakRss).toFixed(2) : 'n/a', target: 'ours ≤ 200 MB', met: our.m.peakRss !== undefined ? our.m.peakRss <= 200 * 1024 * 1024 : undefined },
    { scenario: 'read-only time (writes refused)', transship: '0 s (online)', peer: `${s(their.m.wallMs)} at ${their.blobs} blobs (the whole run; ${s(theirWall)} at ${our.blobs})`, ratio: '0', target: '0', met: true },
  ];
  return {
    id: 'gc',
    title: 'Garbage collection (issue 15)',
    intro: [
      `transship gc on ${our.blobs} blobs (${our.manifests} manifests of ${PER_MANIFEST} blobs, half linked and tagged, half not), generated straight into the bucket, against Distribution ${'`registry garbage-collect`'} on ${their.blobs} blobs filled through its API (each blob a POST and a PUT: its fill is what limits its size here), both through the counting relay on one RGW. Distribution is extrapolated linearly to our size, per blob.`,
      'Distribution must be stopped or read-only for its whole run; transship gc runs while writers write (docs/gc.md).',
    ],
    rows,
    details: [
      `transship: ${JSON.stringify(our.byOp)}; removed ${JSON.stringify(report.removed)}, ${report.reclaimedBytes} bytes; mark set ${report.mark.markBytes} B`,
      `Distribution: ${JSON.stringify(their.byOp)}`,
      `Per million blobs: transship ${(perM(our.requests, our.blobs) / 1000).toFixed(0)}k requests and ${s(perM(our.m.wallMs, our.blobs))}; Distribution ${(perM(their.requests, their.blobs) / 1000).toFixed(0)}k requests and ${s(perM(their.m.wallMs, their.blobs))} read-only. At AWS list prices (GET/LIST $0.0004-0.005 per 1000, DELETE free) a pass over 1M blobs costs transship about $${((perM(our.requests, our.blobs) / 1000) * 0.005).toFixed(2)} at most.`,
    ],
    date: new Date().toISOString(),
  };
}
