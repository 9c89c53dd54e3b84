// GET/HEAD/PUT/DELETE /v2/<name>/manifests/<tag|digest>. Manifests are stored as blobs (their exact bytes, so the
// digest clients computed stays true), linked to the repository, then tagged — in that order, and only after every
// blob or child manifest they reference is present (and, with auth on, belongs to the repository).
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { buffer } from 'node:stream/consumers';
import { digestMismatch, digestOf, parseDigest } from '@transship/core/digest';
import { isTransshipError } from '@transship/core/errors';
import { parseManifest, references, type ParsedManifest } from '../transfer/manifest.js';
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, type Descriptor } from '../transfer/types.js';
import { RegistryError } from './errors.js';
import type { Call } from './context.js';
import type { BlobInfo } from '../store/contract.js';
import { manifestPath } from './paths.js';

const KNOWN_TYPES = new Set([...MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES]);

function manifestUnknown(name: string, ref: string): RegistryError {
  return new RegistryError('MANIFEST_UNKNOWN', `manifest ${ref} is unknown to repository ${name}`, { name, reference: ref });
}

/** The body's `mediaType` field; undefined when it has none (or is not JSON). */
function declaredMediaType(bytes: Buffer): string | undefined {
  try {
    const json = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
    return typeof json.mediaType === 'string' ? json.mediaType : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The media type to answer with: the body's `mediaType`; else the Content-Type it was pushed with, when that was not
 * what its shape implies (a Docker v2 manifest without the field is served back as Docker v2, not OCI); else its
 * shape's.
 */
async function mediaTypeOf(call: Call, name: string, digest: string, bytes: Buffer): Promise<string> {
  const declared = declaredMediaType(bytes);
  if (declared) return declared;
  try {
    const shape = parseManifest(bytes).mediaType;
    return (await call.ctx.links.manifestMediaType(name, digest, call.signal)) ?? shape;
  } catch (err) {
    if (!isTransshipError(err, 'TS_MANIFEST_INVALID')) throw err;
    return 'application/octet-stream';
  }
}

const SCHEMA1_TYPES = new Set(['application/vnd.docker.distribution.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v1+prettyjws']);

/** Docker schema 1 is refused with what to do instead (not a schema-2 validation message). */
function refuseSchema1(bytes: Buffer, contentType: string | undefined): void {
  let version: unknown;
  try {
    version = (JSON.parse(bytes.toString('utf8')) as { schemaVersion?: unknown }).schemaVersion;
  } catch {
    version = undefined;
  }
  if (version === 1 || SCHEMA1_TYPES.has(contentType?.split(';')[0]?.trim() ?? '')) {
    throw new RegistryError(
      'MANIFEST_INVALID',
      'Docker schema 1 manifests are not supported (deprecated, unsigned digests); convert the image to schema 2 or OCI, e.g. `skopeo copy --format v2s2 SRC DST` (or `--format oci`)',
      { schemaVersion: 1 },
    );
  }
}

export async function getManifest(call: Call): Promise<void> {
  if (call.target.kind !== 'manifest') return;
  const { ctx, signal, reply } = call;
  const { name, reference } = call.target;
  const ref = reference.tag ?? reference.digest;
  let digest = reference.tag !== undefined ? await ctx.store.getTag(name, reference.tag, { signal }) : reference.digest;
  // With regions configured, a tag pushed in another region is found there (lazy fetch of the manifest below).
  if (!digest && reference.tag !== undefined && ctx.placed) digest = (await ctx.placed.getTag(name, reference.tag, { signal }))?.digest;
  if (!digest) throw manifestUnknown(name, ref);
  // A tag is written only after its manifest link; a digest must be linked to this repository to be visible here.
  if (reference.digest !== undefined && !(await linkedAnywhere(call, name, digest))) throw manifestUnknown(name, ref);
  let bytes: Buffer;
  let local = false;
  try {
    bytes = await ctx.links.manifestBytes(digest, signal);
    ctx.placed?.noteLocalRead(digest);
    local = true;
  } catch (err) {
    if (!isTransshipError(err, 'TS_BLOB_UNKNOWN')) throw err;
    if (!ctx.placed) throw manifestUnknown(name, ref);
    bytes = await remoteManifest(call, digest).catch((e: unknown) => {
      throw isTransshipError(e, 'TS_BLOB_UNKNOWN') ? manifestUnknown(name, ref) : e;
    });
  }
  reply
    .code(200)
    .type(await mediaTypeOf(call, name, digest, bytes))
    .header('docker-content-digest', digest)
    .header('etag', `"${digest}"`)
    .header('content-length', String(bytes.length));
  if (call.method === 'HEAD') reply.send();
  else {
    reply.send(bytes);
    // After the answer, in the background: retention's pulledWithin (pulls.ts). A manifest read from another region
    // is not recorded here: this store does not hold it.
    if (local) ctx.pulls?.note(name, digest);
  }
}

/** Is `digest` a manifest of `name` in the home region or (with regions configured) in any other region? */
async function linkedAnywhere(call: Call, name: string, digest: string): Promise<boolean> {
  const { ctx, signal } = call;
  if (await ctx.store.hasManifestLink(name, digest, { signal })) return true;
  for (const region of ctx.placed?.regions.others ?? []) {
    if (await ctx.placed?.regions.store(region).hasManifestLink(name, digest, { signal }).catch(() => false)) return true;
  }
  return false;
}

/** Manifest bytes through the placement read path, checked against their digest before they are served. */
async function remoteManifest(call: Call, digest: string): Promise<Buffer> {
  const placed = await call.ctx.placed!.open(digest, { signal: call.signal });
  const bytes = await buffer(placed.stream);
  const actual = digestOf(bytes, parseDigest(digest).algorithm);
  if (actual !== digest) throw digestMismatch(digest, actual);
  return bytes;
}

/** Reads a request body into memory up to `limit` bytes (413 SIZE_INVALID beyond). */
async function readBody(call: Call, limit: number): Promise<Buffer> {
  const declared = Number(call.request.headers['content-length'] ?? NaN);
  if (declared > limit) throw new RegistryError('SIZE_INVALID', `manifest of ${declared} bytes exceeds the limit of ${limit}`, { limit }, 413);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of call.request.raw as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) throw new RegistryError('SIZE_INVALID', `manifest exceeds the limit of ${limit} bytes`, { limit }, 413);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/** Throws MANIFEST_BLOB_UNKNOWN unless every reference may be used by a manifest of `name`. */
async function checkReferences(call: Call, name: string, parsed: ParsedManifest): Promise<void> {
  const { ctx, signal } = call;
  const refs = references(parsed);
  const missing = (d: Descriptor, why: string): RegistryError =>
    new RegistryError('MANIFEST_BLOB_UNKNOWN', `${parsed.kind} references ${d.digest}, which ${why}`, { digest: d.digest, mediaType: d.mediaType });
  if (parsed.kind === 'index') {
    // Child manifests must have been pushed to this repository first (what every client does).
    for (const d of refs) if (!(await ctx.store.hasManifestLink(name, d.digest, { signal }))) throw missing(d, `is not a manifest of ${name}`);
    await ensureFresh(call, refs, missing);
    return;
  }
  const present = await ctx.statMany([...new Set(refs.map((d) => d.digest))], signal);
  for (const d of refs) {
    const info = present.get(d.digest);
    if (!info) throw missing(d, 'is not in the registry');
    if (info.size !== d.size) throw new RegistryError('MANIFEST_INVALID', `descriptor of ${d.digest} says ${d.size} bytes, the blob has ${info.size}`, { digest: d.digest });
  }
  // No cross-repository leak: a manifest may only reference blobs that belong to its repository.
  if (ctx.auth) for (const d of refs) if (!(await ctx.links.isBlobLinked(name, d.digest, signal))) throw missing(d, `was never uploaded to or mounted into ${name}`);
  await ensureFresh(call, refs, missing, present);
}

/**
 * The writers' half of the GC protocol (docs/gc.md): blobs this manifest relies on are fresh, or touched and
 * confirmed, before it becomes visible; one found gone is as missing as one never uploaded (the client re-uploads).
 */
async function ensureFresh(call: Call, refs: readonly Descriptor[], missing: (d: Descriptor, why: string) => RegistryError, present?: ReadonlyMap<string, BlobInfo>): Promise<void> {
  const { ctx, signal } = call;
  const infos = present ?? (await ctx.statMany([...new Set(refs.map((d) => d.digest))], signal));
  const gone = new Set(await ctx.freshness.ensure([...infos.values()], { signal }));
  const first = refs.find((d) => gone.has(d.digest) || !infos.has(d.digest));
  if (first) {
    for (const d of gone) ctx.forget(d);
    throw missing(first, 'is not in the registry (removed by garbage collection)');
  }
}

export async function putManifest(call: Call): Promise<void> {
  if (call.target.kind !== 'manifest') return;
  const { ctx, signal } = call;
  const { name, reference } = call.target;
  const bytes = await readBody(call, ctx.maxManifestBytes);
  const algorithm = reference.digest ? parseDigest(reference.digest).algorithm : 'sha256';
  const digest = `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
  if (reference.digest !== undefined && reference.digest !== digest) {
    throw new RegistryError('DIGEST_INVALID', `manifest body has digest ${digest}, not ${reference.digest}`, { expected: reference.digest, actual: digest });
  }
  const contentType = call.request.headers['content-type'];
  refuseSchema1(bytes, contentType);
  const parsed = parseManifest(bytes, contentType);
  if (!KNOWN_TYPES.has(parsed.mediaType)) {
    throw new RegistryError('MANIFEST_INVALID', `unsupported manifest media type "${parsed.mediaType}"`, { mediaType: parsed.mediaType });
  }
  await checkReferences(call, name, parsed);

  // Write order: manifest bytes (a blob) → repository link → referrer link → tag.
  if ((await ctx.storeBlob(digest, bytes.length, () => Readable.from([bytes]), signal)) === 'exists') {
    // Someone stored these bytes before: they are relied on like any blob (GC protocol), and rewritten if gone.
    const gone = await ctx.freshness.ensure([{ digest, size: bytes.length }], { signal });
    if (gone.length) {
      ctx.forget(digest);
      await ctx.store.putBlob(digest, () => Readable.from([bytes]), { size: bytes.length, signal });
      ctx.freshness.noteWritten(digest);
    }
  }
  ctx.links.manifests.set(digest, bytes);
  // Pushed without a `mediaType` field under a Content-Type its shape does not imply: remembered before the link,
  // so the manifest is never served with another type.
  if (!declaredMediaType(bytes) && parsed.mediaType !== parseManifest(bytes).mediaType) await ctx.links.setManifestMediaType(name, digest, parsed.mediaType, signal);
  await ctx.store.linkManifest(name, digest, { signal });
  if (parsed.subject) {
    const artifactType = parsed.artifactType ?? (parsed.kind === 'manifest' ? parsed.config.mediaType : undefined);
    await ctx.links.addReferrer(name, parsed.subject.digest, { mediaType: parsed.mediaType, digest, size: bytes.length, ...(artifactType ? { artifactType } : {}), ...(parsed.annotations ? { annotations: parsed.annotations } : {}) }, signal);
    call.reply.header('oci-subject', parsed.subject.digest);
  }
  if (reference.tag !== undefined) await ctx.store.putTag(name, reference.tag, digest, { signal });
  call.reply.code(201).header('location', manifestPath(name, digest)).header('docker-content-digest', digest).header('content-length', '0').send();
}

export async function deleteManifest(call: Call): Promise<void> {
  if (call.target.kind !== 'manifest') return;
  const { ctx, signal } = call;
  const { name, reference } = call.target;
  if (!ctx.allowDelete) throw new RegistryError('UNSUPPORTED', 'deletes are disabled on this registry (serve.allowDelete)');
  if (reference.tag !== undefined) {
    if (!(await ctx.store.getTag(name, reference.tag, { signal }))) throw manifestUnknown(name, reference.tag);
    await ctx.store.deleteTag(name, reference.tag, { signal });
  } else {
    const digest = reference.digest;
    if (!(await ctx.store.hasManifestLink(name, digest, { signal }))) throw manifestUnknown(name, digest);
    // Reverse of the write order: tags first, so no tag ever points at an unlinked manifest.
    for (const tag of await ctx.store.listTags(name, { signal })) {
      if ((await ctx.store.getTag(name, tag, { signal })) === digest) await ctx.store.deleteTag(name, tag, { signal });
    }
    try {
      const parsed = parseManifest(await ctx.links.manifestBytes(digest, signal));
      if (parsed.subject) await ctx.links.removeReferrer(name, parsed.subject.digest, digest, signal);
    } catch (err) {
      if (!isTransshipError(err)) throw err;
    }
    await ctx.store.unlinkManifest(name, digest, { signal });
    await ctx.links.forgetManifestMediaType(name, digest, signal);
  }
  call.reply.code(202).header('content-length', '0').send();
}
