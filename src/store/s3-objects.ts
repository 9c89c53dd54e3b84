// The S3 store's object driver: small objects, listings, batch deletes and multipart leftovers, nothing about OCI.
//
// Why it works this way: every request goes through the connection's one call wrapper (retry, error mapping,
// request counts). Listings stream ListObjectsV2 pages (1000 keys each) so a caller walking a million keys holds
// one page; putIfAbsent is a PutObject with `If-None-Match: *` (412 = someone else wrote it), which RGW honours on
// PutObject; deleteMany is DeleteObjects in quiet mode, 1000 keys a request, per-key errors reported.
import {
  PutObjectCommand, GetObjectCommand, HeadObjectCommand, DeleteObjectCommand, DeleteObjectsCommand, ListObjectsV2Command,
  ListMultipartUploadsCommand, AbortMultipartUploadCommand,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import { throwIfAborted } from '../core/errors.js';
import { multipartAbortsTotal } from '../telemetry/metrics.js';
import type { DeleteManyResult, ObjectDriver, ObjectInfo, PendingUpload, Signalled } from './contract.js';
import type { S3Connection } from './s3-client.js';
import { isPreconditionFailed, isS3NotFound } from './s3-errors.js';

/** S3's limit on keys in one DeleteObjects request. */
export const DELETE_BATCH = 1000;

export class S3Objects implements ObjectDriver {
  readonly name: string;

  constructor(private readonly conn: S3Connection) {
    this.name = conn.name;
  }

  async get(key: string, opts: Signalled = {}): Promise<string | undefined> {
    const k = this.conn.key(key);
    return this.conn.call('GetObject', k, opts.signal, async (s) => {
      try {
        const out = await this.conn.client.send(new GetObjectCommand({ Bucket: this.conn.bucket, Key: k }), { abortSignal: s });
        return await (out.Body as { transformToString(): Promise<string> }).transformToString();
      } catch (err) {
        if (isS3NotFound(err)) return undefined;
        throw err;
      }
    });
  }

  async stat(key: string, opts: Signalled & { digest?: string | undefined } = {}): Promise<ObjectInfo | undefined> {
    const k = this.conn.key(key);
    return this.conn.call('HeadObject', k, opts.signal, async (s) => {
      try {
        const out = await this.conn.client.send(new HeadObjectCommand({ Bucket: this.conn.bucket, Key: k }), { abortSignal: s });
        return { key, size: out.ContentLength ?? 0, lastModified: out.LastModified?.getTime() ?? 0, etag: out.ETag?.replace(/"/g, '') };
      } catch (err) {
        if (isS3NotFound(err)) return undefined;
        throw err;
      }
    }, opts.digest);
  }

  async put(key: string, body: string, opts: Signalled = {}): Promise<void> {
    await this.write(key, body, false, opts.signal);
  }

  async putIfAbsent(key: string, body: string, opts: Signalled = {}): Promise<boolean> {
    return this.write(key, body, true, opts.signal);
  }

  async delete(key: string, opts: Signalled = {}): Promise<void> {
    const k = this.conn.key(key);
    await this.conn.call('DeleteObject', k, opts.signal, (s) => this.conn.client.send(new DeleteObjectCommand({ Bucket: this.conn.bucket, Key: k }), { abortSignal: s }));
  }

  async deleteMany(keys: readonly string[], opts: Signalled = {}): Promise<DeleteManyResult> {
    const out: DeleteManyResult = { deleted: 0, errors: [] };
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      throwIfAborted(opts.signal);
      const batch = keys.slice(i, i + DELETE_BATCH);
      const objects = batch.map((k) => ({ Key: this.conn.key(k) }));
      const body = { Bucket: this.conn.bucket, Delete: { Objects: objects, Quiet: true } };
      const res = await this.conn.call('DeleteObjects', this.conn.key(batch[0] ?? ''), opts.signal, (s) =>
        this.conn.client.send(new DeleteObjectsCommand(body), { abortSignal: s }));
      const failed = res.Errors ?? [];
      for (const e of failed) out.errors.push({ key: this.conn.unkey(e.Key ?? ''), code: e.Code ?? 'Unknown', message: e.Message ?? '' });
      out.deleted += batch.length - failed.length;
    }
    return out;
  }

  async *list(prefix: string, opts: Signalled & { startAfter?: string | undefined } = {}): AsyncIterable<ObjectInfo> {
    const p = this.conn.key(prefix);
    const startAfter = opts.startAfter !== undefined ? this.conn.key(opts.startAfter) : undefined;
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await this.conn.call('ListObjectsV2', p, opts.signal, (s) =>
        this.conn.client.send(new ListObjectsV2Command({ Bucket: this.conn.bucket, Prefix: p, ContinuationToken: token, MaxKeys: 1000, ...(token ? {} : { StartAfter: startAfter }) }), { abortSignal: s }));
      for (const o of page.Contents ?? []) {
        if (o.Key) yield { key: this.conn.unkey(o.Key), size: o.Size ?? 0, lastModified: o.LastModified?.getTime() ?? 0, etag: o.ETag?.replace(/"/g, '') };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async *listUploads(prefix: string, opts: Signalled = {}): AsyncIterable<PendingUpload> {
    const p = this.conn.key(prefix);
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const page = await this.conn.call('ListMultipartUploads', p, opts.signal, (s) =>
        this.conn.client.send(new ListMultipartUploadsCommand({ Bucket: this.conn.bucket, Prefix: p, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }), { abortSignal: s }));
      for (const u of page.Uploads ?? []) {
        if (u.Key && u.UploadId) yield { key: this.conn.unkey(u.Key), uploadId: u.UploadId, initiated: u.Initiated?.getTime() ?? 0 };
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
  }

  /**
   * Aborts a multipart upload. Without a caller's signal it runs on its own short deadline: cleanup must happen even
   * when the operation that started the upload was cancelled. An upload already gone (NoSuchUpload) is fine.
   */
  async abortUpload(upload: PendingUpload, opts: Signalled = {}): Promise<void> {
    const k = this.conn.key(upload.key);
    multipartAbortsTotal.inc({ store: this.name });
    await this.conn.call('AbortMultipartUpload', k, opts.signal ?? AbortSignal.timeout(15_000), async (s) => {
      try {
        await this.conn.client.send(new AbortMultipartUploadCommand({ Bucket: this.conn.bucket, Key: k, UploadId: upload.uploadId }), { abortSignal: s });
      } catch (err) {
        if (isS3NotFound(err)) return;
        throw err;
      }
    });
  }

  private async write(key: string, body: string, ifAbsent: boolean, signal: AbortSignal | undefined): Promise<boolean> {
    const k = this.conn.key(key);
    return this.conn.call('PutObject', k, signal, async (s) => {
      try {
        await this.conn.client.send(new PutObjectCommand({ Bucket: this.conn.bucket, Key: k, Body: body, ContentType: contentType(body), ...(ifAbsent ? { IfNoneMatch: '*' } : {}) }), { abortSignal: s });
        return true;
      } catch (err) {
        if (ifAbsent && isPreconditionFailed(err)) return false;
        throw err;
      }
    });
  }
}

/** JSON bodies (claims, leases, descriptors) say so; the rest (digests, stamps) are plain text. */
function contentType(body: string): string {
  return body.startsWith('{') || body.startsWith('[') ? 'application/json' : 'text/plain';
}

