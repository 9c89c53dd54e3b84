// Reading an OCI image layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md), whether it
// is a directory or a tar: both hand us a `LayoutFiles` that opens a file by its layout-relative path, and the
// logic (oci-layout check, index.json, ref resolution, verified reads) lives once, here.
//
// Ref resolution follows skopeo: a tag matches the `org.opencontainers.image.ref.name` annotation; with no ref, a
// layout holding exactly one manifest yields it. A digest ref may also name a manifest that index.json does not
// list (a child of an index), as long as its blob is there.
import type { Readable } from 'node:stream';
import { parseDigest } from '@transship/core/digest';
import { isTransshipError, throwIfAborted, TransshipError } from '@transship/core/errors';
import type { Signalled } from '@transship/core/signal';
import type { RefTarget } from '../reference.js';
import { MediaTypes, type Descriptor, type FetchedManifest, type ImageSource } from '../types.js';
import { indexManifests, parseJson, parseManifest, REF_NAME_ANNOTATION } from '../manifest.js';
import { checkBytes, MAX_MANIFEST_BYTES, MAX_METADATA_BYTES, readAll, verifiedStream } from './verify.js';

export interface LayoutFiles {
  /** Opens a regular file by layout-relative path; throws TS_NOT_FOUND when there is none. */
  open(path: string, signal?: AbortSignal): Promise<Readable>;
  close(): Promise<void>;
}

export function blobPath(digest: string): string {
  const d = parseDigest(digest);
  return `blobs/${d.algorithm}/${d.hex}`;
}

export async function readLayoutJson(files: LayoutFiles, path: string, signal?: AbortSignal): Promise<unknown> {
  let stream: Readable;
  try {
    stream = await files.open(path, signal);
  } catch (err) {
    if (isTransshipError(err, 'TS_NOT_FOUND')) throw new TransshipError('TS_LAYOUT_INVALID', `not an OCI layout: ${path} is missing`, { cause: err, details: { path } });
    throw err;
  }
  const bytes = await readAll(stream, MAX_METADATA_BYTES, path, signal);
  return parseJson(bytes, path, 'TS_LAYOUT_INVALID');
}

/** Checks `oci-layout` and returns index.json's manifest descriptors. */
export async function readLayoutIndex(files: LayoutFiles, signal?: AbortSignal): Promise<Descriptor[]> {
  const marker = await readLayoutJson(files, 'oci-layout', signal);
  const version = typeof marker === 'object' && marker !== null ? (marker as Record<string, unknown>).imageLayoutVersion : undefined;
  if (typeof version !== 'string' || !/^1\.\d+\.\d+$/.test(version)) {
    throw new TransshipError('TS_LAYOUT_INVALID', `oci-layout declares imageLayoutVersion ${JSON.stringify(version)}; expected 1.x.y`);
  }
  return indexManifests(await readLayoutJson(files, 'index.json', signal), 'index.json', 'TS_LAYOUT_INVALID');
}

/** Picks the manifest `target` names among index.json's entries (see the header comment). */
export function selectManifest(entries: readonly Descriptor[], target: RefTarget, where: string): Descriptor | undefined {
  if (target.digest !== undefined) return entries.find((d) => d.digest === target.digest);
  if (target.tag !== undefined) {
    const found = entries.filter((d) => d.annotations?.[REF_NAME_ANNOTATION] === target.tag);
    if (found.length > 1 && new Set(found.map((d) => d.digest)).size > 1) {
      throw new TransshipError('TS_LAYOUT_INVALID', `${where}: index.json names ${found.length} different manifests "${target.tag}"`, { details: { tag: target.tag } });
    }
    if (found[0] === undefined) {
      const known = entries.map((d) => d.annotations?.[REF_NAME_ANNOTATION]).filter((x) => x !== undefined);
      throw new TransshipError('TS_TAG_UNKNOWN', `${where}: no image tagged "${target.tag}" (tags: ${known.length ? known.join(', ') : 'none'})`, { details: { tag: target.tag } });
    }
    return found[0];
  }
  if (entries.length === 1) return entries[0];
  const known = entries.map((d) => d.annotations?.[REF_NAME_ANNOTATION] ?? d.digest);
  throw new TransshipError('TS_INVALID_REFERENCE', `${where} holds ${entries.length} images; name one with ":TAG" (${known.join(', ') || 'none'})`, {
    details: { images: entries.length },
  });
}

