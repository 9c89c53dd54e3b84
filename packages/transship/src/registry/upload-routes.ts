// Blob uploads: POST (start, monolithic with ?digest=, or ?mount=&from=), PATCH (chunks in order), PUT (finish
// with ?digest=), GET (status), DELETE (cancel). Bytes go to a local spool (uploads.ts); the store sees one
// putBlob of verified bytes, or nothing when it already has the blob.
import { parseDigest } from '@transship/core/digest';
import { validateRepoName } from '@transship/core/names';
import { s3PutSkippedDueToDedup } from '../telemetry/metrics.js';
import { RegistryError } from './errors.js';
import type { Call } from './context.js';
import { blobPath, uploadPath } from './paths.js';
import { rangeOf, type UploadSession } from './uploads.js';

function digestParam(value: string | null): string {
  if (!value) throw new RegistryError('DIGEST_INVALID', 'the digest query parameter is required to finish an upload');
  try {
    return parseDigest(value).value;
  } catch (err) {
    throw new RegistryError('DIGEST_INVALID', (err as Error).message, { digest: value.slice(0, 200) });
  }
}

/** Content-Range of a chunk: `<start>-<end>` (inclusive; `bytes=` or `bytes ` prefixes tolerated). */
function chunkRange(header: string | undefined): { start: number; length: number } | undefined {
  if (header === undefined) return undefined;
  const m = /^(?:bytes[= ])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (!m) throw new RegistryError('BLOB_UPLOAD_INVALID', `malformed Content-Range "${header.slice(0, 100)}": expected <start>-<end>`, {}, 416);
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) throw new RegistryError('BLOB_UPLOAD_INVALID', `Content-Range ${header} ends before it starts`, {}, 416);
  return { start, length: end - start + 1 };
}

function contentLength(call: Call): number | undefined {
  const v = call.request.headers['content-length'];
  return v === undefined ? undefined : Number(v);
}

function sessionReply(call: Call, s: UploadSession, status: number): void {
  reply(call, s.repo, s.id, s.range, s.token, status);
}

function reply(call: Call, repo: string, id: string, range: string, token: string | undefined, status: number): void {
  call.reply
    .code(status)
    .header('location', uploadPath(repo, id, token))
    .header('range', range)
    .header('docker-upload-uuid', id)
    .header('content-length', '0')
    .send();
}

/** The session a request to `/blobs/uploads/<id>` names, on this instance or adopted from its `_state` token. */
function session(call: Call & { target: { kind: 'upload' } }): Promise<UploadSession> {
  return call.ctx.sessions.open(call.target.id, call.target.name, call.query.get('_state'));
}

/** Verifies the spooled bytes against `digest`, stores them once, links them to the repository, ends the session. */
async function commit(call: Call, s: UploadSession, digest: string): Promise<void> {
  const { ctx, signal } = call;
  // A PATCH still writing to the spool (a client's final PUT overtaking its own chunk) would change the bytes under
  // the digest check and the store's read: the session stays open for the client to finish in order.
  if (s.busy) throw new RegistryError('BLOB_UPLOAD_INVALID', 'another request is still writing to this upload session; finish it before the final PUT', { id: s.id }, 416, { range: s.range });
  s.busy = true; // keeps the idle sweeper away while the store reads the spool
  try {
    const d = parseDigest(digest);
    // Another digest than the blob a checkpoint stored: this instance needs the bytes to check it.
    if (s.lazy && s.stored !== d.value) await ctx.sessions.materialize(s, signal);
    if (s.stored !== undefined && s.stored === d.value) {
      // The checkpoint of the PATCH that brought the last bytes stored them as this blob (uploads.ts): only the
      // link is left to write. The digest was computed from the bytes by the instance that stored them.
    } else if (s.wholeHash) {
      const actual = await ctx.sessions.digest(s, d.algorithm);
      if (actual !== d.value) {
        throw new RegistryError('DIGEST_INVALID', `uploaded content has digest ${actual}, not ${d.value}; nothing was stored`, { expected: d.value, actual });
      }
      await ctx.storeBlob(d.value, s.size, () => ctx.sessions.openSpool(s), signal, s.streamer);
    } else {
      // The session continued a stage another instance started: its first bytes were never here, so the store
      // checks the digest by reading the staged bytes back — before anything is linked, even when the blob exists.
      const vouched = s.vouched && s.vouched.digest === d.value && s.vouched.size === s.size ? { etags: s.vouched.etags } : undefined;
      await ctx.storeStaged(d.value, s.size, s.streamer, signal, vouched);
    }
    await ctx.links.linkBlob(s.repo, d.value, signal);
    // Verified bytes the store now has: a pull through this instance reads them from local disk (no copy made).
    if (s.wholeHash) await ctx.blobCache?.adopt(d.value, s.size, s.path);
  } finally {
    s.busy = false;
    await ctx.sessions.remove(s);
  }
  call.reply.code(201).header('location', blobPath(s.repo, digest)).header('docker-content-digest', digest).header('content-length', '0').send();
}

