// `oci-archive:FILE[:REF]`: a tar of an OCI layout (what `skopeo copy … oci-archive:` writes).
//
// Source: the tar is indexed once (tar-index.ts: header pass, offsets) and every layout file is read as a byte
// range of the archive, so nothing is extracted and nothing is held in memory; the layout logic is shared with
// `oci:` (layout-reader.ts). Destination: a layout is written to a private temp directory next to FILE (same file
// system, so the final rename is atomic), and commit streams it into FILE.tmp and renames it over FILE: a reader
// never sees a half-written archive. Like skopeo, writing replaces FILE; it does not merge into an existing one.
import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { fromFsError, isTransshipError, throwIfAborted } from '@transship/core/errors';
import type { Signalled } from '@transship/core/signal';
import type { RefTarget } from '../reference.js';
import type { Descriptor, DestinationPutResult, FetchedManifest, ImageDestination, ImageSource } from '../types.js';
import { LayoutImageSource, type LayoutFiles } from './layout-reader.js';
import { OciLayoutDestination } from './oci-layout.js';
import { TarIndex } from './tar-index.js';

type TarHeader = Partial<tar.Header> & Pick<tar.Header, 'name'>;

class TarLayoutFiles implements LayoutFiles {
  constructor(private readonly index: TarIndex) {}
  open(path: string, signal?: AbortSignal): Promise<Readable> {
    return this.index.open(path, signal);
  }
  close(): Promise<void> {
    return this.index.close();
  }
}

/** Opens `oci-archive:FILE[:REF]` as a source. */
export async function openOciArchiveSource(file: string, target: RefTarget = {}, opts: Signalled = {}): Promise<ImageSource> {
  const index = await TarIndex.open(file, opts);
  const ref = target.digest ? `:${target.digest}` : target.tag ? `:${target.tag}` : '';
  return LayoutImageSource.open(new TarLayoutFiles(index), target, `oci-archive:${file}${ref}`, opts);
}

const MTIME = new Date(0);

/** Streams a layout directory into a tar at `out` (fixed order and mtimes, so equal layouts give equal archives). */
export async function tarLayoutDirectory(dir: string, out: string, signal?: AbortSignal): Promise<void> {
  const pack = tar.pack();
  const add = (header: TarHeader, path?: string): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const h: TarHeader = { mode: header.type === 'directory' ? 0o755 : 0o644, mtime: MTIME, uid: 0, gid: 0, ...header };
      if (path === undefined) {
        pack.entry(h, (err) => (err ? reject(err) : resolve()));
        return;
      }
      const sink = pack.entry(h, (err) => (err ? reject(err) : resolve()));
      pipeline(createReadStream(path), sink, signal ? { signal } : {}).catch(reject);
    });
  const producing = (async () => {
    for (const name of ['oci-layout', 'index.json']) await add({ name, type: 'file', size: (await stat(join(dir, name))).size }, join(dir, name));
    await add({ name: 'blobs/', type: 'directory' });
    for (const alg of (await readdir(join(dir, 'blobs'))).sort()) {
      await add({ name: `blobs/${alg}/`, type: 'directory' });
      for (const hex of (await readdir(join(dir, 'blobs', alg))).sort()) {
        if (hex.startsWith('.')) continue; // temp files of interrupted writes
        throwIfAborted(signal);
        const path = join(dir, 'blobs', alg, hex);
        await add({ name: `blobs/${alg}/${hex}`, type: 'file', size: (await stat(path)).size }, path);
      }
    }
    pack.finalize();
  })();
  try {
    await Promise.all([pipeline(pack, createWriteStream(out, { flags: 'wx', flush: true }), signal ? { signal } : {}), producing]);
  } catch (err) {
    pack.destroy();
    throwIfAborted(signal);
    throw isTransshipError(err) ? err : fromFsError(err, out);
  }
}

export class OciArchiveDestination implements ImageDestination {
  readonly description: string;
  private committed = false;

  private constructor(
    readonly file: string,
    private readonly tempDir: string,
    private readonly layout: OciLayoutDestination,
  ) {
    this.description = `oci-archive:${file}:${layout.tag}`;
  }

  static async open(file: string, target: RefTarget = {}, opts: Signalled = {}): Promise<OciArchiveDestination> {
    let tempDir: string;
    try {
      tempDir = await mkdtemp(join(dirname(file), `.${basename(file)}.transship-`));
    } catch (err) {
      throw fromFsError(err, dirname(file));
    }
    try {
      return new OciArchiveDestination(file, tempDir, await OciLayoutDestination.open(tempDir, target, opts));
    } catch (err) {
      await rm(tempDir, { recursive: true, force: true });
      throw err;
    }
  }

  present(descs: readonly Descriptor[], opts?: Signalled): Promise<Map<string, 'cache' | 'exists'>> {
    return this.layout.present(descs, opts);
  }

  putBlob(desc: Descriptor, open: () => Promise<Readable>, opts?: Signalled & { onProgress?: (bytes: number) => void }): Promise<DestinationPutResult> {
    return this.layout.putBlob(desc, open, opts);
  }

  putManifest(m: FetchedManifest, opts?: Signalled): Promise<DestinationPutResult> {
    return this.layout.putManifest(m, opts);
  }

  async commit(root: FetchedManifest, opts: Signalled = {}): Promise<void> {
    await this.layout.commit(root, opts);
    const tmp = `${this.file}.tmp-${randomUUID()}`;
    try {
      await tarLayoutDirectory(this.tempDir, tmp, opts.signal);
      await rename(tmp, this.file);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw isTransshipError(err) ? err : fromFsError(err, this.file);
    }
    this.committed = true;
    await rm(this.tempDir, { recursive: true, force: true });
  }

  /** Removes the temp layout; an uncommitted archive leaves nothing behind. */
  async close(): Promise<void> {
    if (!this.committed) await rm(this.tempDir, { recursive: true, force: true });
    await this.layout.close();
  }
}
