// GET/HEAD/DELETE /v2/<name>/blobs/<digest>. With auth on, a blob is only visible through a repository it is
// linked to (uploaded or mounted there, or referenced by one of its manifests): knowing a digest from another
// repository is not enough to read it.
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
  if (ctx.auth && !(await ctx.links.isBlobLinked(name, digest, signal))) throw blobUnknown(digest);
  // Home region first; with regions configured, a miss is a lazy fetch from the region that holds the blob.
  const local = await ctx.stat(digest, signal);
  const info = local ?? (await ctx.placed?.locate(digest, { signal, skipHome: true }))?.info;
  if (!info) throw blobUnknown(digest);
  // Redirect mode: a blob in the home store is fetched by the client from the store itself (presigned URL), so
  // its bytes never pass through this instance. Checks above (auth, presence) still decide what the client sees;
  // blobs elsewhere take the lazy-fetch path below.
  if (call.method === 'GET' && local && ctx.redirect && ctx.store.blobUrl) {
    const url = await ctx.store.blobUrl(digest, { expiresInSeconds: ctx.redirect.expiresInSeconds });
    registryBlobRedirectsTotal.inc();
    if (ctx.placed) blobReadsTotal.inc({ location: 'local' });
    reply.code(307).header('location', url).header('docker-content-digest', digest).header('content-length', '0').send();
    return;
  }
  reply.header('docker-content-digest', digest).header('accept-ranges', 'bytes').header('etag', `"${digest}"`).type('application/octet-stream');
  const range = parseRange(call.request.headers.range, info.size);
  if (call.method === 'HEAD') {
    reply.header('content-length', String(info.size)).code(200).send();
    return;
  }
  let stream;
  try {
    stream = ctx.placed
      ? (await ctx.placed.open(digest, { signal, repo: name, ...(range ? { range } : {}) })).stream
      : await ctx.store.getBlob(digest, { signal, ...(range ? { range } : {}) });
  } catch (err) {
    // The presence hint may be stale (deleted since): answer as the store does now.
    ctx.forget(digest);
    throw err;
  }
  const length = range ? range.end - range.start + 1 : info.size;
  // Counted when the response completed (a 'data' listener here would start the stream before fastify pipes it).
  call.reply.raw.once('finish', () => registryServedBytesTotal.inc(length));
  if (range) reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${info.size}`);
  else reply.code(200);
  reply.header('content-length', String(length)).send(stream);
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
