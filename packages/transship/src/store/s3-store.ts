// The S3 store (AWS S3, Ceph RGW, MinIO): path-style addressing, any endpoint.
//
// Why it works this way:
// - Blobs at or below `multipartThreshold` are buffered in memory (bounded by concurrency × threshold), hashed, and
//   sent with ONE PutObject carrying `If-None-Match: *`. No temporary objects; a 412 means another
//   writer got there first, which we count as a dedup skip. The digest is verified before the PUT, because RGW ignores
//   x-amz-checksum-sha256.
// - Larger blobs use multipart with parallel parts (memory ≤ partConcurrency × partSize). RGW does not honour
//   `If-None-Match` on CompleteMultipartUpload, so before moving bytes a writer *claims* the digest with a
//   conditional PUT of a small marker (`claims/<alg>/<hex>`) holding a lease. Losers wait for the blob to appear or
//   for the lease to expire (a crashed winner therefore blocks others for at most one lease). Cost: two small
//   requests per large blob, in exchange for never transferring a large blob twice. Any failure aborts the multipart
//   upload so nothing is left billing.
// - The SDK's own retries are off (maxAttempts: 1): every request goes through observedRetry, which owns backoff,
//   budget, cancellation and the retry metrics.
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import {
  S3Client, PutObjectCommand, GetObjectCommand, HeadObjectCommand, DeleteObjectCommand, ListObjectsV2Command,
  CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand, AbortMultipartUploadCommand,
  CopyObjectCommand, ListMultipartUploadsCommand,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { TransshipError, cancelledError, throwIfAborted } from '@transship/core/errors';
import { VerifyingStream, digestMismatch, parseDigest, sizeMismatch, type Digest } from '@transship/core/digest';
import { positionalFile, type PositionalFile } from '@transship/core/file-stream';
import { RetryBudget, type RetryOptions } from '@transship/core/retry';
import { observedRetry } from '@transship/core/observed-retry';
import { blobUploadBytesTotal, multipartAbortsTotal, s3RequestsTotal } from '../telemetry/metrics.js';
import { log } from '@transship/core/log';
import type { BlobInfo, BlobStore, ByteRange, PutBlobOptions, PutOutcome, Signalled, StagedBlob } from './contract.js';
import { blobKey, stagingKey, STAGING_PREFIX, checkMetaKey, digestFromBlobKey, manifestLinkKey, manifestLinksPrefix, repoPrefix, tagKey, tagsPrefix } from './keys.js';
import { mapS3Error, isPreconditionFailed, isS3NotFound } from './s3-errors.js';
import { PartUploader, type CompletedPart, type SendPart } from './s3-parts.js';
import { validateRepoName } from '@transship/core/names';

export interface S3StoreOptions {
  bucket: string;
  prefix?: string | undefined;
  endpoint?: string | undefined;
  /** The S3 signing region (AWS_REGION). */
  s3Region?: string | undefined;
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  sessionToken?: string | undefined;
  /** transship's region name for placement. */
  region?: string | undefined;
  multipartThreshold?: number | undefined;
  partSize?: number | undefined;
  partConcurrency?: number | undefined;
  retry?: Pick<RetryOptions, 'maxAttempts' | 'baseDelayMs' | 'maxDelayMs' | 'maxElapsedMs'> | undefined;
  /** Max sockets per host; bounds concurrent requests. */
  maxSockets?: number | undefined;
  /** A request whose socket moves no byte for this long fails and is retried (default 60 s). */
  idleTimeoutMs?: number | undefined;
  /** Lease length for large-blob claims, ms (plus time proportional to size). */
  claimLeaseMs?: number | undefined;
}

const MiB = 1024 * 1024;
/** Presence checks for this many digests or fewer use HEAD; more use ListObjectsV2 pages. */
const HEAD_BATCH_LIMIT = 2;
/** One CopyObject moves at most 5 GiB (S3's limit); bigger staged blobs fall back to a fresh upload. */
const MAX_COPY_BYTES = 5 * 1024 ** 3;

export class S3Store implements BlobStore {
  readonly name: string;
  readonly region: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly multipartThreshold: number;
  readonly partSize: number;
  readonly partConcurrency: number;
  private readonly client: S3Client;
  private readonly budget = new RetryBudget(200, 5, 1);
  private readonly counts: Record<string, number> = {};
  private readonly owner = randomUUID();
  retries = 0;

  constructor(private readonly opts: S3StoreOptions) {
    if (!opts.bucket || opts.bucket.length < 3) throw new TransshipError('TS_CONFIG_INVALID', `invalid bucket name "${opts.bucket}": S3 bucket names have 3-63 characters`);
    this.bucket = opts.bucket;
    this.prefix = normalisePrefix(opts.prefix);
    this.region = opts.region ?? 'default';
    this.name = `s3://${this.bucket}${this.prefix ? '/' + this.prefix.replace(/\/$/, '') : ''}`;
    this.multipartThreshold = opts.multipartThreshold ?? 32 * MiB;
    this.partSize = opts.partSize ?? 8 * MiB;
    this.partConcurrency = opts.partConcurrency ?? 4;
    if (this.partSize < 5 * MiB) throw new TransshipError('TS_CONFIG_INVALID', `partSize must be at least 5 MiB (S3's minimum part size), got ${this.partSize}`);
    if (this.multipartThreshold < this.partSize) throw new TransshipError('TS_CONFIG_INVALID', `multipartThreshold (${this.multipartThreshold}) must be ≥ partSize (${this.partSize})`);
    const maxSockets = opts.maxSockets ?? 64;
    this.client = new S3Client({
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      region: opts.s3Region ?? 'us-east-1',
      forcePathStyle: true,
      maxAttempts: 1,
      // No CRC32 or Content-MD5: every body we send is a Buffer or string, which SigV4 signs with its sha256
      // (x-amz-content-sha256) and S3/RGW verify (XAmzContentSHA256Mismatch). A second checksum only costs CPU —
      // MD5 was the single largest CPU cost of a push. The blob's own digest we verify ourselves.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      ...(opts.accessKeyId && opts.secretAccessKey
        ? { credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey, ...(opts.sessionToken ? { sessionToken: opts.sessionToken } : {}) } }
        : {}),
      requestHandler: new NodeHttpHandler({
        httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
        httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
        connectionTimeout: 5_000,
        // An idle socket (no byte either way) fails the attempt, which observedRetry then retries. It must be a
        // *socket* timeout: the handler's requestTimeout only logs a warning, and a backend that stops reading
        // (RGW with a full OSD does) would otherwise hang a transfer forever.
        socketTimeout: opts.idleTimeoutMs ?? 60_000,
      }),
    });
    // Count every request actually sent (one per attempt, since the SDK does not retry on its own).
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        const op = (context.commandName ?? 'Unknown').replace(/Command$/, '');
        try {
          const out = await next(args);
          // Presigning (blobUrl) runs the same stack but sends nothing: not a request.
          if ((out.output as { presigned?: unknown }).presigned !== undefined) return out;
          this.counts[op] = (this.counts[op] ?? 0) + 1;
          s3RequestsTotal.inc({ store: this.name, operation: op, outcome: 'ok' });
          return out;
        } catch (err) {
          this.counts[op] = (this.counts[op] ?? 0) + 1;
          s3RequestsTotal.inc({ store: this.name, operation: op, outcome: 'error' });
          throw err;
        }
      },
      { step: 'finalizeRequest', name: 'transshipRequestCounter' },
    );
  }

  requestCounts(): Record<string, number> {
    return { ...this.counts };
  }

  private key(k: string): string {
    return this.prefix + k;
  }

  /** One S3 call through the retry loop, with SDK errors mapped to our codes. */
  private async call<T>(operation: string, key: string | undefined, signal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>, digest?: string): Promise<T> {
    return observedRetry(
      { store: this.name, operation, digest, signal, budget: this.budget, retry: this.opts.retry, onRetry: () => this.retries++ },
      async (s) => {
        try {
          return await fn(s);
        } catch (err) {
          throw mapS3Error(err, { store: this.name, operation, key, endpoint: this.opts.endpoint }, s);
        }
      },
    );
  }

  // --- blobs ---

  async statBlob(digest: string, opts: Signalled = {}): Promise<BlobInfo | undefined> {
    const d = parseDigest(digest);
    const key = this.key(blobKey(d.value));
    return this.call('HeadObject', key, opts.signal, async (signal) => {
      try {
        const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal });
        return { digest: d.value, size: out.ContentLength ?? 0 };
      } catch (err) {
        if (isS3NotFound(err)) return undefined;
        throw err;
      }
    }, d.value);
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
    const byKey = new Map(wanted.map((d) => [this.key(blobKey(d)), d] as const));
    let pending = [...byKey.keys()].sort();
    const listPrefix = this.key('blobs/');
    while (pending.length > 0) {
      const first = pending[0] as string;
      const page: ListObjectsV2CommandOutput = await this.call('ListObjectsV2', listPrefix, opts.signal, (signal) =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: listPrefix, StartAfter: keyJustBefore(first), MaxKeys: 1000 }), { abortSignal: signal }),
      );
      const contents = page.Contents ?? [];
      for (const obj of contents) {
        const d = obj.Key ? byKey.get(obj.Key) : undefined;
        if (d) out.set(d, { digest: d, size: obj.Size ?? 0 });
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
    const key = this.key(blobKey(d.value));
    return this.call('GetObject', key, opts.signal, async (signal) => {
      try {
        const out = await this.client.send(
          new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(opts.range ? { Range: `bytes=${opts.range.start}-${opts.range.end}` } : {}) }),
          { abortSignal: opts.signal ?? signal },
        );
        return { stream: out.Body as Readable, size: out.ContentLength ?? 0 };
      } catch (err) {
        if (isS3NotFound(err)) throw new TransshipError('TS_BLOB_UNKNOWN', `blob ${d.value} is not in ${this.name}`, { details: { digest: d.value } });
        throw err;
      }
    }, d.value);
  }

  /**
   * A presigned GET URL for the blob (for registries that redirect pulls to S3, as Distribution does by default).
   * Signing is local: no request is sent, and nothing checks that the blob exists.
   */
  async blobUrl(digest: string, opts: { expiresInSeconds: number }): Promise<string> {
    const key = this.key(blobKey(digest));
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: key }), { expiresIn: opts.expiresInSeconds });
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
    const body = Buffer.concat(chunks, buffered);
    return this.putSmall(d, body, opts.signal);
  }

  private async putSmall(d: Digest, body: Buffer, signal: AbortSignal | undefined): Promise<PutOutcome> {
    const key = this.key(blobKey(d.value));
    return this.call('PutObject', key, signal, async (s) => {
      try {
        await this.client.send(
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

  private async putLarge(
    d: Digest,
    source: () => Readable | Promise<Readable>,
    opts: PutBlobOptions,
    started?: { verify: VerifyingStream; chunks: Buffer[]; buffered: number },
  ): Promise<PutOutcome> {
    const claim = await this.claim(d, opts.size ?? started?.buffered ?? 0, opts.signal);
    if (claim !== 'claimed') {
      started?.verify.destroy();
      return { status: 'exists', size: claim.size };
    }
    try {
      return await this.multipart(d, source, opts, started);
    } finally {
      await this.releaseClaim(d);
    }
  }

  private async multipart(d: Digest, source: () => Readable | Promise<Readable>, opts: PutBlobOptions, started?: { verify: VerifyingStream; chunks: Buffer[]; buffered: number }): Promise<PutOutcome> {
    const key = this.key(blobKey(d.value));
    const uploadId = await this.createMultipart(key, opts.signal, d.value);
    const parts = new PartUploader(this.partSender(key, uploadId, d.value), this.partConcurrency, this.partSize, opts.signal);
    let verify = started?.verify;
    let input: Readable | undefined;
    let file: PositionalFile | undefined;
    try {
      if (!verify) {
        input = await source();
        file = positionalFile(input);
        if (!file) {
          verify = new VerifyingStream({ expected: d, ...(opts.size !== undefined ? { size: opts.size } : {}) });
          const v = verify;
          input.on('error', (e) => v.destroy(e));
          input.pipe(v);
        }
      }
      // Each part is filled by copying chunks into one part-sized buffer: one copy per byte, and a finished part's
      // buffer is reused for a later part. A file is read straight into the part buffers (no chunks at all).
      let part = parts.buffer();
      let filled = 0;
      let total = 0;
      const add = async (chunk: Buffer): Promise<void> => {
        let offset = 0;
        while (offset < chunk.length) {
          const n = Math.min(this.partSize - filled, chunk.length - offset);
          chunk.copy(part, filled, offset, offset + n);
          filled += n;
          offset += n;
          if (filled === this.partSize) {
            await parts.add(part); // waits while partConcurrency parts are in flight: memory stays bounded
            part = parts.buffer();
            filled = 0;
          }
        }
        total += chunk.length;
      };
      if (file) {
        const hash = createHash(d.algorithm);
        for (;;) {
          parts.check();
          if (parts.aborted) throw cancelledError(opts.signal);
          const want = Math.min(this.partSize - filled, file.length === undefined ? Infinity : file.length - total);
          const { bytesRead } = want > 0 ? await file.handle.read(part, filled, want, file.start + total) : { bytesRead: 0 };
          if (bytesRead === 0) break;
          hash.update(part.subarray(filled, filled + bytesRead));
          filled += bytesRead;
          total += bytesRead;
          if (opts.size !== undefined && total > opts.size) throw sizeMismatch(d.value, opts.size, total, 'more');
          opts.onProgress?.(total);
          if (filled === this.partSize) {
            await parts.add(part);
            part = parts.buffer();
            filled = 0;
          }
        }
        if (opts.size !== undefined && total !== opts.size) throw sizeMismatch(d.value, opts.size, total, 'fewer');
        const actual = `${d.algorithm}:${hash.digest('hex')}`;
        if (actual !== d.value) throw digestMismatch(d.value, actual);
        input?.destroy(); // closes the file
      } else {
        for (const chunk of started?.chunks ?? []) await add(chunk);
        if (started) started.chunks.length = 0;
        for await (const chunk of verify as AsyncIterable<Buffer>) {
          parts.check();
          if (parts.aborted) throw cancelledError(opts.signal);
          await add(chunk);
          opts.onProgress?.(total);
        }
      }
      // The digest was verified above, or when the stream ended cleanly (VerifyingStream fails in flush otherwise).
      if (filled > 0 || parts.parts === 0) await parts.add(part.subarray(0, filled));
      const list = await parts.finish();
      throwIfAborted(opts.signal);
      await this.completeMultipart(key, uploadId, list, opts.signal, d.value);
      blobUploadBytesTotal.inc({ store: this.name }, total);
      return { status: 'written', size: total };
    } catch (err) {
      input?.destroy();
      verify?.destroy();
      await parts.cancel(err);
      await this.abortMultipart(key, uploadId);
      throw opts.signal?.aborted ? cancelledError(opts.signal) : err;
    }
  }

  private async createMultipart(key: string, signal: AbortSignal | undefined, digest?: string): Promise<string> {
    const created = await this.call('CreateMultipartUpload', key, signal, (s) =>
      this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ContentType: 'application/octet-stream' }), { abortSignal: s }), digest);
    if (!created.UploadId) throw new TransshipError('TS_BACKEND_REJECTED', `CreateMultipartUpload on ${this.name} returned no UploadId`);
    return created.UploadId;
  }

  private partSender(key: string, uploadId: string, digest?: string): SendPart {
    return async (n, body, signal) => {
      const out = await this.call('UploadPart', key, signal, (s) =>
        this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: n, Body: body, ContentLength: body.length }), { abortSignal: s }), digest);
      return out.ETag ?? '';
    };
  }

  private async completeMultipart(key: string, uploadId: string, parts: CompletedPart[], signal: AbortSignal | undefined, digest?: string): Promise<void> {
    await this.call('CompleteMultipartUpload', key, signal, (s) =>
      this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }), { abortSignal: s }), digest);
  }

  /** Aborts with its own short deadline: it must run even when the caller's signal has fired. */
  private async abortMultipart(key: string, uploadId: string): Promise<void> {
    multipartAbortsTotal.inc({ store: this.name });
    try {
      await this.call('AbortMultipartUpload', key, AbortSignal.timeout(15_000), (s) =>
        this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }), { abortSignal: s }));
    } catch (err) {
      log.error({ store: this.name, key, uploadId, err }, 'could not abort multipart upload; it will bill until a lifecycle rule removes it');
    }
  }

  /** Claims a large digest (see the header comment). Returns the blob's info instead when it appeared meanwhile. */
  private async claim(d: Digest, size: number, signal: AbortSignal | undefined): Promise<'claimed' | BlobInfo> {
    const key = this.key(`claims/${d.algorithm}/${d.hex}`);
    const leaseMs = (this.opts.claimLeaseMs ?? 60_000) + Math.ceil(size / (5 * MiB)) * 1000;
    for (;;) {
      throwIfAborted(signal);
      const body = JSON.stringify({ owner: this.owner, expiresAt: Date.now() + leaseMs });
      const won = await this.call('PutObject', key, signal, async (s) => {
        try {
          await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, IfNoneMatch: '*', ContentType: 'application/json' }), { abortSignal: s });
          return true;
        } catch (err) {
          if (isPreconditionFailed(err)) return false;
          throw err;
        }
      });
      if (won) {
        // The previous holder may have completed the blob and released the claim just before we took it.
        const done = await this.statBlob(d.value, { signal });
        if (!done) return 'claimed';
        await this.releaseClaim(d);
        return done;
      }
      const done = await this.statBlob(d.value, { signal });
      if (done) return done;
      const holder = await this.readSmall(key, signal);
      const expiresAt = holder ? Number((JSON.parse(holder) as { expiresAt?: unknown }).expiresAt) : 0;
      if (!Number.isFinite(expiresAt) || expiresAt <= Date.now()) {
        log.warn({ store: this.name, digest: d.value }, 'claim lease expired; taking over');
        await this.deleteKey(key, signal);
        continue;
      }
      try {
        await sleep(Math.min(1000, expiresAt - Date.now()), undefined, signal ? { signal } : {});
      } catch {
        throw cancelledError(signal);
      }
    }
  }

  private async releaseClaim(d: Digest): Promise<void> {
    await this.deleteKey(this.key(`claims/${d.algorithm}/${d.hex}`), AbortSignal.timeout(15_000)).catch((err: unknown) =>
      log.warn({ store: this.name, digest: d.value, err }, 'could not release claim; it expires with its lease'));
  }

  /**
   * A staged blob is a multipart upload at a temporary key (`uploads/<uuid>`): parts go up while the client is still
   * sending. On commit the digest is claimed like any large blob, the upload completed at the temporary key and
   * server-side copied to `blobs/…` (RGW copies by reference: ~70 ms for 256 MiB here), then the temporary object is
   * deleted. Anything left by a crash is removed by sweepStaged().
   */
  async stageBlob(opts: Signalled = {}): Promise<StagedBlob> {
    const key = this.key(stagingKey(randomUUID()));
    const uploadId = await this.createMultipart(key, opts.signal);
    const parts = new PartUploader(this.partSender(key, uploadId), this.partConcurrency, this.partSize, opts.signal);
    let state: 'open' | 'completing' | 'done' = 'open';
    const abort = async (): Promise<void> => {
      if (state !== 'open') return;
      state = 'done';
      await parts.cancel(new Error('staged upload aborted'));
      await this.abortMultipart(key, uploadId);
    };
    return {
      partSize: this.partSize,
      maxBytes: MAX_COPY_BYTES,
      buffer: () => parts.buffer(),
      addPart: (body) => parts.add(body),
      abort,
      commit: async (digest, size, o = {}) => {
        const d = parseDigest(digest);
        if (state !== 'open') throw new TransshipError('TS_INTERNAL', `staged upload ${key} was already committed or aborted`);
        if (size > MAX_COPY_BYTES) throw new TransshipError('TS_INTERNAL', `staged blob of ${size} bytes is larger than one CopyObject can move`);
        try {
          // parts.bytes counts what was handed over, so a wrong size is known before anything more goes out.
          if (parts.bytes !== size) throw new TransshipError('TS_SIZE_MISMATCH', `staged ${parts.bytes} bytes, but the blob has ${size}`);
          // The last parts and the claim go out together: neither needs the other, and both sit between the
          // client's final PUT and its answer.
          const [finished, claimed] = await Promise.allSettled([parts.finish(), this.claim(d, size, o.signal)]);
          if (claimed.status === 'rejected') throw claimed.reason; // parts are aborted below
          const claim = claimed.value;
          if (finished.status === 'rejected') {
            if (claim === 'claimed') await this.releaseClaim(d); // or it would block other writers for its lease
            throw finished.reason;
          }
          const list = finished.value;
          if (claim !== 'claimed') {
            await abort();
            return { status: 'exists', size: claim.size };
          }
          try {
            state = 'completing';
            await this.completeMultipart(key, uploadId, list, o.signal, d.value);
            const target = this.key(blobKey(d.value));
            await this.call('CopyObject', target, o.signal, (s) =>
              this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: target, CopySource: encodeURI(`${this.bucket}/${key}`), ContentType: 'application/octet-stream', MetadataDirective: 'REPLACE' }), { abortSignal: s }), d.value);
            state = 'done';
            blobUploadBytesTotal.inc({ store: this.name }, size);
            return { status: 'written', size };
          } finally {
            await Promise.all([
              this.releaseClaim(d),
              state === 'completing' || state === 'done'
                ? this.deleteKey(key, AbortSignal.timeout(15_000)).catch((err: unknown) => log.warn({ store: this.name, key, err }, 'could not delete staged object; sweepStaged removes it later'))
                : undefined,
            ]);
          }
        } catch (err) {
          if (state === 'open') await abort();
          state = 'done';
          throw err;
        }
      },
    };
  }

  /**
   * Removes what crashed processes left of staged uploads: multipart uploads and temporary objects under
   * `uploads/` older than `olderThanMs`. Live uploads of other instances are younger than that (keep it well above
   * the longest upload). Returns how many of each were removed.
   */
  async sweepStaged(olderThanMs: number, opts: Signalled = {}): Promise<{ multipart: number; objects: number }> {
    const cutoff = Date.now() - olderThanMs;
    const prefix = this.key(STAGING_PREFIX);
    let multipart = 0;
    let objects = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const page = await this.call('ListMultipartUploads', prefix, opts.signal, (s) =>
        this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }), { abortSignal: s }));
      for (const u of page.Uploads ?? []) {
        if (u.Key && u.UploadId && (u.Initiated?.getTime() ?? 0) < cutoff) {
          await this.abortMultipart(u.Key, u.UploadId);
          multipart++;
        }
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
    for await (const obj of this.listAll(prefix, opts.signal)) {
      if (obj.modified < cutoff) {
        await this.deleteKey(obj.key, opts.signal);
        objects++;
      }
    }
    return { multipart, objects };
  }

  async deleteBlob(digest: string, opts: Signalled = {}): Promise<void> {
    await this.deleteKey(this.key(blobKey(digest)), opts.signal);
  }

  async *listBlobs(opts: Signalled = {}): AsyncIterable<BlobInfo> {
    for await (const obj of this.listAll(this.key('blobs/'), opts.signal)) {
      const digest = digestFromBlobKey(obj.key.slice(this.prefix.length));
      if (digest) yield { digest, size: obj.size };
    }
  }

  // --- repositories ---

  async getTag(repo: string, tag: string, opts: Signalled = {}): Promise<string | undefined> {
    const body = await this.readSmall(this.key(tagKey(repo, tag)), opts.signal);
    return body === undefined ? undefined : parseDigest(body.trim()).value;
  }

  async putTag(repo: string, tag: string, digest: string, opts: Signalled = {}): Promise<void> {
    await this.writeSmall(this.key(tagKey(repo, tag)), parseDigest(digest).value, false, opts.signal);
  }

  async deleteTag(repo: string, tag: string, opts: Signalled = {}): Promise<void> {
    await this.deleteKey(this.key(tagKey(repo, tag)), opts.signal);
  }

  async listTags(repo: string, opts: Signalled = {}): Promise<string[]> {
    const prefix = this.key(tagsPrefix(repo));
    const out: string[] = [];
    for await (const obj of this.listAll(prefix, opts.signal)) out.push(obj.key.slice(prefix.length));
    return out.sort();
  }

  async linkManifest(repo: string, digest: string, opts: Signalled = {}): Promise<void> {
    await this.writeSmall(this.key(manifestLinkKey(repo, digest)), parseDigest(digest).value, true, opts.signal);
  }

  async unlinkManifest(repo: string, digest: string, opts: Signalled = {}): Promise<void> {
    await this.deleteKey(this.key(manifestLinkKey(repo, digest)), opts.signal);
  }

  async hasManifestLink(repo: string, digest: string, opts: Signalled = {}): Promise<boolean> {
    return this.exists(this.key(manifestLinkKey(repo, digest)), opts.signal);
  }

  async listManifestLinks(repo: string, opts: Signalled = {}): Promise<string[]> {
    const prefix = this.key(manifestLinksPrefix(repo));
    const out: string[] = [];
    for await (const obj of this.listAll(prefix, opts.signal)) {
      const d = digestFromBlobKey(`blobs/${obj.key.slice(prefix.length)}`);
      if (d) out.push(d);
    }
    return out.sort();
  }

  /**
   * One listing of `repos/<name>/` answers both questions a re-push asks. A tag's digest is recognised without a GET:
   * a tag object's body is the digest string and a single-PUT object's ETag is the MD5 of its body.
   */
  async repoState(repo: string, opts: Signalled = {}): Promise<{ tags: Map<string, string | undefined>; manifests: Set<string> }> {
    const prefix = this.key(repoPrefix(repo));
    const tags = new Map<string, string | undefined>();
    const manifests = new Set<string>();
    for await (const obj of this.listAll(prefix, opts.signal)) {
      const rest = obj.key.slice(prefix.length);
      if (rest.startsWith('tags/')) tags.set(rest.slice(5), obj.etag ? `md5:${obj.etag}` : undefined);
      else if (rest.startsWith('manifests/')) {
        const d = digestFromBlobKey(`blobs/${rest.slice(10)}`);
        if (d) manifests.add(d);
      }
    }
    return { tags, manifests };
  }

  async listRepos(opts: Signalled = {}): Promise<string[]> {
    const prefix = this.key('repos/');
    const repos = new Set<string>();
    for await (const obj of this.listAll(prefix, opts.signal)) {
      const m = /^(.+?)\/(?:tags|manifests)\//.exec(obj.key.slice(prefix.length));
      if (m?.[1]) {
        try {
          repos.add(validateRepoName(m[1]));
        } catch {
          // Foreign or hand-made keys are not repositories of ours.
        }
      }
    }
    return [...repos].sort();
  }

  async putMetaIfAbsent(key: string, body: string, opts: Signalled = {}): Promise<void> {
    await this.writeSmall(this.key(checkMetaKey(key)), body, true, opts.signal);
  }

  async getMeta(key: string, opts: Signalled = {}): Promise<string | undefined> {
    return this.readSmall(this.key(checkMetaKey(key)), opts.signal);
  }

  async hasMeta(key: string, opts: Signalled = {}): Promise<boolean> {
    return this.exists(this.key(checkMetaKey(key)), opts.signal);
  }

  async listMeta(prefix: string, opts: Signalled = {}): Promise<string[]> {
    const p = this.key(checkMetaKey(prefix, true));
    const out: string[] = [];
    for await (const obj of this.listAll(p, opts.signal)) out.push(obj.key.slice(this.prefix.length));
    return out.sort();
  }

  async deleteMeta(key: string, opts: Signalled = {}): Promise<void> {
    await this.deleteKey(this.key(checkMetaKey(key)), opts.signal);
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  // --- helpers ---

  private async *listAll(prefix: string, signal: AbortSignal | undefined): AsyncIterable<{ key: string; size: number; etag: string | undefined; modified: number }> {
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await this.call('ListObjectsV2', prefix, signal, (s) =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token, MaxKeys: 1000 }), { abortSignal: s }));
      for (const o of page.Contents ?? []) if (o.Key) yield { key: o.Key, size: o.Size ?? 0, etag: o.ETag?.replace(/"/g, ''), modified: o.LastModified?.getTime() ?? 0 };
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  private async exists(key: string, signal: AbortSignal | undefined): Promise<boolean> {
    return this.call('HeadObject', key, signal, async (s) => {
      try {
        await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: s });
        return true;
      } catch (err) {
        if (isS3NotFound(err)) return false;
        throw err;
      }
    });
  }

  private async readSmall(key: string, signal: AbortSignal | undefined): Promise<string | undefined> {
    return this.call('GetObject', key, signal, async (s) => {
      try {
        const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: s });
        return await (out.Body as { transformToString(): Promise<string> }).transformToString();
      } catch (err) {
        if (isS3NotFound(err)) return undefined;
        throw err;
      }
    });
  }

  private async writeSmall(key: string, body: string, ifAbsent: boolean, signal: AbortSignal | undefined): Promise<void> {
    await this.call('PutObject', key, signal, async (s) => {
      try {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: 'text/plain', ...(ifAbsent ? { IfNoneMatch: '*' } : {}) }), { abortSignal: s });
      } catch (err) {
        if (ifAbsent && isPreconditionFailed(err)) return;
        throw err;
      }
    });
  }

  private async deleteKey(key: string, signal: AbortSignal | undefined): Promise<void> {
    await this.call('DeleteObject', key, signal, (s) => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: s }));
  }
}

function normalisePrefix(prefix: string | undefined): string {
  const p = (prefix ?? '').replace(/^\/+|\/+$/g, '');
  if (p.split('/').some((c) => c === '..' || c === '.')) throw new TransshipError('TS_CONFIG_INVALID', `invalid store prefix "${prefix}": no "." or ".." components`);
  return p ? `${p}/` : '';
}

/** The greatest string that sorts before `key` closely enough for StartAfter (drop the last char, decrement). */
function keyJustBefore(key: string): string {
  const last = key.charCodeAt(key.length - 1);
  return key.slice(0, -1) + String.fromCharCode(last - 1) + '\uffff';
}