export async function startUpload(call: Call): Promise<void> {
  if (call.target.kind !== 'uploads') return;
  const { ctx, query, signal } = call;
  const name = call.target.name;
  const mount = query.get('mount');
  if (mount !== null && (await tryMount(call, name, mount, query.get('from')))) return;
  const digest = query.get('digest');
  const s = await ctx.sessions.create(name);
  if (digest === null) {
    sessionReply(call, s, 202);
    return;
  }
  // Monolithic upload: the whole blob in the POST body.
  try {
    const d = digestParam(digest);
    await ctx.sessions.append(s, call.request.raw, { expectedLength: contentLength(call), signal });
    await commit(call, s, d);
  } catch (err) {
    await ctx.sessions.remove(s);
    throw err;
  }
}

/**
 * Cross-repository mount: succeeds (201) only when the blob exists and — with auth on — the caller may pull `from`
 * and the blob belongs to `from`. Otherwise the spec says to fall back to a normal upload session (202).
 */
async function tryMount(call: Call, name: string, mount: string, from: string | null): Promise<boolean> {
  const { ctx, signal, identity } = call;
  let digest: string;
  try {
    digest = parseDigest(mount).value;
  } catch {
    return false;
  }
  if (ctx.auth) {
    if (from === null) return false;
    try {
      validateRepoName(from);
    } catch {
      return false;
    }
    if (!ctx.auth.can(identity, from, 'pull')) return false;
    if (!(await ctx.links.isBlobLinked(from, digest, signal))) return false;
  }
  if (!(await ctx.stat(digest, signal))) return false;
  await ctx.links.linkBlob(name, digest, signal);
  s3PutSkippedDueToDedup.inc({ reason: 'mount' });
  call.reply.code(201).header('location', blobPath(name, digest)).header('docker-content-digest', digest).header('content-length', '0').send();
  return true;
}

export async function patchUpload(call: Call): Promise<void> {
  if (call.target.kind !== 'upload') return;
  const { ctx, signal } = call;
  const s = await session({ ...call, target: call.target });
  const range = chunkRange(call.request.headers['content-range']);
  await ctx.sessions.append(s, call.request.raw, { start: range?.start, expectedLength: range?.length ?? contentLength(call), signal, checkpoint: true, chunked: range !== undefined });
  sessionReply(call, s, 202);
}

export async function finishUpload(call: Call): Promise<void> {
  if (call.target.kind !== 'upload') return;
  const { ctx, signal } = call;
  const s = await session({ ...call, target: call.target });
  const digest = digestParam(call.query.get('digest'));
  const range = chunkRange(call.request.headers['content-range']);
  const length = range?.length ?? contentLength(call);
  if (range || length !== 0) await ctx.sessions.append(s, call.request.raw, { start: range?.start, expectedLength: length, signal });
  await commit(call, s, digest);
}

export async function uploadStatus(call: Call): Promise<void> {
  if (call.target.kind !== 'upload') return;
  const { ctx, target } = call;
  const token = call.query.get('_state');
  if (token !== null && ctx.sessions.shared) {
    // The token says where the session stands; no need to adopt it (and read its tail) to answer.
    const state = await ctx.sessions.state(target.id, target.name, token);
    reply(call, target.name, target.id, rangeOf(state.size), token, 204);
    return;
  }
  sessionReply(call, ctx.sessions.get(target.id, target.name), 204);
}

export async function cancelUpload(call: Call): Promise<void> {
  if (call.target.kind !== 'upload') return;
  const { ctx, target } = call;
  const token = call.query.get('_state');
  if (token !== null && ctx.sessions.shared) {
    const state = await ctx.sessions.state(target.id, target.name, token);
    const local = ctx.sessions.local(target.id, target.name);
    // A copy here that another instance overtook is only let go of: the cancel below handles the newer state.
    if (local) await (local.version === state.version ? ctx.sessions.remove(local) : ctx.sessions.release(local));
    await ctx.sessions.cancelShared(state);
  } else {
    await ctx.sessions.remove(ctx.sessions.get(target.id, target.name));
  }
  call.reply.code(204).header('content-length', '0').send();
}
