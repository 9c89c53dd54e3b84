// The embedded default store: a local directory with the same layout as a bucket (keys.ts).
//
// Why it works this way: every write goes to a private temp file under `<root>/.tmp/`, is fsynced, and only then
// renamed into place (fs-objects.ts). rename(2) is atomic on one file system, so readers see either no blob or the
// whole verified blob — the same guarantee a single S3 PutObject gives. Blobs are written only after their bytes
// hashed to the digest (VerifyingStream fails the pipeline before the rename). Two writers of the same digest both
// succeed and leave identical bytes; the second one notices the existing file and reports `exists`. Tags, links and
// listings are the shared repository layer (repository.ts) over the fs object driver.
//
// Temp files a killed writer left (`.tmp/*.part`) are swept when they are older than TEMP_ORPHAN_AGE_MS: once per
// process before the store's first write, and whenever sweepStaged() is called (garbage collection).
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { TransshipError, fromFsError, throwIfAborted } from '@transship/core/errors';
import { VerifyingStream, parseDigest } from '@transship/core/digest';
import { fileStream, SERVING_CHUNK_BYTES } from '@transship/core/file-stream';
import type { BlobInfo, ByteRange, PutBlobOptions, PutOutcome, Signalled } from './contract.js';
import { blobKey } from './keys.js';
import type { ObjectInfo } from './contract.js';
import { FsObjects } from './fs-objects.js';
import { RepositoryStore } from './repository.js';
import { blobUploadBytesTotal } from '../telemetry/metrics.js';
import { log } from '@transship/core/log';

/** A temp file older than this belongs to no live write: the longest single-file write here is far shorter. */
export const TEMP_ORPHAN_AGE_MS = 3_600_000;

export class FsStore extends RepositoryStore {
  readonly name: string;
  readonly objects: FsObjects;
  private readonly counts: Record<string, number> = {};
  private swept: Promise<void> | undefined;

  constructor(
    readonly root: string,
    readonly region = 'local',
  ) {
    super();
    this.name = `dir:${root}`;
    this.objects = new FsObjects(root, this.name, (op) => {
      this.counts[op] = (this.counts[op] ?? 0) + 1;
    });
  }

  requestCounts(): Record<string, number> {
    return { ...this.counts };
  }

  async statBlob(digest: string, opts: Signalled = {}): Promise<BlobInfo | undefined> {
    const d = parseDigest(digest);
    const info = await this.objects.stat(blobKey(d.value), opts);
    return info ? { digest: d.value, size: info.size, lastModified: info.lastModified } : undefined;
  }

  async statBlobs(digests: readonly string[], opts: Signalled = {}): Promise<Map<string, BlobInfo>> {
    const out = new Map<string, BlobInfo>();
    for (const d of digests) {
      const info = await this.statBlob(d, opts);
      if (info) out.set(info.digest, info);
    }
    return out;
  }

  async getBlob(digest: string, opts: Signalled & { range?: ByteRange | undefined } = {}): Promise<Readable> {
    throwIfAborted(opts.signal);
    const p = this.objects.path(blobKey(digest));
    this.counts.get = (this.counts.get ?? 0) + 1;
    // Open first so a missing blob is a clean error here, not an 'error' event later on the stream.
    let fh;
    try {
      fh = await open(p, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new TransshipError('TS_BLOB_UNKNOWN', `blob ${digest} is not in ${this.name}`, { details: { digest } });
      throw fromFsError(err, p);
    }
    // Large reads: a registry GET sends this to a socket (half the CPU of 64 KiB reads, see file-stream.ts).
    return fileStream(fh, opts.range, opts.signal, SERVING_CHUNK_BYTES);
  }

  async putBlob(digest: string, source: () => Readable | Promise<Readable>, opts: PutBlobOptions = {}): Promise<PutOutcome> {
    throwIfAborted(opts.signal);
    const d = parseDigest(digest);
    const existing = await this.statBlob(d.value, opts);
    if (existing) return { status: 'exists', size: existing.size };
    await this.sweepOnce();
    const verify = new VerifyingStream({ expected: d, ...(opts.size !== undefined ? { size: opts.size } : {}) });
    if (opts.onProgress) {
      const cb = opts.onProgress;
      verify.on('data', () => cb(verify.bytes));
    }
    await this.objects.atomicWrite(this.objects.path(blobKey(d.value)), async (fh) => {
      // The source is opened only once the temp file is ours, and destroyed on every path out of the pipeline.
      const input = await source();
      try {
        await pipeline(input, verify, async (chunks: AsyncIterable<Buffer>) => {
          for await (const chunk of chunks) await fh.write(chunk);
        }, opts.signal ? { signal: opts.signal } : {});
      } finally {
        input.destroy();
      }
    }, 'replace', opts.signal);
    this.counts.put = (this.counts.put ?? 0) + 1;
    blobUploadBytesTotal.inc({ store: this.name }, verify.bytes);
    return { status: 'written', size: verify.bytes };
  }

  /** Temp files older than `olderThanMs` (what killed writers left) are removed; counted as objects. */
  async sweepStaged(olderThanMs: number, opts: Signalled = {}): Promise<{ multipart: number; objects: number }> {
    const r = await this.objects.sweepTemp(olderThanMs, opts);
    if (r.files > 0) log.info({ store: this.name, files: r.files, bytes: r.bytes }, 'removed temp files that interrupted writes left');
    return { multipart: 0, objects: r.files };
  }

  listTemporary(opts: Signalled = {}): AsyncIterable<ObjectInfo> {
    return this.objects.listTemp(opts);
  }

  async close(): Promise<void> {}

  /** The open-time sweep, run before the first blob write (a store only read never writes into .tmp/). */
  private sweepOnce(): Promise<void> {
    this.swept ??= this.sweepStaged(TEMP_ORPHAN_AGE_MS).then(
      () => undefined,
      (err: unknown) => log.warn({ store: this.name, err }, 'could not sweep old temp files; the next process tries again'),
    );
    return this.swept;
  }
}
