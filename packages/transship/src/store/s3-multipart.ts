// Multipart uploads on the S3 store: create, parts (through PartUploader), complete, abort, and the one-shot upload
// of a large blob from a stream or a file.
//
// Why it works this way: parts go up in parallel with memory bounded by partConcurrency × partSize; each part is
// filled by copying chunks into one part-sized buffer (one copy per byte; finished parts' buffers are reused), and a
// file is read straight into the part buffers. The digest is verified before CompleteMultipartUpload, so nothing
// unverified ever becomes visible. Any failure aborts the upload so nothing is left billing.
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand, ListPartsCommand } from '@aws-sdk/client-s3';
import { TransshipError, cancelledError, throwIfAborted } from '@transship/core/errors';
import { VerifyingStream, digestMismatch, sizeMismatch, type Digest } from '@transship/core/digest';
import { positionalFile, type PositionalFile } from '@transship/core/file-stream';
import { blobUploadBytesTotal } from '../telemetry/metrics.js';
import { log } from '@transship/core/log';
import type { PutBlobOptions, PutOutcome } from './contract.js';
import type { S3Connection } from './s3-client.js';
import type { S3Objects } from './s3-objects.js';
import { PartUploader, type CompletedPart, type SendPart } from './s3-parts.js';

/** What putBlob already read before it learnt the blob is large. */
export interface StartedRead {
  verify: VerifyingStream;
  chunks: Buffer[];
  buffered: number;
}

export class S3Multipart {
  constructor(
    private readonly conn: S3Connection,
    private readonly objects: S3Objects,
    readonly partSize: number,
    readonly partConcurrency: number,
  ) {}

  /** Starts a multipart upload at store key `key`; returns its upload id. */
  async create(key: string, signal: AbortSignal | undefined, digest?: string): Promise<string> {
    const k = this.conn.key(key);
    const created = await this.conn.call('CreateMultipartUpload', k, signal, (s) =>
      this.conn.client.send(new CreateMultipartUploadCommand({ Bucket: this.conn.bucket, Key: k, ContentType: 'application/octet-stream' }), { abortSignal: s }), digest);
    if (!created.UploadId) throw new TransshipError('TS_BACKEND_REJECTED', `CreateMultipartUpload on ${this.conn.name} returned no UploadId`);
    return created.UploadId;
  }

  parts(key: string, uploadId: string, signal: AbortSignal | undefined, digest?: string, resume?: { parts: number; bytes: number }): PartUploader {
    return new PartUploader(this.partSender(key, uploadId, digest), this.partConcurrency, this.partSize, signal, resume);
  }

  /** Parts 1..`upTo` of an upload as S3 lists them (ListParts pages of 1000), with their sizes. */
  async listParts(key: string, uploadId: string, upTo: number, signal: AbortSignal | undefined): Promise<Array<CompletedPart & { size: number }>> {
    const k = this.conn.key(key);
    const out: Array<CompletedPart & { size: number }> = [];
    let marker: string | undefined;
    for (;;) {
      const page = await this.conn.call('ListParts', k, signal, (s) =>
        this.conn.client.send(new ListPartsCommand({ Bucket: this.conn.bucket, Key: k, UploadId: uploadId, MaxParts: 1000, ...(marker ? { PartNumberMarker: marker } : {}) }), { abortSignal: s }));
      for (const p of page.Parts ?? []) {
        if (p.PartNumber !== undefined && p.PartNumber <= upTo) out.push({ PartNumber: p.PartNumber, ETag: p.ETag ?? '', size: p.Size ?? 0 });
      }
      const last = page.Parts?.at(-1)?.PartNumber ?? 0;
      if (!page.IsTruncated || last >= upTo || !page.NextPartNumberMarker) break;
      marker = page.NextPartNumberMarker;
    }
    return out.sort((a, b) => a.PartNumber - b.PartNumber);
  }

  async complete(key: string, uploadId: string, parts: CompletedPart[], signal: AbortSignal | undefined, digest?: string): Promise<void> {
    const k = this.conn.key(key);
    await this.conn.call('CompleteMultipartUpload', k, signal, (s) =>
      this.conn.client.send(new CompleteMultipartUploadCommand({ Bucket: this.conn.bucket, Key: k, UploadId: uploadId, MultipartUpload: { Parts: parts } }), { abortSignal: s }), digest);
  }

  /** Aborts with its own short deadline (it must run even when the caller's signal has fired); never throws. */
  async abort(key: string, uploadId: string): Promise<void> {
    try {
      await this.objects.abortUpload({ key, uploadId, initiated: 0 });
    } catch (err) {
      log.error({ store: this.conn.name, key, uploadId, err }, 'could not abort multipart upload; it will bill until a lifecycle rule or gc removes it');
    }
  }

  /** Uploads a large blob to `blobs/…` (the caller holds its claim), verifying the digest before completing. */
  async upload(d: Digest, key: string, source: () => Readable | Promise<Readable>, opts: PutBlobOptions, started?: StartedRead): Promise<PutOutcome> {
    const uploadId = await this.create(key, opts.signal, d.value);
    const parts = this.parts(key, uploadId, opts.signal, d.value);
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
      await this.complete(key, uploadId, list, opts.signal, d.value);
      blobUploadBytesTotal.inc({ store: this.conn.name }, total);
      return { status: 'written', size: total };
    } catch (err) {
      input?.destroy();
      verify?.destroy();
      await parts.cancel(err);
      await this.abort(key, uploadId);
      throw opts.signal?.aborted ? cancelledError(opts.signal) : err;
    }
  }

  private partSender(key: string, uploadId: string, digest?: string): SendPart {
    const k = this.conn.key(key);
    return async (n, body, signal) => {
      const out = await this.conn.call('UploadPart', k, signal, (s) =>
        this.conn.client.send(new UploadPartCommand({ Bucket: this.conn.bucket, Key: k, UploadId: uploadId, PartNumber: n, Body: body, ContentLength: body.length }), { abortSignal: s }), digest);
      return out.ETag ?? '';
    };
  }
}
