// Placement (issue 4): a simulated multi-region workload on real stores (three buckets on RGW, one per "region",
// every request through the counting proxy). Images are pushed in region a and pulled from a, b and c with skewed
// popularity (Zipf). Three strategies are compared on the same pull sequence:
//   - replicate-everything (what ECR-style replication does): a DR rule for every repository, then local reads;
//   - pull-through only: every remote read crosses regions, nothing is ever promoted;
//   - transship rules: lazy fetch, promotion after measured demand (3 remote reads of a blob within the window).
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { S3Store } from '../src/store/s3-store.js';
import { Regions } from '../src/placement/regions.js';
import { Rules } from '../src/placement/rules.js';
import { PlacedReader } from '../src/placement/read-path.js';
import { Replicator } from '../src/placement/replicator.js';
import { copyImage } from '../src/transfer/copy.js';
import { StoreDestination } from '../src/transfer/store-destination.js';
import { openOciLayoutSource } from '../src/transfer/sources/oci-layout.js';
import { makeOciLayout, type BuiltImage } from '../test/support/images.js';
import { mulberry32 } from '../test/support/s3-proxy.js';
import type { BenchContext } from './context.js';
import type { Row, Section } from './report.js';

const IMAGES = 200;
const PULLS = 400;
const POPULAR = 3;
const REGIONS = ['a', 'b', 'c'] as const;


function zipfSequence(n: number, count: number, s: number, random: () => number): number[] {
  const weights = Array.from({ length: n }, (_, i) => 1 / (i + 1) ** s);
  const total = weights.reduce((a, b) => a + b, 0);
  return Array.from({ length: count }, () => {
    let r = random() * total;
    for (let i = 0; i < n; i++) {
      r -= weights[i] as number;
      if (r <= 0) return i;
    }
    return n - 1;
  });
}

interface Outcome {
  crossRegionBytes: number;
  s3Requests: number;
  reads: number;
  localReads: number;
  popularReads: number;
  popularLocal: number;
}

