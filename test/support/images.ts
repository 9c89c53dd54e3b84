// Test images built programmatically, deterministic from a seed, so tests and benchmarks need no network and no
// docker. Layers are real tars (gzip or plain) of a few files; their payload is an AES-CTR keystream of the seed:
// incompressible like real binaries, reproducible, and produced in 64 KiB chunks so a 1 GiB layer is streamed to
// disk without ever being held in memory.
//
// Sharing layers between images: pass the same Buffer, or the same LayerSpec seed, in `layers` — the same seed and
// size always give byte-identical blobs (and the same digest).
import { createCipheriv, createHash, randomUUID, type Hash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createReadStream, createWriteStream, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { once } from 'node:events';
import { createGzip, gunzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { digestOf } from '@transship/core/digest';
import { MediaTypes, type Descriptor, type FetchedManifest, type ImageDestination, type ImageSource } from '../../packages/transship/src/transfer/types.js';
import { synthesizeDockerManifest } from '../../packages/transship/src/transfer/sources/docker-archive.js';

type TarHeader = Partial<tar.Header> & Pick<tar.Header, 'name'>;

export const FIXED_MTIME = new Date('2020-01-01T00:00:00Z');
const CHUNK = 64 * 1024;
const ZEROS = Buffer.alloc(CHUNK);

/** A generated layer: `size` bytes of seeded random payload in a tar with a few small files. */
export interface LayerSpec {
  seed: string | number;
  /** Payload bytes (the tar is ~2 KiB larger). Default: the image's `layerSize`. */
  size?: number;
  /** Default: the image's `gzip`. */
  gzip?: boolean;
}

/** A Buffer is used verbatim as the layer blob (gzip detected by its magic bytes). */
export type LayerInput = Buffer | LayerSpec;

export interface MakeImageOptions {
  /** Ref name annotation in index.json. Default `latest`. */
  tag?: string;
  /** How many generated layers (from `seed`), or explicit layers. Default 2. */
  layers?: number | LayerInput[];
  /** Payload bytes per generated layer. Default 4096. */
  layerSize?: number;
  seed?: string | number;
  /** Root is an image index with linux/amd64 and linux/arm64 manifests. */
  multiArch?: boolean;
  /** Compress generated layers. Default true. */
  gzip?: boolean;
}

export interface BuiltImage {
  /** Layout directory or archive file. */
  path: string;
  tag: string;
  /** The manifest (or, multiArch, the index) the tag points at. */
  root: FetchedManifest;
  /** Digest of `root`. */
  manifestDigest: string;
  /** Platform manifests (1, or 2 when multiArch). */
  manifests: FetchedManifest[];
  configs: Descriptor[];
  layers: Descriptor[];
  /** Every non-manifest blob (configs and layers), unique by digest. */
  blobs: Descriptor[];
}

const PLATFORMS = [
  { architecture: 'amd64', os: 'linux' },
  { architecture: 'arm64', os: 'linux', variant: 'v8' },
] as const;

/** A deterministic keystream: same seed, same bytes. */
function keystream(seed: string): (n: number) => Buffer {
  const key = createHash('sha256').update(`transship-test-layer:${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return (n) => cipher.update(n === CHUNK ? ZEROS : Buffer.alloc(n));
}

class HashTap extends Transform {
  bytes = 0;
  constructor(private readonly hash: Hash) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    cb(null, chunk);
  }
}

async function writeStreamEntry(pack: tar.Pack, name: string, size: number, next: (n: number) => Buffer): Promise<void> {
  const done = new Promise<void>((resolve, reject) => {
    const entry = pack.entry({ name, size, mode: 0o644, mtime: FIXED_MTIME, uid: 0, gid: 0, type: 'file' }, (err) => (err ? reject(err) : resolve()));
    void (async () => {
      for (let left = size; left > 0; ) {
        const n = Math.min(CHUNK, left);
        left -= n;
        if (!entry.write(next(n))) await once(entry, 'drain');
      }
      entry.end(undefined);
    })().catch(reject);
  });
  return done;
}

function addEntry(pack: tar.Pack, header: TarHeader, data?: Buffer | string): Promise<void> {
  return new Promise((resolve, reject) => {
    const h: TarHeader = { mode: header.type === 'directory' ? 0o755 : 0o644, mtime: FIXED_MTIME, uid: 0, gid: 0, ...header };
    if (data === undefined) pack.entry(h, (err) => (err ? reject(err) : resolve()));
    else pack.entry(h, data, (err) => (err ? reject(err) : resolve()));
  });
}

/** Writes `bytes` (or a stream producer) to blobs/sha256/<hex> under `layout`, returns digest and size. */
async function storeBlob(layout: string, source: Array<Readable | NodeJS.ReadWriteStream> | Buffer, mediaType: string): Promise<Descriptor> {
  const dir = join(layout, 'blobs', 'sha256');
  await mkdir(dir, { recursive: true });
  if (Buffer.isBuffer(source)) {
    const digest = digestOf(source);
    await writeFile(join(dir, digest.slice(7)), source);
    return { mediaType, digest, size: source.length };
  }
  const tmp = join(dir, `.tmp-${randomUUID()}`);
  const hash = createHash('sha256');
  const tap = new HashTap(hash);
  await pipeline([...source, tap, createWriteStream(tmp)]);
  const digest = `sha256:${hash.digest('hex')}`;
  await rename(tmp, join(dir, digest.slice(7)));
  return { mediaType, digest, size: tap.bytes };
}

interface Layer {
  desc: Descriptor;
  diffId: string;
}

/** Generates one layer blob into `layout`, streaming. */
async function generateLayer(layout: string, seed: string, size: number, gzip: boolean, oci: boolean): Promise<Layer> {
  const pack = tar.pack();
  const diff = createHash('sha256');
  const stages: NodeJS.ReadWriteStream[] = [new HashTap(diff)];
  // Level 1 for big payloads: random data does not compress anyway, and benchmarks should not wait on zlib.
  if (gzip) stages.push(createGzip({ level: size > 8 * 1024 * 1024 ? 1 : 6 }));
  const mediaType = oci ? (gzip ? MediaTypes.ociLayerGzip : MediaTypes.ociLayer) : gzip ? MediaTypes.dockerLayerGzip : MediaTypes.dockerLayer;
  const producing = (async () => {
    await addEntry(pack, { name: 'etc/', type: 'directory' });
    await addEntry(pack, { name: 'etc/transship-seed', type: 'file' }, `seed ${seed}\n`);
    await addEntry(pack, { name: 'data/', type: 'directory' });
    await writeStreamEntry(pack, 'data/payload.bin', size, keystream(seed));
    await addEntry(pack, { name: 'data/README', type: 'file' }, `payload of ${size} bytes from seed ${seed}\n`);
    pack.finalize();
  })();
  const [desc] = await Promise.all([storeBlob(layout, [pack as unknown as Readable, ...stages], mediaType), producing]);
  return { desc, diffId: `sha256:${diff.digest('hex')}` };
}

function isGzip(b: Buffer): boolean {
  return b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;
}

async function layerFromInput(layout: string, input: LayerInput, defaults: { size: number; gzip: boolean }, oci: boolean): Promise<Layer> {
  if (Buffer.isBuffer(input)) {
    const gz = isGzip(input);
    const mediaType = oci ? (gz ? MediaTypes.ociLayerGzip : MediaTypes.ociLayer) : gz ? MediaTypes.dockerLayerGzip : MediaTypes.dockerLayer;
    return { desc: await storeBlob(layout, input, mediaType), diffId: digestOf(gz ? gunzipSync(input) : input) };
  }
  return generateLayer(layout, String(input.seed), input.size ?? defaults.size, input.gzip ?? defaults.gzip, oci);
}

/** A small layer as a Buffer (for sharing between images by value). */
export async function makeLayer(spec: LayerSpec): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'ts-layer-'));
  try {
    const layer = await generateLayer(dir, String(spec.seed), spec.size ?? 4096, spec.gzip ?? true, true);
    return await readFile(join(dir, 'blobs', 'sha256', layer.desc.digest.slice(7)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function layerInputs(opts: MakeImageOptions, platformSeed: string): LayerInput[] {
  const layers = opts.layers ?? 2;
  if (typeof layers !== 'number') return layers;
  return Array.from({ length: layers }, (_, i) => ({ seed: `${platformSeed}/layer/${i}` }));
}

function configJson(platform: (typeof PLATFORMS)[number], diffIds: string[], seed: string): Buffer {
  const config = {
    created: FIXED_MTIME.toISOString(),
    ...platform,
    config: { Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Cmd: ['/bin/sh'], Labels: { 'io.transship.test.seed': seed } },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created: FIXED_MTIME.toISOString(), created_by: `transship test layer ${i}` })),
  };
  return Buffer.from(JSON.stringify(config));
}

function fetched(bytes: Buffer, mediaType: string, extra: Partial<Descriptor> = {}): FetchedManifest {
  return { descriptor: { mediaType, digest: digestOf(bytes), size: bytes.length, ...extra }, bytes };
}

function uniqueByDigest(descs: Descriptor[]): Descriptor[] {
  const seen = new Map<string, Descriptor>();
  for (const d of descs) if (!seen.has(d.digest)) seen.set(d.digest, d);
  return [...seen.values()];
}

/**
 * Builds (or adds to) an OCI layout at `dir`: layers, config(s), manifest(s), optional index, and an index.json
 * entry tagged `tag` (replacing an older entry with the same tag, keeping others).
 */
export async function makeOciLayout(dir: string, opts: MakeImageOptions = {}): Promise<BuiltImage> {
  const tag = opts.tag ?? 'latest';
  const seed = String(opts.seed ?? 'transship');
  const defaults = { size: opts.layerSize ?? 4096, gzip: opts.gzip ?? true };
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const platforms = opts.multiArch ? PLATFORMS : PLATFORMS.slice(0, 1);
  const manifests: FetchedManifest[] = [];
  const configs: Descriptor[] = [];
  const layers: Descriptor[] = [];
  for (const platform of platforms) {
    const platformSeed = opts.multiArch ? `${seed}/${platform.architecture}` : seed;
    const built: Layer[] = [];
    for (const input of layerInputs(opts, platformSeed)) built.push(await layerFromInput(dir, input, defaults, true));
    const config = await storeBlob(dir, configJson(platform, built.map((l) => l.diffId), platformSeed), MediaTypes.ociConfig);
    const manifest = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers: built.map((l) => l.desc) }),
    );
    await storeBlob(dir, manifest, MediaTypes.ociManifest);
    manifests.push(fetched(manifest, MediaTypes.ociManifest, opts.multiArch ? { platform: { ...platform } } : {}));
    configs.push(config);
    layers.push(...built.map((l) => l.desc));
  }
  let root = manifests[0] as FetchedManifest;
  if (opts.multiArch) {
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: manifests.map((m) => m.descriptor) }));
    await storeBlob(dir, index, MediaTypes.ociIndex);
    root = fetched(index, MediaTypes.ociIndex);
  }
  await writeIndexJson(dir, tag, root.descriptor);
  return {
    path: dir,
    tag,
    root,
    manifestDigest: root.descriptor.digest,
    manifests,
    configs,
    layers: uniqueByDigest(layers),
    blobs: uniqueByDigest([...configs, ...layers]),
  };
}

async function writeIndexJson(dir: string, tag: string, root: Descriptor): Promise<void> {
  const path = join(dir, 'index.json');
  let manifests: Descriptor[];
  try {
    manifests = (JSON.parse(await readFile(path, 'utf8')) as { manifests: Descriptor[] }).manifests;
  } catch {
    manifests = [];
  }
  manifests = manifests.filter((m) => m.annotations?.['org.opencontainers.image.ref.name'] !== tag);
  manifests.push({ mediaType: root.mediaType, digest: root.digest, size: root.size, annotations: { 'org.opencontainers.image.ref.name': tag } });
  await writeFile(path, JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests }));
}

/** One entry of a hand-made tar (hostile-input tests). `data` for files; `linkname` for links. */
export interface TarEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'fifo';
  data?: Buffer | string;
  /** A file on disk to stream as the entry's body (big blobs). */
  file?: string;
  linkname?: string;
}

/** Writes a tar of `entries`, in order, streaming file-backed entries. */
export async function writeTar(path: string, entries: readonly TarEntry[]): Promise<void> {
  const pack = tar.pack();
  const producing = (async () => {
    for (const e of entries) {
      if (e.file !== undefined) {
        const { size } = await stat(e.file);
        const done = new Promise<void>((resolve, reject) => {
          const sink = pack.entry({ name: e.name, size, mode: 0o644, mtime: FIXED_MTIME, type: 'file' }, (err) => (err ? reject(err) : resolve()));
          pipeline(createReadStream(e.file as string), sink).catch(reject);
        });
        await done;
      } else if (e.type === 'symlink' || e.type === 'link') {
        await addEntry(pack, { name: e.name, type: e.type, linkname: e.linkname ?? '' });
      } else if (e.type === 'directory' || e.type === 'fifo') {
        await addEntry(pack, { name: e.name, type: e.type });
      } else {
        await addEntry(pack, { name: e.name, type: 'file' }, typeof e.data === 'string' ? Buffer.from(e.data) : (e.data ?? Buffer.alloc(0)));
      }
    }
    pack.finalize();
  })();
  await Promise.all([pipeline(pack, createWriteStream(path)), producing]);
}

/** The entries of a layout directory, in a stable order, file-backed. */
async function layoutEntries(dir: string): Promise<TarEntry[]> {
  const out: TarEntry[] = [{ name: 'oci-layout', file: join(dir, 'oci-layout') }, { name: 'index.json', file: join(dir, 'index.json') }];
  out.push({ name: 'blobs/', type: 'directory' });
  for (const alg of (await readdir(join(dir, 'blobs'))).sort()) {
    out.push({ name: `blobs/${alg}/`, type: 'directory' });
    for (const hex of (await readdir(join(dir, 'blobs', alg))).sort()) {
      if (!hex.startsWith('.')) out.push({ name: `blobs/${alg}/${hex}`, file: join(dir, 'blobs', alg, hex) });
    }
  }
  return out;
}

/** Tars an existing layout directory (what `oci-archive:` reads). */
export async function tarLayout(dir: string, file: string): Promise<void> {
  await writeTar(file, await layoutEntries(dir));
}

/** An `oci-archive:` file: a layout built in a temp dir, then tarred. */
export async function makeOciArchive(file: string, opts: MakeImageOptions = {}): Promise<BuiltImage> {
  const dir = await mkdtemp(join(tmpdir(), 'ts-ociarchive-'));
  try {
    const built = await makeOciLayout(dir, opts);
    await tarLayout(dir, file);
    return { ...built, path: file };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface DockerImageOptions extends Omit<MakeImageOptions, 'multiArch' | 'tag'> {
  /** RepoTags in manifest.json. Default `["transship/test:latest"]`. */
  repoTags?: string[];
}

export interface DockerArchiveOptions {
  /** `legacy`: `<id>/layer.tar` + `<hex>.json` (docker < 25); `oci`: `blobs/sha256/…` paths plus an OCI layout (docker ≥ 25). */
  format?: 'legacy' | 'oci';
  /** With `oci`: also write docker 25's `<id>/layer.tar` symlinks into blobs/ (sources must not follow them). */
  symlinks?: boolean;
}

export interface BuiltDockerImage {
  repoTags: string[];
  config: Descriptor;
  layers: Descriptor[];
  /** The Docker v2 schema 2 manifest a docker-archive source synthesizes for this image. */
  manifest: FetchedManifest;
}

export interface BuiltDockerArchive {
  path: string;
  images: BuiltDockerImage[];
}

/** A `docker save`-style archive with one or more images. Layers default to uncompressed (as docker saves them). */
export async function makeDockerArchive(file: string, images: DockerImageOptions | DockerImageOptions[] = {}, opts: DockerArchiveOptions = {}): Promise<BuiltDockerArchive> {
  const list = Array.isArray(images) ? images : [images];
  const format = opts.format ?? 'legacy';
  const dir = await mkdtemp(join(tmpdir(), 'ts-dockerarchive-'));
  try {
    const built: BuiltDockerImage[] = [];
    const manifestJson: Array<{ Config: string; RepoTags: string[]; Layers: string[] }> = [];
    const entries: TarEntry[] = [];
    const written = new Set<string>();
    const blobEntry = (d: Descriptor): string => `blobs/sha256/${d.digest.slice(7)}`;
    const legacyEntry = (d: Descriptor): string => `${d.digest.slice(7)}/layer.tar`;
    const ociIndex: Descriptor[] = [];
    for (const [i, image] of list.entries()) {
      const seed = String(image.seed ?? `transship-docker-${i}`);
      const defaults = { size: image.layerSize ?? 4096, gzip: image.gzip ?? false };
      const layers: Layer[] = [];
      for (const input of layerInputs(image, seed)) layers.push(await layerFromInput(dir, input, defaults, false));
      const configBytes = configJson(PLATFORMS[0], layers.map((l) => l.diffId), seed);
      const config = await storeBlob(dir, configBytes, MediaTypes.dockerConfig);
      const repoTags = image.repoTags ?? ['transship/test:latest'];
      const onDisk = (d: Descriptor): string => join(dir, 'blobs', 'sha256', d.digest.slice(7));
      const configPath = format === 'oci' ? blobEntry(config) : `${config.digest.slice(7)}.json`;
      const layerPaths = layers.map((l) => (format === 'oci' ? blobEntry(l.desc) : legacyEntry(l.desc)));
      for (const [d, p] of [[config, configPath], ...layers.map((l, j) => [l.desc, layerPaths[j]] as const)] as Array<readonly [Descriptor, string]>) {
        if (written.has(p)) continue;
        written.add(p);
        if (format === 'legacy' && p.endsWith('/layer.tar')) {
          entries.push({ name: `${d.digest.slice(7)}/`, type: 'directory' }, { name: `${d.digest.slice(7)}/VERSION`, data: '1.0' });
          entries.push({ name: `${d.digest.slice(7)}/json`, data: JSON.stringify({ id: d.digest.slice(7) }) });
        }
        entries.push({ name: p, file: onDisk(d) });
        if (format === 'oci' && opts.symlinks && d !== config) {
          entries.push({ name: `${d.digest.slice(7)}/`, type: 'directory' }, { name: legacyEntry(d), type: 'symlink', linkname: `../${blobEntry(d)}` });
        }
      }
      manifestJson.push({ Config: configPath, RepoTags: repoTags, Layers: layerPaths });
      const manifest = synthesizeDockerManifest(config, layers.map((l) => l.desc));
      if (format === 'oci') {
        const mpath = join(dir, 'blobs', 'sha256', manifest.descriptor.digest.slice(7));
        await writeFile(mpath, manifest.bytes);
        entries.push({ name: blobEntry(manifest.descriptor), file: mpath });
        ociIndex.push({ ...manifest.descriptor, annotations: { 'io.containerd.image.name': repoTags[0] ?? '' } });
      }
      built.push({ repoTags, config, layers: layers.map((l) => l.desc), manifest });
    }
    entries.push({ name: 'manifest.json', data: JSON.stringify(manifestJson) });
    if (format === 'oci') {
      entries.push({ name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' });
      entries.push({ name: 'index.json', data: JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: ociIndex }) });
    }
    await writeTar(file, entries);
    return { path: file, images: built };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A minimal copy (root → child manifests → blobs → manifests → commit) for transport tests; the real engine, with
 * dedup, retries and progress, lives in src/transfer. Returns the digests of the blobs it wrote.
 */
export async function copyImageForTest(src: ImageSource, dst: ImageDestination, signal?: AbortSignal): Promise<string[]> {
  const written: string[] = [];
  const root = await src.root({ signal });
  const manifests: FetchedManifest[] = [];
  const visit = async (m: FetchedManifest): Promise<void> => {
    const doc = JSON.parse(m.bytes.toString('utf8')) as { manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
    if (doc.manifests) {
      for (const child of doc.manifests) await visit(await src.manifest(child, { signal }));
    } else {
      for (const blob of [...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])]) {
        const r = await dst.putBlob(blob, () => src.blob(blob, { signal }), { signal });
        if (r.status === 'written') written.push(blob.digest);
      }
    }
    manifests.push(m);
  };
  await visit(root);
  for (const m of manifests) await dst.putManifest(m, { signal });
  await dst.commit(root, { signal });
  return written;
}

/**
 * Path of a working skopeo, installing the Debian package when it is missing and we are root; undefined when it
 * cannot be had (tests then skip with that reason rather than fail on the machine).
 */
export function ensureSkopeo(): string | undefined {
  const found = spawnSync('skopeo', ['--version'], { encoding: 'utf8' });
  if (found.status === 0) return 'skopeo';
  if (process.getuid?.() !== 0) return undefined;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'skopeo'], { stdio: 'ignore', env });
  return spawnSync('skopeo', ['--version']).status === 0 ? 'skopeo' : undefined;
}

/** Runs skopeo with a private policy that accepts everything (tests never rely on the host's policy.json). */
export function runSkopeo(args: string[], workDir: string): { status: number | null; stdout: string; stderr: string } {
  const policy = join(workDir, 'skopeo-policy.json');
  writeFileSync(policy, '{"default":[{"type":"insecureAcceptAnything"}]}');
  const r = spawnSync('skopeo', ['--policy', policy, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
