// What every benchmark group shares: one fresh Ceph RGW for the whole run, one counting proxy in front of it that
// every S3 client of every contender goes through, the test images, and helpers to run the contenders.
//
// Memory: RGW's memstore OSD keeps every object in RAM. After each group of big uploads the bench deletes what it
// wrote and runs RGW's garbage collector at once (`radosgw-admin gc process --include-all`), which gives the memory
// back, so a run never holds more than ~1.5 GiB of objects at a time even though it uploads several GiB in total.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import {
  CreateBucketCommand, DeleteObjectsCommand, ListMultipartUploadsCommand, AbortMultipartUploadCommand, ListObjectsV2Command, S3Client,
} from '@aws-sdk/client-s3';
import { startRgw, type Rgw } from '../test/support/rgw.js';
import { type ProxyCounts, type ProxyLogEntry } from '../test/support/s3-proxy.js';
import { startS3Relay, type S3Relay } from '../test/support/s3-relay.js';
import { makeOciLayout, type BuiltImage } from '../test/support/images.js';
import { check, readHwm, runMeasured, type Measured } from './measure.js';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const TRANSSHIP_BIN = join(REPO_ROOT, 'packages', 'transship', 'dist', 'cli', 'main.js');
const MiB = 1024 * 1024;

/**
 * skopeo pushes: plain HTTP on loopback, and `--preserve-digests`, without which skopeo gzips every uncompressed
 * layer on its way to a registry — seconds of CPU per 256 MiB charged to whichever registry is measured, and blobs
 * whose digests differ from the layout's.
 */
export const PUSH_FLAGS = ['--dest-tls-verify=false', '--preserve-digests'];
/** skopeo pulls into an OCI layout: keep the layers as served (no recompression on the client). */
export const PULL_FLAGS = ['--src-tls-verify=false', '--preserve-digests', '--dest-oci-accept-uncompressed-layers'];

export interface BenchImages {
  /** One OCI layout holding tags `a`, `b` and `big-0` … `big-N`. */
  layout: string;
  /** 3 layers of 10 MiB (uncompressed random payload) + config. */
  a: BuiltImage;
  /** Shares a's first two layers; one new 10 MiB layer; its own config. */
  b: BuiltImage;
  /**
   * One image per round (`big-<i>`), each a single 256 MiB layer with its own bytes: a registry or store that
   * already has round 1's blob would skip it, so every round needs new content to measure a real upload.
   */
  bigs: BuiltImage[];
}

export interface BenchContext {
  /** Temp dir for everything this run writes locally. */
  work: string;
  rgw: Rgw;
  proxy: S3Relay;
  /** Straight to RGW (not counted): bucket creation and cleanup. */
  admin: S3Client;
  /** AWS_* variables that point a client at the proxy. */
  s3Env: Record<string, string>;
  signal: AbortSignal;
  /** Repetitions of the timed big-layer measurements (`--rounds`, default 3); the median is reported. */
  rounds: number;
  log: (line: string) => void;
  createBucket(name: string): Promise<string>;
  /** Deletes every object (and multipart upload) in `bucket` and lets RGW free the memory now. */
  reclaim(bucket: string): Promise<void>;
  images(): Promise<BenchImages>;
  /** `node packages/transship/dist/cli/main.js ARGS` with the proxy as S3 endpoint and private cache/data dirs. */
  transship(args: string[], extraEnv?: Record<string, string>): Promise<Measured>;
  /** The environment `transship` runs with. */
  transshipEnv(extraEnv?: Record<string, string>): NodeJS.ProcessEnv;
  skopeo(args: string[]): Promise<Measured>;
  /** Peak RSS of RGW's memstore OSD so far (bytes), read from its pid file; undefined when unreadable. */
  osdPeakRss(): number | undefined;
  /** Counts the S3 requests `fn` causes (through the proxy). Nothing else may talk to S3 meanwhile. */
  countS3<T>(fn: () => Promise<T>): Promise<{ result: T; s3: ProxyCounts; requests: ProxyLogEntry[] }>;
  stop(): Promise<void>;
}

