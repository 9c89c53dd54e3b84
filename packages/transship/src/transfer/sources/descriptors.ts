// Validation of the JSON documents sources read (index.json, manifests, descriptors). Everything read from a
// layout, an archive or a registry is untrusted: a descriptor's digest becomes a path or a URL, so it is parsed
// strictly before use, and sizes must be safe integers so stream bounds are exact.
import { parseDigest } from '@transship/core/digest';
import { isTransshipError, TransshipError, type ErrorCode } from '@transship/core/errors';
import { INDEX_MEDIA_TYPES, MediaTypes, type Descriptor } from '../types.js';

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

export function parseJson(bytes: Buffer, what: string, code: ErrorCode): unknown {
  try {
    return JSON.parse(bytes.toString('utf8')) as unknown;
  } catch (err) {
    throw new TransshipError(code, `${what} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates one descriptor object; `code` is what a malformed one is reported as. */
export function toDescriptor(v: unknown, what: string, code: ErrorCode): Descriptor {
  if (!isRecord(v)) throw new TransshipError(code, `${what}: a descriptor must be an object`);
  const { mediaType, digest, size, annotations, platform, artifactType } = v;
  if (typeof mediaType !== 'string' || mediaType.length === 0 || mediaType.length > 255) {
    throw new TransshipError(code, `${what}: descriptor has no valid mediaType`);
  }
  if (typeof digest !== 'string') throw new TransshipError(code, `${what}: descriptor has no digest`);
  let canonical: string;
  try {
    canonical = parseDigest(digest).value;
  } catch (err) {
    throw new TransshipError(code, `${what}: ${isTransshipError(err) ? err.message : String(err)}`, { cause: err, details: { digest: digest.slice(0, 140) } });
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new TransshipError(code, `${what}: descriptor ${canonical} has no valid size`, { details: { digest: canonical } });
  }
  const desc: Descriptor = { mediaType, digest: canonical, size };
  if (annotations !== undefined) {
    if (!isRecord(annotations) || !Object.values(annotations).every((x) => typeof x === 'string')) {
      throw new TransshipError(code, `${what}: annotations of ${canonical} must map strings to strings`);
    }
    desc.annotations = annotations as Record<string, string>;
  }
  if (platform !== undefined) {
    if (!isRecord(platform)) throw new TransshipError(code, `${what}: platform of ${canonical} must be an object`);
    desc.platform = platform;
  }
  if (typeof artifactType === 'string') desc.artifactType = artifactType;
  return desc;
}

/** The `manifests` array of an index (index.json or an image index blob). */
export function indexManifests(doc: unknown, what: string, code: ErrorCode): Descriptor[] {
  if (!isRecord(doc)) throw new TransshipError(code, `${what} must be a JSON object`);
  if (doc.schemaVersion !== 2) throw new TransshipError(code, `${what} has schemaVersion ${JSON.stringify(doc.schemaVersion)}; expected 2`);
  if (!Array.isArray(doc.manifests)) throw new TransshipError(code, `${what} has no "manifests" array`);
  return doc.manifests.map((m, i) => toDescriptor(m, `${what} manifests[${i}]`, code));
}

/**
 * Checks a fetched manifest or index document and returns the media type it declares (or `fallback`).
 * The engine walks the graph; this only makes sure what a source returns is the kind of document it claims.
 */
export function checkManifestDocument(bytes: Buffer, what: string, fallback: string): string {
  const doc = parseJson(bytes, what, 'TS_MANIFEST_INVALID');
  if (!isRecord(doc)) throw new TransshipError('TS_MANIFEST_INVALID', `${what} must be a JSON object`);
  const declared = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  const mediaType = declared ?? (Array.isArray(doc.manifests) ? MediaTypes.ociIndex : fallback);
  if (INDEX_MEDIA_TYPES.includes(mediaType) || Array.isArray(doc.manifests)) {
    indexManifests(doc, what, 'TS_MANIFEST_INVALID');
  } else {
    if (doc.schemaVersion !== 2) throw new TransshipError('TS_MANIFEST_INVALID', `${what} has schemaVersion ${JSON.stringify(doc.schemaVersion)}; expected 2`);
    toDescriptor(doc.config, `${what} config`, 'TS_MANIFEST_INVALID');
    if (!Array.isArray(doc.layers)) throw new TransshipError('TS_MANIFEST_INVALID', `${what} has no "layers" array`);
    doc.layers.forEach((l, i) => toDescriptor(l, `${what} layers[${i}]`, 'TS_MANIFEST_INVALID'));
  }
  return mediaType;
}
