// The one validator of manifests, indexes and descriptors: what the registry accepts on PUT, what every source
// (OCI layout, archives, docker://) reads, what copy, verify and placement walk. Strict enough that a malformed
// document is rejected before anything is stored or a descriptor's digest becomes a path or a URL; loose enough that
// real-world extras (annotations, artifactType, subject, unknown fields) pass through. The bytes are never
// re-serialized: digests are computed over what was sent.
//
// Media type, decided once (OCI image-spec, image-index.md and manifest.md):
// - the body's `mediaType` wins; a declared type (Content-Type, the parent descriptor) must agree with it;
// - a body without `mediaType` takes the declared type when there is one and its shape fits it (a client that
//   pushed it with a Docker Content-Type gets it back with that type: issue 20 item 6); without a declaration it is
//   OCI: an index when it has `manifests`, a manifest otherwise (OCI makes the field optional). A declared type whose
//   shape does not fit (a Docker manifest declared for a body with `manifests`) is refused, never guessed.
import { z } from 'zod';
import { TransshipError, type ErrorCode } from '@transship/core/errors';
import { parseDigest } from '@transship/core/digest';
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, MediaTypes, type Descriptor } from './types.js';

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

const DOCKER_TYPES: readonly string[] = [MediaTypes.dockerManifest, MediaTypes.dockerManifestList];

const descriptorSchema = z.object({
  mediaType: z.string().min(1).max(255),
  digest: z.string().refine((d) => {
    try {
      parseDigest(d);
      return true;
    } catch {
      return false;
    }
  }, 'not a valid digest'),
  // zod's int() is a safe integer: stream bounds computed from sizes stay exact.
  size: z.number().int().nonnegative(),
  annotations: z.record(z.string(), z.string()).optional(),
  platform: z.record(z.string(), z.unknown()).optional(),
  artifactType: z.string().optional(),
});

const manifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  config: descriptorSchema,
  layers: z.array(descriptorSchema),
  subject: descriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});

const indexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  manifests: z.array(descriptorSchema),
  subject: descriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});

export type ParsedManifest =
  | { kind: 'manifest'; mediaType: string; config: Descriptor; layers: Descriptor[]; subject?: Descriptor | undefined; artifactType?: string | undefined; annotations?: Record<string, string> | undefined }
  | { kind: 'index'; mediaType: string; manifests: Descriptor[]; subject?: Descriptor | undefined; artifactType?: string | undefined; annotations?: Record<string, string> | undefined };

/** JSON from an untrusted source; `code` is what malformed JSON is reported as (layout, archive, manifest). */
export function parseJson(bytes: Buffer | string, what: string, code: ErrorCode): unknown {
  try {
    return JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8')) as unknown;
  } catch (err) {
    throw new TransshipError(code, `${what} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The media type a manifest document has and whether it is an index (see the header). */
export function manifestMediaType(doc: Record<string, unknown>, declaredMediaType?: string, what = 'manifest'): { mediaType: string; index: boolean } {
  const body = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  const declared = declaredMediaType?.split(';')[0]?.trim() || undefined;
  if (body && declared && body !== declared) {
    throw new TransshipError('TS_MANIFEST_INVALID', `${what}: media type mismatch: declared "${declared}", body says "${body}"`, { details: { declared, body } });
  }
  const hasManifests = Array.isArray(doc.manifests);
  if (!body && declared && DOCKER_TYPES.includes(declared) && (declared === MediaTypes.dockerManifestList) !== hasManifests) {
    throw new TransshipError('TS_MANIFEST_INVALID', `${what}: declared "${declared}" but the body (no mediaType) is ${hasManifests ? 'an index' : 'a manifest'}`, { details: { declared } });
  }
  const mediaType = body ?? declared ?? (hasManifests ? MediaTypes.ociIndex : MediaTypes.ociManifest);
  const index = INDEX_MEDIA_TYPES.includes(mediaType) || (!MANIFEST_MEDIA_TYPES.includes(mediaType) && hasManifests);
  return { mediaType, index };
}

/**
 * Parses manifest bytes. `declaredMediaType` is what the transport said (Content-Type, descriptor); when both it
 * and the body's `mediaType` are present they must agree. `what` names the document in error messages.
 */
export function parseManifest(bytes: Buffer | string, declaredMediaType?: string, what = 'manifest'): ParsedManifest {
  const json = parseJson(bytes, what, 'TS_MANIFEST_INVALID');
  if (!isRecord(json)) throw new TransshipError('TS_MANIFEST_INVALID', `${what} must be a JSON object`);
  const { mediaType, index } = manifestMediaType(json, declaredMediaType, what);
  if (index) {
    const r = indexSchema.safeParse(json);
    if (!r.success) throw invalid(what, 'index', r.error, 'TS_MANIFEST_INVALID');
    return { kind: 'index', mediaType, manifests: r.data.manifests.map(normalise), subject: r.data.subject && normalise(r.data.subject), artifactType: r.data.artifactType, annotations: r.data.annotations };
  }
  const r = manifestSchema.safeParse(json);
  if (!r.success) throw invalid(what, 'manifest', r.error, 'TS_MANIFEST_INVALID');
  return { kind: 'manifest', mediaType, config: normalise(r.data.config), layers: r.data.layers.map(normalise), subject: r.data.subject && normalise(r.data.subject), artifactType: r.data.artifactType, annotations: r.data.annotations };
}

/** The `manifests` of an OCI layout's index.json (same schema as an image index; errors carry `code`). */
export function indexManifests(doc: unknown, what: string, code: ErrorCode): Descriptor[] {
  if (!isRecord(doc)) throw new TransshipError(code, `${what} must be a JSON object`);
  const r = indexSchema.safeParse(doc);
  if (!r.success) throw invalid(what, 'index', r.error, code);
  return r.data.manifests.map(normalise);
}

function normalise(d: z.infer<typeof descriptorSchema>): Descriptor {
  return { ...d, digest: parseDigest(d.digest).value };
}

function invalid(what: string, kind: string, error: z.ZodError, code: ErrorCode): TransshipError {
  const first = error.issues[0];
  const where = first?.path.length ? first.path.join('.') : '(root)';
  return new TransshipError(code, `${what}: malformed ${kind}: ${where}: ${first?.message ?? 'invalid'}`, { details: { path: where } });
}

/** Every descriptor a manifest references that must exist before it (blobs for a manifest, manifests for an index). */
export function references(m: ParsedManifest): Descriptor[] {
  return m.kind === 'index' ? m.manifests : [m.config, ...m.layers];
}