export async function startContext(opts: { signal: AbortSignal; log: (line: string) => void; rounds?: number }): Promise<BenchContext> {
  const { signal, log } = opts;
  const work = await mkdtemp(join(tmpdir(), 'transship-bench-'));
  const stops: Array<() => Promise<void>> = [async () => rm(work, { recursive: true, force: true })];
  const stop = async () => {
    for (const s of stops.splice(0).reverse()) await s().catch((err: unknown) => log(`cleanup failed: ${String(err)}`));
  };
  try {
    const t0 = Date.now();
    // 6 GiB of memstore: headroom over the ~1.5 GiB held at once (see the header comment).
    const rgw = await startRgw({ memstoreBytes: 6 * 1024 ** 3, signal });
    stops.push(() => rgw.stop());
    log(`rgw ready at ${rgw.endpoints[0]} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const endpoint = rgw.endpoints[0] as string;
    // The counting relay, not the fault-injecting proxy: same counts, a fraction of the CPU (see s3-relay.ts).
    const proxy = await startS3Relay({ target: endpoint });
    stops.push(() => proxy.close());
    const admin = new S3Client({
      endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      maxAttempts: 3,
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    });
    stops.push(async () => admin.destroy());
    const s3Env = {
      AWS_ENDPOINT_URL_S3: proxy.url,
      AWS_ACCESS_KEY_ID: rgw.accessKeyId,
      AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey,
      AWS_REGION: 'us-east-1',
    };
    const policy = join(work, 'skopeo-policy.json');
    await writeFile(policy, '{"default":[{"type":"insecureAcceptAnything"}]}');
    const xdg = join(work, 'xdg');
    await mkdir(join(xdg, 'cache'), { recursive: true });
    await mkdir(join(xdg, 'data'), { recursive: true });
    const baseEnv: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) {
      // Nothing from the caller's AWS or transship setup may steer the contenders.
      if (k.startsWith('AWS_') || k.startsWith('TRANSSHIP_') || k === 'OTEL_EXPORTER_OTLP_ENDPOINT') continue;
      baseEnv[k] = v;
    }
    const transshipEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
      ...baseEnv,
      ...s3Env,
      XDG_CACHE_HOME: join(xdg, 'cache'),
      XDG_DATA_HOME: join(xdg, 'data'),
      TRANSSHIP_LOG_LEVEL: 'warn',
      ...extra,
    });
    let images: Promise<BenchImages> | undefined;
    let buckets = 0;
    const ctx: BenchContext = {
      work,
      rgw,
      proxy,
      admin,
      s3Env,
      signal,
      rounds: opts.rounds ?? 3,
      log,
      async createBucket(name) {
        const bucket = `${name}-${Date.now().toString(36)}-${(buckets++).toString(36)}`;
        await admin.send(new CreateBucketCommand({ Bucket: bucket }), { abortSignal: signal });
        return bucket;
      },
      async reclaim(bucket) {
        await emptyBucket(admin, bucket, signal);
        await promisify(execFile)('radosgw-admin', ['-c', join(rgw.dir, 'ceph.conf'), 'gc', 'process', '--include-all'], { signal });
      },
      images: () => (images ??= buildImages(join(work, 'images'), opts.rounds ?? 3, log)),
      transshipEnv,
      transship: (args, extra) => runMeasured(process.execPath, [TRANSSHIP_BIN, ...args], { env: transshipEnv(extra), cwd: work, signal }),
      skopeo: (args) => runMeasured('skopeo', ['--policy', policy, ...args], { env: baseEnv, cwd: work, signal }),
      osdPeakRss() {
        try {
          return readHwm(Number(readFileSync(join(rgw.dir, 'run', 'osd.0.pid'), 'utf8').trim()));
        } catch {
          return undefined;
        }
      },
      async countS3(fn) {
        await proxy.settle(); // lines still on their way belong to what ran before
        proxy.reset();
        const result = await fn();
        await proxy.settle();
        return { result, s3: proxy.counts(), requests: proxy.log.map((e) => ({ ...e })) };
      },
      stop,
    };
    return ctx;
  } catch (err) {
    await stop();
    throw err;
  }
}

async function buildImages(layout: string, rounds: number, log: (line: string) => void): Promise<BenchImages> {
  const t0 = Date.now();
  const layer = (seed: string, size: number) => ({ seed: `bench/${seed}`, size, gzip: false });
  const a = await makeOciLayout(layout, { tag: 'a', seed: 'bench-a', layers: [layer('l0', 10 * MiB), layer('l1', 10 * MiB), layer('l2', 10 * MiB)] });
  const b = await makeOciLayout(layout, { tag: 'b', seed: 'bench-b', layers: [layer('l0', 10 * MiB), layer('l1', 10 * MiB), layer('b2', 10 * MiB)] });
  const bigs: BuiltImage[] = [];
  // One more than the rounds: the registry group's unmeasured warm-up push.
  for (let i = 0; i <= rounds; i++) {
    bigs.push(await makeOciLayout(layout, { tag: `big-${i}`, seed: `bench-big-${i}`, layers: [layer(`big-${i}`, 256 * MiB)] }));
  }
  log(`images built in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return { layout, a, b, bigs };
}

/** A layout with one layer of `size` bytes, tag `t` (for the memory measurement; the caller removes it). */
export async function buildSingleLayerImage(dir: string, seed: string, size: number): Promise<BuiltImage> {
  return makeOciLayout(dir, { tag: 't', seed, layers: [{ seed: `bench/${seed}`, size, gzip: false }] });
}

async function emptyBucket(s3: S3Client, bucket: string, signal: AbortSignal): Promise<void> {
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }), { abortSignal: signal });
    const keys = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
    if (keys.length) await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }), { abortSignal: signal });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }), { abortSignal: signal });
  for (const u of uploads.Uploads ?? []) {
    if (u.Key && u.UploadId) await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }), { abortSignal: signal });
  }
}

