// `oci:DIR[:REF]`: an OCI image layout directory, as source and destination.
//
// The destination writes what skopeo (containers/image) reads: `oci-layout`, blobs under `blobs/<alg>/<hex>`, and
// `index.json` with an `org.opencontainers.image.ref.name` annotation. The write order is the store invariant in
// miniature: each blob is streamed to a temporary file next to its final name, hashed on the way, and renamed
// into place only after its digest and size matched (so a visible blob is always correct); index.json — the only
// thing that makes an image reachable — is replaced last, atomically, after the root manifest is on disk.
// Digests are parsed strictly before they name a path, so no descriptor can point outside `blobs/`.
//
// Not handled: two processes committing to the same layout at the same moment can lose one index.json update
// (the last rename wins); blobs are unaffected.
import { randomUUID } from 'node:crypto';
import { mkdir, open as fsOpen, rename, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseDigest, VerifyingStream } from '../../core/digest.js';
import { fileStream } from '../../core/file-stream.js';
import { cancelledError, fromFsError, isAbortError, isTransshipError, throwIfAborted, TransshipError } from '../../core/errors.js';
import type { Signalled } from '../../store/contract.js';
import type { RefTarget } from '../reference.js';
import { MediaTypes, type Descriptor, type DestinationPutResult, type FetchedManifest, type ImageDestination, type ImageSource } from '../types.js';
import { indexManifests, parseJson, REF_NAME_ANNOTATION } from './descriptors.js';
import { LayoutImageSource, type LayoutFiles } from './layout-reader.js';
import { checkBytes } from './verify.js';

export const OCI_LAYOUT_MARKER = '{"imageLayoutVersion":"1.0.0"}';

/** Layout files served from a directory. Paths are built by us (fixed names or parsed digests), never taken from input. */
export class DirLayoutFiles implements LayoutFiles {
  constructor(readonly root: string) {}

  async open(path: string, signal?: AbortSignal): Promise<Readable> {
    throwIfAborted(signal);
    const full = join(this.root, path);
    let handle;
    try {
      handle = await fsOpen(full, 'r');
    } catch (err) {
      throw fromFsError(err, full);
    }
    try {
      // A directory or a FIFO where a file should be would hang or fail obscurely later: refuse it now.
      const st = await handle.stat();
      if (!st.isFile()) throw new TransshipError('TS_LAYOUT_INVALID', `${full} is not a regular file`, { details: { path: full } });
    } catch (err) {
      await handle.close();
      throw err;
    }
    return fileStream(handle);
  }

  async close(): Promise<void> {}
}

async function checkDir(dir: string): Promise<void> {
  let st;
  try {
    st = await stat(dir);
  } catch (err) {
    throw fromFsError(err, dir);
  }
  if (!st.isDirectory()) throw new TransshipError('TS_LAYOUT_INVALID', `${dir} is not a directory`, { details: { path: dir } });
}

/** Opens `oci:DIR[:REF]` as a source. Throws TS_NOT_FOUND / TS_PERMISSION_DENIED / TS_LAYOUT_INVALID / TS_TAG_UNKNOWN. */
export async function openOciLayoutSource(dir: string, target: RefTarget = {}, opts: Signalled = {}): Promise<ImageSource> {
  await checkDir(dir);
  const ref = target.digest ? `:${target.digest}` : target.tag ? `:${target.tag}` : '';
  return LayoutImageSource.open(new DirLayoutFiles(dir), target, `oci:${dir}${ref}`, opts);
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    const st = await stat(path);
    return st.isFile() ? st.size : undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fromFsError(err, path);
  }
}

/** Counts bytes for onProgress without buffering. */
class ProgressStream extends Transform {
  private bytes = 0;
  constructor(private readonly onProgress: (bytes: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.onProgress(this.bytes);
    cb(null, chunk);
  }
}

/** A writable over a file handle it does not own: closing stays with whoever opened it. */
function handleSink(fh: FileHandle): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      fh.write(chunk).then(() => cb(), cb);
    },
  });
}

/** Writes a file atomically: temp file in the same directory, fsync, rename. */
async function writeAtomic(path: string, data: string | Buffer): Promise<void> {
  const tmp = join(dirname(path), `.tmp-${randomUUID()}`);
  try {
    await writeFile(tmp, data, { flag: 'wx', flush: true });
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw fromFsError(err, path);
  }
}

export class OciLayoutDestination implements ImageDestination {
  readonly description: string;

  private constructor(
    readonly dir: string,
    readonly tag: string,
  ) {
    this.description = `oci:${dir}:${tag}`;
  }

