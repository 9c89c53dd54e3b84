// Placement (issue 4): a simulated multi-region workload on real stores (three buckets on RGW, one per "region",
// every request through the counting proxy). Images are pushed in region a and pulled from a, b and c with skewed
// popularity (Zipf). The same pull sequence is replayed against each strategy:
//   - replicate-everything (what ECR-style replication does): a DR rule for every repository, then local reads;
//   - pull-through only: every remote read crosses regions, nothing is ever promoted;
//   - transship rules (the product default): lazy fetch, promotion once demand is measured (the threshold comes from
//     the price table, src/placement/cost.ts promotionThreshold: 2 remote reads within the hour);
//   - the previous default (promotion at the 3rd remote read) and promotion on the first remote read (policy
//     `always`), to show the two sides of the trade-off: bytes moved against bytes stored outside the home region.
// It runs on two catalog sizes: 200 images (most rarely pulled outside region a) and 40 (nearly every image pulled
// in every region), because which strategy wins depends on it.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { S3Store } from '../src/store/s3-store.js';
import { Regions } from '../src/placement/regions.js';
import { Rules, type PromotePolicy } from '../src/placement/rules.js';
import { PlacedReader } from '../src/placement/read-path.js';
import { DEFAULT_PRICES } from '../src/placement/cost.js';
import { Replicator } from '../src/placement/replicator.js';
import { copyImage } from '../src/transfer/copy.js';
import { StoreDestination } from '../src/transfer/store-destination.js';
import { openOciLayoutSource } from '../src/transfer/sources/oci-layout.js';
import { makeOciLayout, type BuiltImage } from '../test/support/images.js';
import { mulberry32 } from '../test/support/s3-proxy.js';
import type { BenchContext } from './context.js';
import type { Row, Section } from './report.js';

const CATALOGS = [200, 40];
const PULLS = 400;
const POPULAR = 3;
const REGIONS = ['a', 'b', 'c'] as const;
const HOME = 'a';

type Strategy = 'replicate-everything' | 'pull-through' | 'rules' | 'rules-3' | 'first-read';
const STRATEGIES: Array<{ id: Strategy; label: string }> = [
  { id: 'replicate-everything', label: 'replicate everything' },
  { id: 'pull-through', label: 'pull-through only' },
  { id: 'rules', label: 'transship rules (default: promote at the 2nd remote read)' },
  { id: 'rules-3', label: 'previous default (promote at the 3rd remote read)' },
  { id: 'first-read', label: 'promote on the first remote read (`always`)' },
];

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
  /** Blob bytes held in b and c after the workload: the storage side of the trade-off. */
  storedOutsideHome: number;
  /** Times an (image, remote region) pull moved at least one blob across regions. */
  crossingPulls: number;
}

interface Pull {
  image: number;
  region: string;
}

/** Bytes any lazy strategy must move: each distinct blob read in a non-home region crosses once (into that region). */
function lowerBound(sequence: readonly Pull[], images: readonly BuiltImage[]): { bytes: number; pairs: number; perPair: Map<string, number> } {
  const seen = new Set<string>();
  const perPair = new Map<string, number>();
  let bytes = 0;
  for (const p of sequence) {
    if (p.region === HOME) continue;
    const key = `${p.image}@${p.region}`;
    perPair.set(key, (perPair.get(key) ?? 0) + 1);
    const img = images[p.image] as BuiltImage;
    for (const d of [img.root.descriptor, ...img.blobs]) {
      if (seen.has(`${d.digest}@${p.region}`)) continue;
      seen.add(`${d.digest}@${p.region}`);
      bytes += d.size;
    }
  }
  return { bytes, pairs: perPair.size, perPair };
}

function promotion(strategy: Strategy): Partial<PromotePolicy> {
  switch (strategy) {
    case 'rules':
      return { policy: 'demand' }; // the product default: threshold from the price table
    case 'rules-3':
      return { policy: 'demand', reads: 3 };
    case 'first-read':
      return { policy: 'always' };
    default:
      return { policy: 'never' };
  }
}

