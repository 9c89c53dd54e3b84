// Staged blobs on the S3 store: a registry upload streamed as multipart parts while its bytes still arrive, before
// anyone knows its digest, and the sweep of what crashed processes left of such uploads.
//
// Why it works this way: a staged blob is a multipart upload at a temporary key (`_uploads/<uuid>`, keys.ts). On
// commit the digest is claimed like any large blob, the upload completed at the temporary key and server-side copied
// to `blobs/…` (RGW copies by reference: ~70 ms for 256 MiB here), then the temporary object is deleted. Anything a
// crash leaves is removed by sweepStaged() once older than a limit above the longest upload.
// A stage can be checkpointed and continued by another process (a registry session that moves between instances,
// registry/uploads.ts): the multipart upload id, part count and bytes are all it needs; part ETags are listed from S3
// at commit, and bytes that do not fill a part wait in a small tail object beside the stage (stagedTails).
import { createHash, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { CopyObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { TransshipError } from '@transship/core/errors';
import { digestMismatch, parseDigest, type Algorithm } from '@transship/core/digest';
import { blobUploadBytesTotal } from '../telemetry/metrics.js';
import { log } from '@transship/core/log';
import type { Signalled, StageOptions, StagedBlob, StagedTails } from './contract.js';
import { LEGACY_STAGING_PREFIX, STAGING_PREFIX, blobKey, stagingKey, stagingTailKey } from './keys.js';
import { isS3NotFound } from './s3-errors.js';
import type { CompletedPart } from './s3-parts.js';
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

export async function stageBlob(p: StagingParts, opts: StageOptions = {}): Promise<StagedBlob> {
  const { conn, objects, multipart, claims } = p;
  const key = stagingKey(opts.id ?? randomUUID());
  const resume = opts.resume;
  const uploadId = resume?.uploadId ?? (await multipart.create(key, opts.signal));
  const parts = multipart.parts(key, uploadId, opts.signal, undefined, resume && { parts: resume.parts, bytes: resume.bytes });
  let state: 'open' | 'completing' | 'done' = 'open';
  const abort = async (): Promise<void> => {
    if (state !== 'open') return;
    state = 'done';
    await parts.cancel(new Error('staged upload aborted'));
    await multipart.abort(key, uploadId);
  };
  /** Every part, in order: the ones other processes checkpointed (listed from S3) and this process's own. */
  const allParts = async (signal: AbortSignal | undefined): Promise<CompletedPart[]> => {
    const own = await parts.finish();
    if (!resume || resume.parts === 0) return own;
    const earlier = await multipart.listParts(key, uploadId, resume.parts, signal);
    const bytes = earlier.reduce((n, x) => n + x.size, 0);
    if (earlier.length !== resume.parts || bytes !== resume.bytes) {
      throw new TransshipError('TS_UPLOAD_STATE_INVALID', `staged upload ${key} holds ${earlier.length} parts (${bytes} bytes) where its state says ${resume.parts} (${resume.bytes} bytes)`);
    }
    return [...earlier.map(({ PartNumber, ETag }) => ({ PartNumber, ETag })), ...own];
  };
  return {
    uploadId,
    partSize: multipart.partSize,
    maxBytes: MAX_COPY_BYTES,
    buffer: () => parts.buffer(),
    addPart: (body) => parts.add(body),
    abort,
    checkpoint: async () => {
      const own = await parts.finish();
      return { uploadId, parts: parts.parts, bytes: parts.bytes, ...(resume ? {} : { etags: etagDigest(own) }) };
    },
    release: async () => {
      if (state !== 'open') return;
      state = 'done';
      await parts.cancel(new Error('staged upload handed over'));
    },
    commit: async (digest, size, o = {}) => {
      const d = parseDigest(digest);
      if (state !== 'open') throw new TransshipError('TS_INTERNAL', `staged upload ${key} was already committed or aborted`);
      if (size > MAX_COPY_BYTES) throw new TransshipError('TS_INTERNAL', `staged blob of ${size} bytes is larger than one CopyObject can move`);
      try {
        // parts.bytes counts what was handed over, so a wrong size is known before anything more goes out.
        if (parts.bytes !== size) throw new TransshipError('TS_SIZE_MISMATCH', `staged ${parts.bytes} bytes, but the blob has ${size}`);
        if (o.verify) {
          // Nobody here saw all the bytes: complete at the temporary key, hash what S3 holds there, and only then
          // claim and copy. A mismatch leaves nothing visible (the temporary object is deleted below).
          const list = await allParts(o.signal);
          state = 'completing';
          await multipart.complete(key, uploadId, list, o.signal);
          // The process that sent the first parts hashed every byte, and those parts are still the ones it sent
          // (their ETags): the caller's digest stands. Otherwise read the object back and hash it.
          const vouched = typeof o.verify === 'object' && resume !== undefined && o.verify.etags === etagDigest(list.slice(0, resume.parts));
          if (typeof o.verify === 'object' && !vouched) log.info({ store: conn.name, key, digest: d.value }, 'staged parts changed since they were hashed; checking the digest by reading the blob back');
          const actual = vouched ? d.value : await hashObject(conn, key, d.algorithm, o.signal);
          if (actual !== d.value) throw digestMismatch(d.value, actual);
          const claim = await claims.claim(d, size, o.signal);
          if (claim !== 'claimed') {
            state = 'done';
            await deleteStaged(objects, key);
            return { status: 'exists', size: claim.size };
          }
          try {
            await copyToBlob(conn, key, d.value, o.signal);
          } finally {
            await claims.release(d);
          }
          state = 'done';
          blobUploadBytesTotal.inc({ store: conn.name }, size);
          await deleteStaged(objects, key);
          return { status: 'written', size };
        }
        // The last parts and the claim go out together: neither needs the other, and both sit between the
        // client's final PUT and its answer.
        const [finished, claimed] = await Promise.allSettled([allParts(o.signal), claims.claim(d, size, o.signal)]);
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
          await copyToBlob(conn, key, d.value, o.signal);
          state = 'done';
          blobUploadBytesTotal.inc({ store: conn.name }, size);
          return { status: 'written', size };
        } finally {
          await Promise.all([claims.release(d), state === 'completing' || state === 'done' ? deleteStaged(objects, key) : undefined]);
        }
      } catch (err) {
        if (state === 'open') await abort();
        else if (state === 'completing') await deleteStaged(objects, key);
        state = 'done';
        throw err;
      }
    },
  };
}

/** One digest of a stage's part ETags in part order (StagedState.etags). */
function etagDigest(parts: readonly CompletedPart[]): string {
  const h = createHash('sha256');
  for (const p of [...parts].sort((a, b) => a.PartNumber - b.PartNumber)) h.update(`${p.PartNumber}:${p.ETag}\n`);
  return h.digest('base64url').slice(0, 22);
}

/** Server-side copy of a completed staged object to its blob key (RGW copies by reference). */
async function copyToBlob(conn: S3Connection, key: string, digest: string, signal: AbortSignal | undefined): Promise<void> {
  const target = conn.key(blobKey(digest));
  const source = encodeURI(`${conn.bucket}/${conn.key(key)}`);
  await conn.call('CopyObject', target, signal, (s) =>
    conn.client.send(new CopyObjectCommand({ Bucket: conn.bucket, Key: target, CopySource: source, ContentType: 'application/octet-stream', MetadataDirective: 'REPLACE' }), { abortSignal: s }), digest);
}

async function deleteStaged(objects: S3Objects, key: string): Promise<void> {
  await objects.delete(key, { signal: AbortSignal.timeout(15_000) }).catch((err: unknown) => log.warn({ store: objects.name, key, err }, 'could not delete staged object; sweepStaged removes it later'));
}

/** The digest of a stored object, read whole (a lost connection restarts the read through the retry). */
async function hashObject(conn: S3Connection, key: string, algorithm: Algorithm, signal: AbortSignal | undefined): Promise<string> {
  const k = conn.key(key);
  return conn.call('GetObject', k, signal, async (s) => {
    const out = await conn.client.send(new GetObjectCommand({ Bucket: conn.bucket, Key: k }), { abortSignal: s });
    const h = createHash(algorithm);
    for await (const chunk of out.Body as Readable) h.update(chunk as Buffer);
    return `${algorithm}:${h.digest('hex')}`;
  });
}

/** Tails of shared upload sessions (StagedTails): one small object per session, its version in the metadata. */
export function stagedTails(conn: S3Connection, objects: S3Objects, multipart: S3Multipart): StagedTails {
  const tailKey = (id: string): string => conn.key(stagingTailKey(id));
  return {
    put: async (id, version, body, opts = {}) => {
      const k = tailKey(id);
      await conn.call('PutObject', k, opts.signal, (s) =>
        conn.client.send(new PutObjectCommand({ Bucket: conn.bucket, Key: k, Body: body, ContentLength: body.length, ContentType: 'application/octet-stream', Metadata: { version } }), { abortSignal: s }));
    },
    get: async (id, opts = {}) => {
      const k = tailKey(id);
      return conn.call('GetObject', k, opts.signal, async (s) => {
        try {
          const out = await conn.client.send(new GetObjectCommand({ Bucket: conn.bucket, Key: k }), { abortSignal: s });
          const chunks: Buffer[] = [];
          for await (const chunk of out.Body as Readable) chunks.push(chunk as Buffer);
          return { version: out.Metadata?.version ?? '', body: Buffer.concat(chunks) };
        } catch (err) {
          if (isS3NotFound(err)) return undefined;
          throw err;
        }
      });
    },
    version: async (id, opts = {}) => {
      const k = tailKey(id);
      return conn.call('HeadObject', k, opts.signal, async (s) => {
        try {
          const out = await conn.client.send(new HeadObjectCommand({ Bucket: conn.bucket, Key: k }), { abortSignal: s });
          return out.Metadata?.version ?? '';
        } catch (err) {
          if (isS3NotFound(err)) return undefined;
          throw err;
        }
      });
    },
    delete: (id, opts = {}) => objects.delete(stagingTailKey(id), opts),
    abortStage: (id, uploadId) => multipart.abort(stagingKey(id), uploadId),
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