  /**
   * Opens (creating when needed) a layout directory for writing the image tagged `target.tag` (default `latest`).
   * An existing index.json must be valid: we would otherwise overwrite someone's data with ours at commit.
   */
  static async open(dir: string, target: RefTarget = {}, opts: Signalled = {}): Promise<OciLayoutDestination> {
    throwIfAborted(opts.signal);
    if (target.digest !== undefined) {
      throw new TransshipError('TS_INVALID_REFERENCE', `oci:${dir}: a destination is named by a tag, not a digest (oci:DIR[:TAG])`, { details: { digest: target.digest } });
    }
    try {
      await mkdir(join(dir, 'blobs'), { recursive: true });
    } catch (err) {
      throw fromFsError(err, dir);
    }
    const dest = new OciLayoutDestination(dir, target.tag ?? 'latest');
    await dest.readIndex();
    if ((await sizeOf(join(dir, 'oci-layout'))) === undefined) await writeAtomic(join(dir, 'oci-layout'), OCI_LAYOUT_MARKER);
    return dest;
  }

  private blobFile(digest: string): string {
    const d = parseDigest(digest);
    return join(this.dir, 'blobs', d.algorithm, d.hex);
  }

  async present(descs: readonly Descriptor[], opts: Signalled = {}): Promise<Map<string, 'cache' | 'exists'>> {
    const out = new Map<string, 'cache' | 'exists'>();
    for (const desc of descs) {
      throwIfAborted(opts.signal);
      // A size match is a hint good enough to skip a copy into a local layout; `verify` is where bytes are re-hashed.
      if ((await sizeOf(this.blobFile(desc.digest))) === desc.size) out.set(desc.digest, 'exists');
    }
    return out;
  }

  async putBlob(desc: Descriptor, open: () => Promise<Readable>, opts: Signalled & { onProgress?: (bytes: number) => void } = {}): Promise<DestinationPutResult> {
    const digest = parseDigest(desc.digest);
    const final = this.blobFile(digest.value);
    throwIfAborted(opts.signal);
    if ((await sizeOf(final)) === desc.size) return { status: 'exists' };
    try {
      await mkdir(dirname(final), { recursive: true });
    } catch (err) {
      throw fromFsError(err, dirname(final));
    }
    const tmp = join(dirname(final), `.tmp-${randomUUID()}`);
    const stages: NodeJS.ReadWriteStream[] = [new VerifyingStream({ expected: digest, size: desc.size })];
    if (opts.onProgress) stages.push(new ProgressStream(opts.onProgress));
    // The temp file is opened here, by us, before the source: a cancel at any point finds a handle to close and a
    // file to unlink (a write stream opening the file asynchronously could create it after the cleanup ran).
    let fh: FileHandle | undefined;
    let source: Readable | undefined;
    try {
      fh = await fsOpen(tmp, 'wx');
      throwIfAborted(opts.signal);
      source = await open();
      await pipeline([source, ...stages, handleSink(fh)], opts.signal ? { signal: opts.signal } : {});
      await fh.sync();
      await fh.close();
      fh = undefined;
      await rename(tmp, final);
    } catch (err) {
      if ((isAbortError(err) || isTransshipError(err, 'TS_CANCELLED')) && opts.signal?.aborted) throw cancelledError(opts.signal);
      if (isTransshipError(err)) throw err;
      throw fromFsError(err, final);
    } finally {
      source?.destroy();
      await fh?.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined); // gone already after the rename
    }
    return { status: 'written' };
  }

  async putManifest(m: FetchedManifest, opts: Signalled = {}): Promise<DestinationPutResult> {
    checkBytes(m.bytes, m.descriptor);
    return this.putBlob(m.descriptor, async () => Readable.from([m.bytes]), opts);
  }

  async commit(root: FetchedManifest, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    // The tag is the last write and must never point at a manifest that is not there.
    if ((await sizeOf(this.blobFile(root.descriptor.digest))) !== root.descriptor.size) await this.putManifest(root, opts);
    const entries = (await this.readIndex()).filter((d) => d.annotations?.[REF_NAME_ANNOTATION] !== this.tag);
    const entry: Descriptor = {
      mediaType: root.descriptor.mediaType,
      digest: root.descriptor.digest,
      size: root.descriptor.size,
      annotations: { ...(root.descriptor.annotations ?? {}), [REF_NAME_ANNOTATION]: this.tag },
    };
    if (root.descriptor.platform) entry.platform = root.descriptor.platform;
    const index = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [...entries, entry] };
    throwIfAborted(opts.signal);
    await writeAtomic(join(this.dir, 'index.json'), `${JSON.stringify(index)}\n`);
  }

  async close(): Promise<void> {}

  private async readIndex(): Promise<Descriptor[]> {
    const path = join(this.dir, 'index.json');
    let bytes: Buffer;
    try {
      const handle = await fsOpen(path, 'r');
      try {
        bytes = await handle.readFile();
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw fromFsError(err, path);
    }
    return indexManifests(parseJson(bytes, path, 'TS_LAYOUT_INVALID'), path, 'TS_LAYOUT_INVALID');
  }
}