export async function runPlacement(ctx: BenchContext): Promise<Section> {
  const cfg = { endpoint: ctx.proxy.url, accessKeyId: ctx.rgw.accessKeyId, secretAccessKey: ctx.rgw.secretAccessKey };
  const dir = join(ctx.work, 'placement');
  await mkdir(dir, { recursive: true });
  ctx.log(`placement: building ${IMAGES} images (shared base layer + 2 own layers each)`);
  const images: BuiltImage[] = [];
  for (let i = 0; i < IMAGES; i++) {
    images.push(
      await makeOciLayout(join(dir, `img${i}`), {
        tag: 'v1',
        seed: `placement-${i}`,
        gzip: false,
        layers: [{ seed: 'placement-base', size: 256 * 1024 }, { seed: `placement-${i}-1`, size: 256 * 1024 }, { seed: `placement-${i}-2`, size: 128 * 1024 }],
      }),
    );
  }
  // Seeded (mulberry32) so every strategy sees the same pull sequence.
  const random = mulberry32(42);
  const sequence = zipfSequence(IMAGES, PULLS, 1.2, random).map((image) => ({ image, region: REGIONS[Math.floor(random() * REGIONS.length)] as string }));

  const run = async (name: string, strategy: 'replicate-everything' | 'pull-through' | 'rules'): Promise<Outcome> => {
    const buckets: Record<string, string> = {};
    for (const r of REGIONS) buckets[r] = await ctx.createBucket(`place-${strategy.slice(0, 6)}-${r}`);
    const stores = (): Record<string, S3Store> =>
      Object.fromEntries(REGIONS.map((r) => [r, new S3Store({ bucket: buckets[r] as string, region: r, ...cfg })]));
    // Push everything in region a (not counted: the same for every strategy).
    const pushStores = stores();
    for (const [i, img] of images.entries()) {
      const src = await openOciLayoutSource(img.path, { tag: 'v1' });
      await copyImage(src, new StoreDestination(pushStores.a as S3Store, `app/img${i}`, 'v1'));
      await src.close();
    }
    for (const s of Object.values(pushStores)) await s.close();
    ctx.log(`placement: ${name}: pushed ${IMAGES} images in region a; running ${PULLS} pulls`);
    const out: Outcome = { crossRegionBytes: 0, s3Requests: 0, reads: 0, localReads: 0, popularReads: 0, popularLocal: 0 };
    const counted = await ctx.countS3(async () => {
      const all = stores();
      if (strategy === 'replicate-everything') {
        const rep = new Replicator(Regions.of('a', all), new Rules([{ repos: ['**'], reason: 'dr' }]), { concurrency: 2 });
        const report = await rep.reconcile();
        out.crossRegionBytes += report.bytes;
      }
      const promote = strategy === 'rules' ? { policy: 'demand' as const, reads: 3, windowMs: 3600_000 } : { policy: 'never' as const };
      // One reader per region, as one transship instance per region would have.
      const readers = Object.fromEntries(REGIONS.map((r) => [r, new PlacedReader(Regions.of(r, all, [...REGIONS]), new Rules([], promote))]));
      for (const pull of sequence) {
        if (ctx.signal.aborted) throw new Error('interrupted');
        const img = images[pull.image] as BuiltImage;
        const reader = readers[pull.region] as PlacedReader;
        const repo = `app/img${pull.image}`;
        const tag = await reader.getTag(repo, 'v1');
        if (!tag) throw new Error(`tag of ${repo} not found from region ${pull.region}`);
        for (const desc of [img.root.descriptor, ...img.blobs]) {
          const placed = await reader.open(desc.digest, { repo });
          const bytes = (await buffer(placed.stream)).length;
          out.reads++;
          const local = placed.location === 'local';
          if (local) out.localReads++;
          else out.crossRegionBytes += bytes;
          if (pull.image < POPULAR) {
            out.popularReads++;
            if (local) out.popularLocal++;
          }
        }
      }
      for (const s of Object.values(all)) await s.close();
    });
    out.s3Requests = counted.s3.total;
    for (const b of Object.values(buckets)) await ctx.reclaim(b);
    ctx.log(`placement: ${name}: ${JSON.stringify(out)}`);
    return out;
  };

  const everything = await run('replicate everything', 'replicate-everything');
  const pullThrough = await run('pull-through only', 'pull-through');
  const rules = await run('transship rules', 'rules');
  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
  const pct = (a: number, b: number) => (b === 0 ? '—' : `${((a / b) * 100).toFixed(1)}%`);
  const saving = 1 - rules.crossRegionBytes / everything.crossRegionBytes;
  const popularLocal = rules.popularLocal / rules.popularReads;
  const rows: Row[] = [
    { scenario: 'cross-region bytes: rules vs replicate-everything', transship: mb(rules.crossRegionBytes), peer: mb(everything.crossRegionBytes), ratio: `${(rules.crossRegionBytes / everything.crossRegionBytes).toFixed(2)}×`, target: '≥ 70% fewer (≤ 0.30×)', met: saving >= 0.7 },
    { scenario: 'cross-region bytes: rules vs pull-through only', transship: mb(rules.crossRegionBytes), peer: mb(pullThrough.crossRegionBytes), ratio: `${(rules.crossRegionBytes / pullThrough.crossRegionBytes).toFixed(2)}×`, target: 'report', met: undefined },
    { scenario: `reads of the ${POPULAR} most popular images served locally (rules)`, transship: pct(rules.popularLocal, rules.popularReads), peer: `${pct(everything.popularLocal, everything.popularReads)} (replicate-everything), ${pct(pullThrough.popularLocal, pullThrough.popularReads)} (pull-through)`, ratio: '', target: '≥ 90%', met: popularLocal >= 0.9 },
    { scenario: 'all reads served locally', transship: pct(rules.localReads, rules.reads), peer: `${pct(everything.localReads, everything.reads)} / ${pct(pullThrough.localReads, pullThrough.reads)}`, ratio: '', target: 'report', met: undefined },
    { scenario: 'S3 requests for the whole workload', transship: String(rules.s3Requests), peer: `${everything.s3Requests} / ${pullThrough.s3Requests}`, ratio: `${(rules.s3Requests / everything.s3Requests).toFixed(2)}× of replicate-everything`, target: 'report', met: undefined },
  ];
  return {
    id: 'placement',
    title: 'Placement across regions (issue 4)',
    intro: [
      `Simulation on real stores: three buckets on the same RGW (regions a, b, c), every request through the counting proxy. ${IMAGES} images (a shared 256 KiB base layer, two own layers of 256 and 128 KiB, config, manifest) are pushed in region a (not counted), then ${PULLS} pulls with Zipf(1.2) popularity from a uniformly chosen region read the manifest and every blob through transship's read path.`,
      'Peers: replicate-everything (a DR rule on `**`, replicated before the pulls, then local reads) and pull-through only (lazy fetch every time, never promoted). transship rules: lazy fetch with promotion after 3 remote reads of a blob within an hour.',
    ],
    rows,
    details: [
      `- Catalog size matters: replicate-everything pays for every image in every region, demand promotion only for what is read remotely, but a hot blob crosses up to 3 times per region before it is promoted. In an earlier run of this benchmark with 40 images (nearly every image pulled in every region) the rules moved 1.43× the bytes of replicate-everything (46.8 vs 32.8 MB) while still serving 93% of popular reads locally; this run uses ${IMAGES} images, most of them rarely pulled outside region a.`,
      `- replicate-everything: ${JSON.stringify(everything)}`,
      `- pull-through only: ${JSON.stringify(pullThrough)}`,
      `- transship rules: ${JSON.stringify(rules)}`,
      '- Cross-region bytes count every byte read from another region plus every byte replicated or promoted.',
    ],
    date: new Date().toISOString(),
  };
}
