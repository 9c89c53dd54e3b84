// The S3 store (AWS S3, Ceph RGW, MinIO): path-style addressing, any endpoint. The blob path lives here; the rest is
// one idea per file: s3-client.ts (SDK set-up, request counting, the retry wrapper), s3-objects.ts (the object
// driver the repository layer, migrate and GC use), s3-multipart.ts, s3-claims.ts, s3-staging.ts.
//
// Why it works this way:
// - Blobs at or below `multipartThreshold` are buffered in memory (bounded by concurrency × threshold), hashed, and
//   sent with ONE PutObject carrying `If-None-Match: *`. No temporary objects; a 412 means another writer got there
//   first, which we count as a dedup skip. The digest is verified before the PUT, because RGW ignores
//   x-amz-checksum-sha256.
// - Larger blobs use multipart with parallel parts (memory ≤ partConcurrency × partSize), after claiming the digest
//   (s3-claims.ts: RGW does not honour `If-None-Match` on CompleteMultipartUpload). Any failure aborts the multipart
//   upload so nothing is left billing.
import type { Readable } from 'node:stream';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type ListObjectsV2CommandOutput } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { TransshipError, throwIfAborted } from '@transship/core/errors';
import { VerifyingStream, parseDigest, type Digest } from '@transship/core/digest';
import { blobUploadBytesTotal } from '../telemetry/metrics.js';
import type { BlobInfo, ByteRange, PutBlobOptions, PutOutcome, Signalled, StageOptions, StagedBlob, StagedTails } from './contract.js';
import { blobKey } from './keys.js';
import { isPreconditionFailed, isS3NotFound } from './s3-errors.js';
import { BLOBS_PREFIX } from './keys.js';
import { S3Connection, type S3StoreOptions } from './s3-client.js';
import { S3Objects } from './s3-objects.js';
import { S3Multipart, type StartedRead } from './s3-multipart.js';
import { S3Claims } from './s3-claims.js';
import { stageBlob, stagedTails, sweepStaged } from './s3-staging.js';
import { RepositoryStore } from './repository.js';
import { resumingRead } from './resuming-read.js';

export type { S3StoreOptions } from './s3-client.js';

const MiB = 1024 * 1024;
/** Presence checks for this many digests or fewer use HEAD; more use ListObjectsV2 pages. */
const HEAD_BATCH_LIMIT = 2;

export class S3Store extends RepositoryStore {
  readonly name: string;
  readonly region: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly multipartThreshold: number;
  readonly partSize: number;
  readonly partConcurrency: number;
  readonly objects: S3Objects;
  readonly stagedTails: StagedTails;
  private readonly conn: S3Connection;
  private readonly multipart: S3Multipart;
  private readonly claims: S3Claims;

  constructor(opts: S3StoreOptions) {
    super();
    this.multipartThreshold = opts.multipartThreshold ?? 32 * MiB;
    this.partSize = opts.partSize ?? 8 * MiB;
    this.partConcurrency = opts.partConcurrency ?? 4;
    if (this.partSize < 5 * MiB) throw new TransshipError('TS_CONFIG_INVALID', `partSize must be at least 5 MiB (S3's minimum part size), got ${this.partSize}`);
    if (this.multipartThreshold < this.partSize) throw new TransshipError('TS_CONFIG_INVALID', `multipartThreshold (${this.multipartThreshold}) must be ≥ partSize (${this.partSize})`);
    this.conn = new S3Connection(opts);
    this.bucket = this.conn.bucket;
    this.prefix = this.conn.prefix;
    this.name = this.conn.name;
    this.region = opts.region ?? 'default';
    this.objects = new S3Objects(this.conn);
    this.multipart = new S3Multipart(this.conn, this.objects, this.partSize, this.partConcurrency);
    this.stagedTails = stagedTails(this.conn, this.objects, this.multipart);
    this.claims = new S3Claims(this.objects, (digest, signal) => this.statBlob(digest, { signal }), opts.claimLeaseMs ?? 60_000);
  }

  /** Attempts retried so far (tests and benchmarks). */
  get retries(): number {
    return this.conn.retries;
  }

  requestCounts(): Record<string, number> {
    return this.conn.requestCounts();
  }

  // --- blobs ---