/** Undefined when `transship serve` can run in this tree, else why not. */
export function serveUnavailable(): string | undefined {
  if (!existsSync(join(REPO_ROOT, 'packages', 'transship', 'src', 'cli', 'serve.ts'))) return '`transship serve` is not available in this tree yet (src/cli/serve.ts does not exist)';
  const help = spawnSync(process.execPath, [TRANSSHIP_BIN, 'serve', '--help'], { encoding: 'utf8', timeout: 60_000 });
  // Commander answers `UNKNOWN --help` with the program's help and exit 0: look for the command's own usage line.
  if (help.status !== 0 || !/Usage: transship serve/.test(help.stdout)) {
    return '`transship serve` is not available yet: src/cli/serve.ts exists, but `transship serve --help` does not show the command (not registered in src/cli/main.ts)';
  }
  return undefined;
}

/** Parses the `--json` summary the CLI prints. */
export function parseJsonSummary<T>(m: Measured): T {
  check(m);
  const text = m.stdout.trim();
  const start = text.indexOf('{');
  if (start < 0) throw new Error(`${m.command}: no JSON on stdout:\n${text.slice(0, 2000)}`);
  return JSON.parse(text.slice(start)) as T;
}

/** One line per request, in order: `PUT reg/blobs/sha256/0e4f98fe11b1… → 200 (PutObject)` (bucket dropped, digests cut). */
export function requestLines(requests: readonly ProxyLogEntry[]): string[] {
  return requests.map((r) => {
    const key = decodeURIComponent(r.path.replace(/^\/[^/]+\/?/, '')).replace(/([0-9a-f]{12})[0-9a-f]{52}/g, '$1…');
    const query = r.query ? `?${r.query.replace(/uploadId=[^&]+/, 'uploadId=…').replace(/(continuation-token|start-after)=[^&]+/g, '$1=…')}` : '';
    return `${r.method} ${key || '(bucket)'}${query} → ${r.status} (${r.operation})`;
  });
}
