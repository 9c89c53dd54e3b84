// Staged blobs on the S3 store: a registry upload streamed as multipart parts while its bytes still arrive, before
// anyone knows its digest, and the sweep of what crashed processes left of such uploads.
//
// Why it works this way: a staged blob is a multipart upload at a temporary key (`_uploads/<uuid>`, keys.ts). On
// commit the digest is claimed like any large blob, the upload completed at the temporary key and server-side copied
// to `blobs/…` (RGW copies by reference: ~70 ms for 256 MiB here), then the temporary object is deleted. Anything a
// crash leaves is removed by sweepStaged() once older than a limit above the longest upload.
import { randomUUID } from 'node:crypto';
import { CopyObjectCommand } from '@aws-sdk/client-s3';
import { TransshipError } from '../core/errors.js';
import { parseDigest } from '../core/digest.js';
import { blobUploadBytesTotal } from '../telemetry/metrics.js';
import { log } from '../telemetry/log.js';
import type { Signalled, StagedBlob } from './contract.js';
import { LEGACY_STAGING_PREFIX, STAGING_PREFIX, blobKey, stagingKey } from './keys.js';
import type { S3Connection } from './s3-client.js';
import type { S3Objects } from './s3-objects.js';
import type { S3Multipart } from './s3-multipart.js';
import type { S3Claims } from './s3-claims.js';

/** One CopyObject moves at most 5 GiB (S3's limit); bigger staged blobs fall back to a fresh upload. */
export const MAX_COPY_BYTES = 5 * 1024 ** 3;

export interface StagingParts {
  conn: S3Connection;
  objects: S3Objects;
  multipart: S3Multipart;
  claims: S3Claims;
}

export async function stageBlob(p: StagingParts, opts: Signalled = {}): Promise<StagedBlob> {
  const { conn, objects, multipart, claims } = p;
  const key = stagingKey(randomUUID());
  const uploadId = await multipart.create(key, opts.signal);
  const parts = multipart.parts(key, uploadId, opts.signal);
  let state: 'open' | 'completing' | 'done' = 'open';
  const abort = async (): Promise<void> => {
    if (state !== 'open') return;
    state = 'done';
    await parts.cancel(new Error('staged upload aborted'));
    await multipart.abort(key, uploadId);
  };
  return {
    partSize: multipart.partSize,
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
        const [finished, claimed] = await Promise.allSettled([parts.finish(), claims.claim(d, size, o.signal)]);
        if (claimed.status === 'rejected') throw claimed.reason; // parts are aborted below
        const claim = claimed.value;
        if (finished.status === 'rejected') {
          if (claim === 'claimed') await claims.release(d); // or it would block other writers for its lease
          throw finished.reason;
        }
        const list = finished.value;
        if (claim !== 'claimed') {
          await abort();
          return { status: 'exists', size: claim.size };
        }
        try {
          state = 'completing';
          await multipart.complete(key, uploadId, list, o.signal, d.value);
          const target = conn.key(blobKey(d.value));
          const source = encodeURI(`${conn.bucket}/${conn.key(key)}`);
          await conn.call('CopyObject', target, o.signal, (s) =>
            conn.client.send(new CopyObjectCommand({ Bucket: conn.bucket, Key: target, CopySource: source, ContentType: 'application/octet-stream', MetadataDirective: 'REPLACE' }), { abortSignal: s }), d.value);
          state = 'done';
          blobUploadBytesTotal.inc({ store: conn.name }, size);
          return { status: 'written', size };
        } finally {
          await Promise.all([
            claims.release(d),
            state === 'completing' || state === 'done'
              ? objects.delete(key, { signal: AbortSignal.timeout(15_000) }).catch((err: unknown) => log.warn({ store: conn.name, key, err }, 'could not delete staged object; sweepStaged removes it later'))
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
 * Removes what crashed processes left of staged uploads: multipart uploads and temporary objects under `_uploads/`
 * (and the old layout's `uploads/`, for one release) older than `olderThanMs`. Live uploads of other instances are
 * younger than that (keep it well above the longest upload). Returns how many of each were removed.
 */
export async function sweepStaged(objects: S3Objects, olderThanMs: number, opts: Signalled = {}): Promise<{ multipart: number; objects: number }> {
  const cutoff = Date.now() - olderThanMs;
  const out = { multipart: 0, objects: 0 };
  for (const prefix of [STAGING_PREFIX, LEGACY_STAGING_PREFIX]) {
    for await (const u of objects.listUploads(prefix, opts)) {
      if (u.initiated >= cutoff) continue;
      await objects.abortUpload(u).catch((err: unknown) => log.error({ store: objects.name, key: u.key, uploadId: u.uploadId, err }, 'could not abort multipart upload; the next sweep retries'));
      out.multipart++;
    }
    const old: string[] = [];
    for await (const obj of objects.list(prefix, opts)) if (obj.lastModified < cutoff) old.push(obj.key);
    for (const key of old) {
      await objects.delete(key, opts);
      out.objects++;
    }
  }
  return out;
}
