// `docker-archive:FILE[:NAME:TAG|:@N]`: the tar `docker save` writes. It has no registry manifest, only
// manifest.json (`[{Config, RepoTags, Layers}]`), so we synthesize a Docker v2 schema 2 manifest whose descriptors
// carry the real digests and sizes of the config and layer files, exactly as skopeo does: the result can be pushed
// anywhere and pulled back byte-identical.
//
// Older docker writes `<id>/layer.tar` (uncompressed, not content-addressed), so those layers are hashed once while
// opening; docker ≥ 25 writes `blobs/sha256/<hex>` paths, whose names already are their digests, so they are only
// sniffed (gzip or not) and verified while served, like every blob. Paths in manifest.json are untrusted: they are
// normalized and resolved only inside the archive index; links are never followed (docker 25's legacy
// `<id>/layer.tar` symlinks are simply not used, since manifest.json points at the blobs).
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { digestOf, parseDigest } from '@transship/core/digest';
import { isTransshipError, throwIfAborted, TransshipError } from '@transship/core/errors';
import type { Signalled } from '@transship/core/signal';
import { normalizeDockerName } from '../reference.js';
import { MediaTypes, type Descriptor, type FetchedManifest, type ImageSource } from '../types.js';
import { parseJson } from '../manifest.js';
import { TarIndex, normalizeEntryName } from './tar-index.js';
import { MAX_METADATA_BYTES, readAll, verifiedStream } from './verify.js';

/** The manifest a docker-archive image is served as (field order as docker writes it). */
export function synthesizeDockerManifest(config: Descriptor, layers: readonly Descriptor[]): FetchedManifest {
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaTypes.dockerManifest,
    config: { mediaType: MediaTypes.dockerConfig, size: config.size, digest: config.digest },
    layers: layers.map((l) => ({ mediaType: l.mediaType, size: l.size, digest: l.digest })),
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  return { descriptor: { mediaType: MediaTypes.dockerManifest, digest: digestOf(bytes), size: bytes.length }, bytes };
}

interface ArchiveImage {
  config: string;
  repoTags: string[];
  layers: string[];
}

function parseManifestJson(bytes: Buffer, file: string): ArchiveImage[] {
  const doc = parseJson(bytes, `${file}: manifest.json`, 'TS_ARCHIVE_INVALID');
  const fail = (why: string): TransshipError => new TransshipError('TS_ARCHIVE_INVALID', `${file}: manifest.json ${why}`, { details: { path: file } });
  if (!Array.isArray(doc) || doc.length === 0) throw fail('must be a non-empty array');
  return doc.map((item: unknown, i) => {
    if (typeof item !== 'object' || item === null) throw fail(`[${i}] is not an object`);
    const { Config, RepoTags, Layers } = item as Record<string, unknown>;
    if (typeof Config !== 'string') throw fail(`[${i}].Config is not a path`);
    if (!Array.isArray(Layers) || !Layers.every((l) => typeof l === 'string')) throw fail(`[${i}].Layers is not a list of paths`);
    if (RepoTags !== undefined && RepoTags !== null && (!Array.isArray(RepoTags) || !RepoTags.every((t) => typeof t === 'string'))) {
      throw fail(`[${i}].RepoTags is not a list of names`);
    }
    // Normalize now: a `..` or absolute path is an attack on whoever extracts the archive, so refuse it here too.
    return { config: normalizeEntryName(file, Config), repoTags: RepoTags ?? [], layers: Layers.map((l) => normalizeEntryName(file, l)) };
  });
}

function selectImage(images: ArchiveImage[], file: string, sel: { name?: string | undefined; index?: number | undefined }): ArchiveImage {
  if (sel.index !== undefined) {
    const image = images[sel.index];
    if (!image) throw new TransshipError('TS_TAG_UNKNOWN', `${file} holds ${images.length} image(s); there is no @${sel.index}`, { details: { index: sel.index } });
    return image;
  }
  if (sel.name !== undefined) {
    const want = normalizeDockerName(sel.name) ?? sel.name;
    const found = images.filter((img) => img.repoTags.some((t) => (normalizeDockerName(t) ?? t) === want));
    if (found.length === 0) {
      const tags = images.flatMap((i) => i.repoTags);
      throw new TransshipError('TS_TAG_UNKNOWN', `${file}: no image tagged ${sel.name} (tags: ${tags.join(', ') || 'none'})`, { details: { tag: sel.name } });
    }
    return found[0] as ArchiveImage;
  }
  if (images.length !== 1) {
    throw new TransshipError('TS_INVALID_REFERENCE', `${file} holds ${images.length} images; name one with ":NAME:TAG" or ":@N" (docker-archive:FILE[:NAME:TAG|:@N])`, {
      details: { images: images.length },
    });
  }
  return images[0] as ArchiveImage;
}

const BLOB_PATH_RE = /^blobs\/(sha256|sha512)\/([a-f0-9]+)$/;