export async function runPlacement(ctx: BenchContext): Promise<Section> {
  const cfg = { endpoint: ctx.proxy.url, accessKeyId: ctx.rgw.accessKeyId, secretAccessKey: ctx.rgw.secretAccessKey };
  const dir = join(ctx.work, 'placement');
  await mkdir(dir, { recursive: true });
  const largest = Math.max(...CATALOGS);
  ctx.log(`placement: building ${largest} images (shared base layer + 2 own layers each)`);
  const images: BuiltImage[] = [];
  for (let i = 0; i < largest; i++) {
    images.push(
      await makeOciLayout(join(dir, `img${i}`), {
        tag: 'v1',
        seed: `placement-${i}`,
        gzip: false,
        layers: [{ seed: 'placement-base', size: 256 * 1024 }, { seed: `placement-${i}-1`, size: 256 * 1024 }, { seed: `placement-${i}-2`, size: 128 * 1024 }],
      }),
    );
  }

  const run = async (catalog: number, sequence: readonly Pull[], strategy: Strategy): Promise<Outcome> => {
    const buckets: Record<string, string> = {};
    for (const r of REGIONS) buckets[r] = await ctx.createBucket(`place-${strategy.slice(0, 6)}-${r}`);
    const stores = (): Record<string, S3Store> =>
      Object.fromEntries(REGIONS.map((r) => [r, new S3Store({ bucket: buckets[r] as string, region: r, ...cfg })]));
    // Push the catalog in region a (not counted: the same for every strategy).
    const pushStores = stores();
    for (let i = 0; i < catalog; i++) {
      const src = await openOciLayoutSource((images[i] as BuiltImage).path, { tag: 'v1' });
      await copyImage(src, new StoreDestination(pushStores[HOME] as S3Store, `app/img${i}`, 'v1'), { signal: ctx.signal });
      await src.close();
    }
    ctx.log(`placement: ${catalog} images, ${strategy}: pushed in region ${HOME}; running ${PULLS} pulls`);
    const out: Outcome = { crossRegionBytes: 0, s3Requests: 0, reads: 0, localReads: 0, popularReads: 0, popularLocal: 0, storedOutsideHome: 0, crossingPulls: 0 };
    const counted = await ctx.countS3(async () => {
      const all = stores();
      if (strategy === 'replicate-everything') {
        const rep = new Replicator(Regions.of(HOME, all), new Rules([{ repos: ['**'], reason: 'dr' }]), { concurrency: 2 });
        const report = await rep.reconcile({ signal: ctx.signal });
        out.crossRegionBytes += report.bytes;
      }
      // One reader per region, as one transship instance per region would have.
      const readers = Object.fromEntries(REGIONS.map((r) => [r, new PlacedReader(Regions.of(r, all, [...REGIONS]), new Rules([], promotion(strategy)))]));
      for (const pull of sequence) {
        if (ctx.signal.aborted) throw new Error('interrupted');
        const img = images[pull.image] as BuiltImage;
        const reader = readers[pull.region] as PlacedReader;
        const repo = `app/img${pull.image}`;
        const tag = await reader.getTag(repo, 'v1', { signal: ctx.signal });
        if (!tag) throw new Error(`tag of ${repo} not found from region ${pull.region}`);
        let crossed = false;
        for (const desc of [img.root.descriptor, ...img.blobs]) {
          const placed = await reader.open(desc.digest, { repo, signal: ctx.signal });
          const bytes = (await buffer(placed.stream)).length;
          out.reads++;
          const local = placed.location === 'local';
          if (local) out.localReads++;
          else {
            out.crossRegionBytes += bytes;
            crossed = true;
          }
          if (pull.image < POPULAR) {
            out.popularReads++;
            if (local) out.popularLocal++;
          }
        }
        if (crossed) out.crossingPulls++;
      }
      for (const s of Object.values(all)) await s.close();
    });
    out.s3Requests = counted.s3.total;
    for (const s of Object.values(pushStores)) {
      if (s.region === HOME) continue;
      for await (const b of s.listBlobs({ signal: ctx.signal })) out.storedOutsideHome += b.size;
    }
    for (const s of Object.values(pushStores)) await s.close();
    for (const b of Object.values(buckets)) await ctx.reclaim(b);
    ctx.log(`placement: ${catalog} images, ${strategy}: ${JSON.stringify(out)}`);
    return out;
  };

  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
  const pct = (a: number, b: number) => (b === 0 ? '—' : `${((a / b) * 100).toFixed(1)}%`);
  const fewer = (a: number, b: number) => (a <= b ? `${((1 - a / b) * 100).toFixed(0)}% fewer` : `${((a / b - 1) * 100).toFixed(0)}% more`);
  const rows: Row[] = [];
  const table: string[] = [
    '| catalog | strategy | cross-region bytes | vs replicate-everything | S3 requests | popular reads local | all reads local | stored outside home |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  const details: string[] = [];
  for (const catalog of CATALOGS) {
    // Seeded (mulberry32) so every strategy sees the same pull sequence.
    const random = mulberry32(42);
    const sequence: Pull[] = zipfSequence(catalog, PULLS, 1.2, random).map((image) => ({ image, region: REGIONS[Math.floor(random() * REGIONS.length)] as string }));
    const bound = lowerBound(sequence, images);
    const results = new Map<Strategy, Outcome>();
    for (const s of STRATEGIES) results.set(s.id, await run(catalog, sequence, s.id));
    const everything = results.get('replicate-everything') as Outcome;
    const rules = results.get('rules') as Outcome;
    const tag = `[${catalog} images]`;
    rows.push(
      { scenario: `${tag} cross-region bytes: rules vs replicate-everything`, transship: mb(rules.crossRegionBytes), peer: mb(everything.crossRegionBytes), ratio: `${(rules.crossRegionBytes / everything.crossRegionBytes).toFixed(2)}×`, target: '≥ 70% fewer (≤ 0.30×)', met: rules.crossRegionBytes <= 0.3 * everything.crossRegionBytes },
      { scenario: `${tag} reads of the ${POPULAR} most popular images served locally (rules)`, transship: pct(rules.popularLocal, rules.popularReads), peer: `${pct(everything.popularLocal, everything.popularReads)} (replicate-everything)`, ratio: '', target: '≥ 90%', met: rules.popularLocal >= 0.9 * rules.popularReads },
      { scenario: `${tag} lower bound for any lazy strategy (each distinct blob read in a region crosses once)`, transship: mb(bound.bytes), peer: mb(everything.crossRegionBytes), ratio: `${(bound.bytes / everything.crossRegionBytes).toFixed(2)}×`, target: 'report', met: undefined },
      { scenario: `${tag} bytes stored outside the home region: rules vs replicate-everything`, transship: mb(rules.storedOutsideHome), peer: mb(everything.storedOutsideHome), ratio: `${(rules.storedOutsideHome / everything.storedOutsideHome).toFixed(2)}×`, target: 'report', met: undefined },
    );
    for (const s of STRATEGIES) {
      const o = results.get(s.id) as Outcome;
      table.push(`| ${catalog} | ${s.label} | ${mb(o.crossRegionBytes)} | ${s.id === 'replicate-everything' ? '—' : fewer(o.crossRegionBytes, everything.crossRegionBytes)} | ${o.s3Requests} | ${pct(o.popularLocal, o.popularReads)} | ${pct(o.localReads, o.reads)} | ${mb(o.storedOutsideHome)} |`);
    }
    const hist = new Map<number, number>();
    for (const n of bound.perPair.values()) hist.set(n, (hist.get(n) ?? 0) + 1);
    const pulls = [...bound.perPair.values()].reduce((a, b) => a + b, 0);
    details.push(
      `- ${catalog} images: ${pulls} of ${PULLS} pulls came from regions b/c, over ${bound.pairs} distinct (image, remote region) pairs; pulls per pair: ${[...hist.entries()].sort((a, b) => a[0] - b[0]).map(([k, v]) => `${v}×${k}`).join(', ')} (count×pulls). ` +
        `Pulls that moved bytes across regions: ${STRATEGIES.map((s) => `${s.id} ${(results.get(s.id) as Outcome).crossingPulls}`).join(', ')}. ` +
        `A threshold of k makes each pair cross min(pulls, k) times, so the bytes above the lower bound (${mb(bound.bytes)}) are the 2nd…k-th pulls of pairs read more than once.`,
    );
    // The storage side priced: promoting on the first read saves transfer once, then pays storage every month the
    // extra copies are kept; this is how long they may be kept before the default is the cheaper of the two.
    const first = results.get('first-read') as Outcome;
    const savedTransfer = (rules.crossRegionBytes - first.crossRegionBytes) * DEFAULT_PRICES.crossRegionPerGb;
    const extraStorage = (first.storedOutsideHome - rules.storedOutsideHome) * DEFAULT_PRICES.storageGbMonth;
    if (savedTransfer > 0 && extraStorage > 0) {
      details.push(`- ${catalog} images: promoting on the first read instead of the 2nd saves ${mb(rules.crossRegionBytes - first.crossRegionBytes)} of transfer once and stores ${mb(first.storedOutsideHome - rules.storedOutsideHome)} more outside home; at AWS list prices it is the cheaper choice only if promoted copies are evicted within ${((savedTransfer / extraStorage) * 30).toFixed(0)} days (transship does not evict them).`);
    }
    for (const s of STRATEGIES) details.push(`- ${catalog} images, ${s.id}: ${JSON.stringify(results.get(s.id))}`);
  }
  return {
    id: 'placement',
    title: 'Placement across regions (issue 4)',
    intro: [
      `Simulation on real stores: three buckets on the same RGW (regions a, b, c), every request through the counting proxy. A catalog of images (a shared 256 KiB base layer, two own layers of 256 and 128 KiB, config, manifest) is pushed in region a (not counted), then ${PULLS} pulls with Zipf(1.2) popularity from a uniformly chosen region read the manifest and every blob through transship's read path. Run on a 200-image and a 40-image catalog, same seed.`,
      'Strategies: replicate-everything (a DR rule on `**`, replicated before the pulls, then local reads); pull-through only (lazy fetch every time); transship rules, the shipped default (lazy fetch, promotion into the reading region at the 2nd remote read of a blob within an hour — the threshold src/placement/cost.ts derives from the price table); the previous default (3rd read); and promotion on the first remote read (`promote.policy: always`). "Stored outside home" is the blob bytes held in regions b and c afterwards: what each strategy pays in storage every month for the bytes it saved.',
      '',
      ...table,
    ],
    rows,
    details: [
      ...details,
      '- Cross-region bytes count every byte read from another region plus every byte replicated or promoted. Counting demand per image (promote all blobs of a manifest once it crossed k times) moves the same bytes here: every pull reads every blob, so each blob\'s count equals its image\'s.',
      '- At AWS list prices (transfer $0.02/GB, storage $0.023/GB-month) a stored byte costs about one crossing per month; promoted copies are not evicted, so promoting on the first read trades a one-off transfer saving for storage kept forever — see src/placement/cost.ts promotionThreshold.',
    ],
    date: new Date().toISOString(),
  };
}
