// GET/HEAD/DELETE /v2/<name>/blobs/<digest>. With blob links on (auth on, or serve.blobLinks), a blob is only
// visible through a repository it is linked to (uploaded or mounted there, or referenced by one of its manifests):
// knowing a digest from another repository is not enough to read it.
import { isTransshipError } from '@transship/core/errors';
import type { Readable } from 'node:stream';
import type { ByteRange } from '../store/contract.js';
import { blobReadsTotal, registryBlobRedirectsTotal, registryServedBytesTotal } from '../telemetry/metrics.js';
import { RegistryError } from './errors.js';
import type { Call } from './context.js';

function blobUnknown(digest: string): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', `blob ${digest} is unknown to this repository`, { digest });
}

/** Parses a single `bytes=` range against `size`; undefined = serve everything; throws 416 when unsatisfiable. */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  // Multiple ranges or other units: ignoring Range and answering 200 is allowed (RFC 9110).
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    start = Math.max(0, size - suffix);
    end = size - 1;
    if (suffix === 0) start = size;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || end < start) {
    throw new RegistryError('SIZE_INVALID', `range ${header} is not satisfiable for a blob of ${size} bytes`, { size }, 416, { 'content-range': `bytes */${size}` });
  }
  return { start, end };
}

export async function getBlob(call: Call): Promise<void> {
  if (call.target.kind !== 'blob') return;
  const { ctx, reply, signal } = call;
  const { name, digest } = call.target;
  // With blob links on (always with auth; `serve.blobLinks` without), a blob is visible only where it is linked: a
  // blob DELETE removes the link, and the blob must then be 404 in that repository even though its bytes stay.
  if (ctx.links.opts.blobLinks && !(await ctx.links.isBlobLinked(name, digest, signal))) throw blobUnknown(digest);
  // Bytes this instance received or served lately come from its local disk (blob-cache.ts). GETs only: a HEAD is
  // about presence in the store, which the cache does not prove. Redirect mode sends clients to the store instead.
  const cache = call.method === 'GET' && !ctx.redirect ? ctx.blobCache : undefined;
  const cachedSize = cache?.lookup(digest);
  if (cache && cachedSize !== undefined) {
    const range = parseRange(call.request.headers.range, cachedSize);
    const stream = await cache.open(digest, range);
    if (stream) {
      if (ctx.placed) blobReadsTotal.inc({ location: 'local' });
      ctx.placed?.noteLocalRead(digest);
      sendBlob(call, digest, stream, cachedSize, range);
      return;
    }
  }
  // A plain GET of a blob not seen lately: open it and learn its size from the same response (one request, where
  // a stat first would cost a HEAD or a listing too). Ranges and redirects need the size first.
  let homeMissed = false;
  if (call.method === 'GET' && !call.request.headers.range && !ctx.redirect && ctx.store.openBlob && !ctx.known(digest)) {
    const opened = await ctx.store.openBlob(digest, { signal }).catch((err: unknown) => {
      if (isTransshipError(err, 'TS_BLOB_UNKNOWN')) return undefined;
      throw err;
    });
    if (opened) {
      ctx.notePresent(digest, opened.size);
      if (ctx.placed) blobReadsTotal.inc({ location: 'local' });
      ctx.placed?.noteLocalRead(digest);
      sendBlob(call, digest, cache ? cache.tee(digest, opened.size, opened.stream) : opened.stream, opened.size);
      return;
    }
    homeMissed = true;
  }
  // Home region first; with regions configured, a miss is a lazy fetch from the region that holds the blob.
  const local = homeMissed ? undefined : await ctx.stat(digest, signal);
  const located = local ? undefined : await ctx.placed?.locate(digest, { signal, skipHome: true });
  const info = local ?? located?.info;
  if (!info) throw blobUnknown(digest);
  // Redirect mode: a blob in the home store is fetched by the client from the store itself (presigned URL), so
  // its bytes never pass through this instance. Checks above (auth, presence) still decide what the client sees;
  // blobs elsewhere take the lazy-fetch path below.
  const url = call.method === 'GET' && local && ctx.redirect ? await ctx.redirectUrl(digest, ctx.redirect.expiresInSeconds) : undefined;
  if (url) {
    registryBlobRedirectsTotal.inc();
    if (ctx.placed) blobReadsTotal.inc({ location: 'local' });
    ctx.placed?.noteLocalRead(digest);
    reply.code(307).header('location', url).header('docker-content-digest', digest).header('content-length', '0').send();
    return;
  }
  const range = parseRange(call.request.headers.range, info.size);
  if (call.method === 'HEAD') {
    // A client HEADs before deciding not to upload: start the GC touch now, the manifest PUT waits for it.
    ctx.freshness.prefetch([info]);
    sendBlob(call, digest, undefined, info.size);
    return;
  }
  let stream;
  try {
    stream = ctx.placed
      ? (await ctx.placed.open(digest, { signal, repo: name, located, ...(range ? { range } : {}) })).stream
      : await ctx.store.getBlob(digest, { signal, ...(range ? { range } : {}) });
  } catch (err) {
    // The presence hint may be stale (deleted since): answer as the store does now.
    ctx.forget(digest);
    throw err;
  }
  if (cache && !range) stream = cache.tee(digest, info.size, stream);
  sendBlob(call, digest, stream, info.size, range);
}

/** Blob response headers, then the body (none for HEAD); a range of the blob's `size` bytes makes it a 206. */
function sendBlob(call: Call, digest: string, stream: Readable | undefined, size: number, range?: ByteRange): void {
  const { reply } = call;
  const length = range ? range.end - range.start + 1 : size;
  reply.header('docker-content-digest', digest).header('accept-ranges', 'bytes').header('etag', `"${digest}"`).type('application/octet-stream');
  reply.code(range ? 206 : 200).header('content-length', String(length));
  if (range) reply.header('content-range', `bytes ${range.start}-${range.end}/${size}`);
  if (!stream) {
    reply.send();
    return;
  }
  // Counted when the response completed (a 'data' listener here would start the stream before fastify pipes it).
  reply.raw.once('finish', () => registryServedBytesTotal.inc(length));
  reply.send(stream);
}

export async function deleteBlob(call: Call): Promise<void> {
  if (call.target.kind !== 'blob') return;
  const { ctx, signal } = call;
  const { name, digest } = call.target;
  if (!ctx.allowDelete) throw new RegistryError('UNSUPPORTED', 'deletes are disabled on this registry (serve.allowDelete)');
  // Blob bytes are shared by every repository (that is the dedup); DELETE removes this repository's link only,
  // and unreferenced bytes are left to garbage collection.
  if (!ctx.links.opts.blobLinks) throw new RegistryError('UNSUPPORTED', 'blob delete needs blob links (serve.blobLinks or auth): blob content is shared across repositories');
  if (!(await ctx.links.isBlobLinked(name, digest, signal))) throw blobUnknown(digest);
  await ctx.links.unlinkBlob(name, digest, signal);
  call.reply.code(202).header('content-length', '0').send();
}