export class LayoutImageSource implements ImageSource {
  private constructor(
    readonly description: string,
    private readonly files: LayoutFiles,
    private readonly rootDesc: Descriptor,
  ) {}

  static async open(files: LayoutFiles, target: RefTarget, description: string, opts: Signalled = {}): Promise<LayoutImageSource> {
    try {
      const entries = await readLayoutIndex(files, opts.signal);
      let root = selectManifest(entries, target, description);
      if (root === undefined && target.digest !== undefined) root = await describeUnlisted(files, target.digest, opts.signal);
      if (root === undefined) throw new TransshipError('TS_TAG_UNKNOWN', `${description}: no manifest ${target.digest}`, { details: { digest: target.digest } });
      return new LayoutImageSource(description, files, root);
    } catch (err) {
      await files.close();
      throw err;
    }
  }

  async root(opts: Signalled = {}): Promise<FetchedManifest> {
    return this.manifest(this.rootDesc, opts);
  }

  async manifest(desc: Descriptor, opts: Signalled = {}): Promise<FetchedManifest> {
    throwIfAborted(opts.signal);
    if (desc.size > MAX_MANIFEST_BYTES) {
      throw new TransshipError('TS_MANIFEST_INVALID', `manifest ${desc.digest} declares ${desc.size} bytes; the limit is ${MAX_MANIFEST_BYTES}`, { details: { digest: desc.digest } });
    }
    const bytes = checkBytes(await readAll(await this.openBlob(desc.digest, opts.signal), MAX_MANIFEST_BYTES, `manifest ${desc.digest}`, opts.signal), desc);
    const { mediaType } = parseManifest(bytes, desc.mediaType, `manifest ${desc.digest}`);
    return { descriptor: { ...desc, mediaType: desc.mediaType || mediaType }, bytes };
  }

  async blob(desc: Descriptor, opts: Signalled & { callerVerifies?: boolean | undefined } = {}): Promise<Readable> {
    return verifiedStream(await this.openBlob(desc.digest, opts.signal), desc, opts.signal, opts.callerVerifies);
  }

  async close(): Promise<void> {
    await this.files.close();
  }

  private async openBlob(digest: string, signal?: AbortSignal): Promise<Readable> {
    const path = blobPath(digest);
    try {
      return await this.files.open(path, signal);
    } catch (err) {
      if (isTransshipError(err, 'TS_NOT_FOUND')) {
        throw new TransshipError('TS_BLOB_UNKNOWN', `${this.description}: blob ${digest} is missing (${path})`, { cause: err, details: { digest } });
      }
      throw err;
    }
  }
}

/** A digest ref that index.json does not list: read the blob to learn its size and media type. */
async function describeUnlisted(files: LayoutFiles, digest: string, signal?: AbortSignal): Promise<Descriptor | undefined> {
  let stream: Readable;
  try {
    stream = await files.open(blobPath(digest), signal);
  } catch (err) {
    if (isTransshipError(err, 'TS_NOT_FOUND')) return undefined;
    throw err;
  }
  const bytes = await readAll(stream, MAX_MANIFEST_BYTES, `manifest ${digest}`, signal);
  const desc: Descriptor = { mediaType: MediaTypes.ociManifest, digest, size: bytes.length };
  checkBytes(bytes, desc);
  desc.mediaType = parseManifest(bytes, undefined, `manifest ${digest}`).mediaType;
  return desc;
}