export class DockerArchiveSource implements ImageSource {
  private constructor(
    readonly description: string,
    private readonly index: TarIndex,
    private readonly rootManifest: FetchedManifest,
    /** digest → archive entry, for config and layers. */
    private readonly paths: Map<string, string>,
  ) {}

  static async open(file: string, sel: { name?: string | undefined; index?: number | undefined } = {}, opts: Signalled = {}): Promise<DockerArchiveSource> {
    const index = await TarIndex.open(file, opts);
    try {
      const open = async (path: string, what: string): Promise<Readable> => {
        try {
          return await index.open(path, opts.signal);
        } catch (err) {
          if (isTransshipError(err, 'TS_NOT_FOUND')) {
            throw new TransshipError('TS_MANIFEST_BLOB_UNKNOWN', `${file}: ${what} ${path} is missing from the archive`, { cause: err, details: { path: file, entry: path } });
          }
          throw err;
        }
      };
      let manifestStream: Readable;
      try {
        manifestStream = await index.open('manifest.json', opts.signal);
      } catch (err) {
        if (isTransshipError(err, 'TS_NOT_FOUND')) throw new TransshipError('TS_ARCHIVE_INVALID', `${file} is not a docker archive: manifest.json is missing`, { cause: err, details: { path: file } });
        throw err;
      }
      const images = parseManifestJson(await readAll(manifestStream, MAX_METADATA_BYTES, 'manifest.json', opts.signal), file);
      const image = selectImage(images, file, sel);

      const configBytes = await readAll(await open(image.config, 'config'), MAX_METADATA_BYTES, `config ${image.config}`, opts.signal);
      parseJson(configBytes, `${file}: config ${image.config}`, 'TS_ARCHIVE_INVALID');
      const config: Descriptor = { mediaType: MediaTypes.dockerConfig, digest: digestOf(configBytes), size: configBytes.length };
      const paths = new Map<string, string>([[config.digest, image.config]]);
      const layers: Descriptor[] = [];
      for (const path of image.layers) {
        const layer = await describeLayer(index, path, open, opts.signal);
        paths.set(layer.digest, path);
        layers.push(layer);
      }
      const manifest = synthesizeDockerManifest(config, layers);
      const name = sel.name ? `:${sel.name}` : sel.index !== undefined ? `:@${sel.index}` : '';
      return new DockerArchiveSource(`docker-archive:${file}${name}`, index, manifest, paths);
    } catch (err) {
      await index.close();
      throw err;
    }
  }

  async root(opts: Signalled = {}): Promise<FetchedManifest> {
    throwIfAborted(opts.signal);
    return this.rootManifest;
  }

  async manifest(desc: Descriptor, opts: Signalled = {}): Promise<FetchedManifest> {
    throwIfAborted(opts.signal);
    if (desc.digest !== this.rootManifest.descriptor.digest) {
      throw new TransshipError('TS_BLOB_UNKNOWN', `${this.description}: no manifest ${desc.digest} (a docker archive image has exactly one)`, { details: { digest: desc.digest } });
    }
    return this.rootManifest;
  }

  async blob(desc: Descriptor, opts: Signalled & { callerVerifies?: boolean | undefined } = {}): Promise<Readable> {
    const path = this.paths.get(parseDigest(desc.digest).value);
    if (path === undefined) throw new TransshipError('TS_BLOB_UNKNOWN', `${this.description}: no blob ${desc.digest}`, { details: { digest: desc.digest } });
    return verifiedStream(await this.index.open(path, opts.signal), desc, opts.signal, opts.callerVerifies);
  }

  async close(): Promise<void> {
    await this.index.close();
  }
}

function layerMediaType(head: Buffer): string {
  return head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b ? MediaTypes.dockerLayerGzip : MediaTypes.dockerLayer;
}

async function describeLayer(index: TarIndex, path: string, open: (path: string, what: string) => Promise<Readable>, signal?: AbortSignal): Promise<Descriptor> {
  const named = BLOB_PATH_RE.exec(path);
  const entry = index.get(path);
  if (named && entry?.type === 'file') {
    // Content-addressed already: its name is its digest (checked when served).
    const digest = parseDigest(`${named[1]}:${named[2]}`).value;
    return { mediaType: layerMediaType(await index.head(path, 2)), digest, size: entry.size };
  }
  const hash = createHash('sha256');
  let size = 0;
  let head: Buffer = Buffer.alloc(0);
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (head.length < 2) head = Buffer.concat([head, chunk.subarray(0, 2)]);
      size += chunk.length;
      hash.update(chunk);
      cb();
    },
  });
  try {
    await pipeline(await open(path, 'layer'), sink, signal ? { signal } : {});
  } catch (err) {
    throwIfAborted(signal);
    throw err;
  }
  return { mediaType: layerMediaType(head), digest: `sha256:${hash.digest('hex')}`, size };
}