  async statBlob(digest: string, opts: Signalled = {}): Promise<BlobInfo | undefined> {
    const d = parseDigest(digest);
    const info = await this.objects.stat(blobKey(d.value), { signal: opts.signal, digest: d.value });
    return info ? { digest: d.value, size: info.size, lastModified: info.lastModified } : undefined;
  }

  /**
   * Few digests: one HEAD each. Many: ListObjectsV2 pages starting just before the smallest unresolved key; a page
   * resolves every wanted key up to its last key, so a store with fewer than 1000 blobs answers in one request,
   * and a huge store costs at most one page per wanted digest.
   */
  async statBlobs(digests: readonly string[], opts: Signalled = {}): Promise<Map<string, BlobInfo>> {
    const wanted = [...new Set(digests.map((d) => parseDigest(d).value))];
    const out = new Map<string, BlobInfo>();
    if (wanted.length <= HEAD_BATCH_LIMIT) {
      for (const d of wanted) {
        const info = await this.statBlob(d, opts);
        if (info) out.set(d, info);
      }
      return out;
    }
    const byKey = new Map(wanted.map((d) => [this.conn.key(blobKey(d)), d] as const));
    let pending = [...byKey.keys()].sort();
    const listPrefix = this.conn.key(BLOBS_PREFIX);
    while (pending.length > 0) {
      const first = pending[0] as string;
      const page: ListObjectsV2CommandOutput = await this.conn.call('ListObjectsV2', listPrefix, opts.signal, (signal) =>
        this.conn.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: listPrefix, StartAfter: keyJustBefore(first), MaxKeys: 1000 }), { abortSignal: signal }),
      );
      const contents = page.Contents ?? [];
      for (const obj of contents) {
        const d = obj.Key ? byKey.get(obj.Key) : undefined;
        if (d) out.set(d, { digest: d, size: obj.Size ?? 0, lastModified: obj.LastModified?.getTime() });
      }
      const last = contents.at(-1)?.Key;
      // Everything up to `last` is now known; if the listing was not truncated, everything is known.
      pending = page.IsTruncated && last ? pending.filter((k) => k > last) : [];
    }
    return out;
  }

  async getBlob(digest: string, opts: Signalled & { range?: ByteRange | undefined } = {}): Promise<Readable> {
    return (await this.getObject(digest, opts)).stream;
  }

  async openBlob(digest: string, opts: Signalled = {}): Promise<{ stream: Readable; size: number }> {
    return this.getObject(digest, opts);
  }

  private async getObject(digest: string, opts: Signalled & { range?: ByteRange | undefined }): Promise<{ stream: Readable; size: number }> {
    const d = parseDigest(digest);
    const key = this.conn.key(blobKey(d.value));
    const send = (range: ByteRange | undefined, signal: AbortSignal, ifMatch?: string) =>
      this.conn.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}), ...(ifMatch ? { IfMatch: ifMatch } : {}) }), { abortSignal: signal });
    const opened = await this.conn.call('GetObject', key, opts.signal, async (signal) => {
      try {
        const out = await send(opts.range, opts.signal ?? signal);
        return { stream: out.Body as Readable, length: out.ContentLength ?? 0, etag: out.ETag };
      } catch (err) {
        if (isS3NotFound(err)) throw new TransshipError('TS_BLOB_UNKNOWN', `blob ${d.value} is not in ${this.name}`, { details: { digest: d.value } });
        throw err;
      }
    }, d.value);
    // The size of the blob: the whole response, or what the range was cut from (a range past the end is clamped by S3).
    const size = opts.range ? undefined : opened.length;
    if (opened.length === 0) return { stream: opened.stream, size: 0 };
    const start = opts.range?.start ?? 0;
    // A connection lost mid-body is picked up from the byte it stopped at (resuming-read.ts), through the same retry.
    // Re-reads are pinned to the object the first response came from (If-Match: its ETag): a blob key holds one
    // content forever, and the pin also rules out a delete-and-rewrite in between, so the spliced bytes need no second
    // hash — hashing every whole read cost ~0.6 s of CPU per 256 MiB pulled (bench/RESULTS.md, "cache off"). Only a
    // response without an ETag has its whole read verified instead.
    const stream = resumingRead({
      first: opened.stream,
      range: { start, end: start + opened.length - 1 },
      digest: d.value,
      size: opened.etag ? undefined : size,
      signal: opts.signal,
      reopen: async (range, signal) => (await send(range, signal, opened.etag)).Body as Readable,
      run: (op, signal) => this.conn.call('GetObject', key, signal, op, d.value),
    });
    return { stream, size: opened.length };
  }

  /**
   * A presigned GET URL for the blob (for registries that redirect pulls to S3, as Distribution does by default).
   * Signing is local: no request is sent, and nothing checks that the blob exists.
   */
  async blobUrl(digest: string, opts: { expiresInSeconds: number }): Promise<string> {
    const key = this.conn.key(blobKey(digest));
    return getSignedUrl(this.conn.client, new GetObjectCommand({ Bucket: this.bucket, Key: key }), { expiresIn: opts.expiresInSeconds });
  }

  async putBlob(digest: string, source: () => Readable | Promise<Readable>, opts: PutBlobOptions = {}): Promise<PutOutcome> {
    throwIfAborted(opts.signal);
    const d = parseDigest(digest);
    if (opts.size !== undefined && opts.size > this.multipartThreshold) return this.putLarge(d, source, opts);
    // Buffer (bounded by the threshold) while hashing; switch to multipart if the source turns out to be larger.
    const verify = new VerifyingStream({ expected: d, ...(opts.size !== undefined ? { size: opts.size } : {}) });
    const input = await source();
    input.on('error', (e) => verify.destroy(e));
    input.pipe(verify);
    const chunks: Buffer[] = [];
    let buffered = 0;
    try {
      for await (const chunk of verify as AsyncIterable<Buffer>) {
        chunks.push(chunk);
        buffered += chunk.length;
        opts.onProgress?.(buffered);
        throwIfAborted(opts.signal);
        if (buffered > this.multipartThreshold) {
          // Unknown size and larger than the threshold: hand over to multipart with what we already read.
          return await this.putLarge(d, source, opts, { verify, chunks, buffered });
        }
      }
    } catch (err) {
      input.destroy();
      throw err;
    }
    return this.putSmall(d, Buffer.concat(chunks, buffered), opts.signal);
  }

  private async putSmall(d: Digest, body: Buffer, signal: AbortSignal | undefined): Promise<PutOutcome> {
    const key = this.conn.key(blobKey(d.value));
    return this.conn.call('PutObject', key, signal, async (s) => {
      try {
        await this.conn.client.send(
          new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length, IfNoneMatch: '*', ContentType: 'application/octet-stream' }),
          { abortSignal: s },
        );
        blobUploadBytesTotal.inc({ store: this.name }, body.length);
        return { status: 'written' as const, size: body.length };
      } catch (err) {
        if (isPreconditionFailed(err)) return { status: 'exists' as const, size: body.length };
        throw err;
      }
    }, d.value);
  }

  private async putLarge(d: Digest, source: () => Readable | Promise<Readable>, opts: PutBlobOptions, started?: StartedRead): Promise<PutOutcome> {
    const claim = await this.claims.claim(d, opts.size ?? started?.buffered ?? 0, opts.signal);
    if (claim !== 'claimed') {
      started?.verify.destroy();
      return { status: 'exists', size: claim.size };
    }
    try {
      return await this.multipart.upload(d, blobKey(d.value), source, opts, started);
    } finally {
      await this.claims.release(d);
    }
  }

  /** A registry upload staged as multipart parts while it arrives, or continued from another instance (s3-staging.ts). */
  stageBlob(opts: StageOptions = {}): Promise<StagedBlob> {
    return stageBlob({ conn: this.conn, objects: this.objects, multipart: this.multipart, claims: this.claims }, opts);
  }

  sweepStaged(olderThanMs: number, opts: Signalled = {}): Promise<{ multipart: number; objects: number }> {
    return sweepStaged(this.objects, olderThanMs, opts);
  }

  async close(): Promise<void> {
    this.conn.destroy();
  }
}

/** The greatest string that sorts before `key` closely enough for StartAfter (drop the last char, decrement). */
function keyJustBefore(key: string): string {
  const last = key.charCodeAt(key.length - 1);
  return key.slice(0, -1) + String.fromCharCode(last - 1) + '\uffff';
}
