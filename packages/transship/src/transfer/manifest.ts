// Parsing manifests and indexes strictly enough that a malformed one is rejected before anything is stored, and
// loosely enough that real-world extras (annotations, artifactType, subject, unknown fields) pass through. The bytes
// are never re-serialized: digests are computed over what the client sent.
import { z } from 'zod';
import { TransshipError } from '@transship/core/errors';
import { parseDigest } from '@transship/core/digest';
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, type Descriptor } from './types.js';

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

/**
 * Parses manifest bytes. `declaredMediaType` is what the transport said (Content-Type, descriptor); when both it
 * and the body's `mediaType` are present they must agree.
 */
export function parseManifest(bytes: Buffer | string, declaredMediaType?: string): ParsedManifest {
  let json: unknown;
  try {
    json = JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8'));
  } catch (err) {
    throw new TransshipError('TS_MANIFEST_INVALID', `manifest is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new TransshipError('TS_MANIFEST_INVALID', 'manifest must be a JSON object');
  const obj = json as Record<string, unknown>;
  const bodyType = typeof obj.mediaType === 'string' ? obj.mediaType : undefined;
  const declared = declaredMediaType?.split(';')[0]?.trim() || undefined;
  if (bodyType && declared && bodyType !== declared) {
    throw new TransshipError('TS_MANIFEST_INVALID', `manifest media type mismatch: declared "${declared}", body says "${bodyType}"`, { details: { declared, body: bodyType } });
  }
  const mediaType = bodyType ?? declared ?? (Array.isArray(obj.manifests) ? INDEX_MEDIA_TYPES[1] : MANIFEST_MEDIA_TYPES[0]);
  const isIndex = Array.isArray(obj.manifests) || (mediaType !== undefined && INDEX_MEDIA_TYPES.includes(mediaType));
  if (isIndex) {
    const r = indexSchema.safeParse(json);
    if (!r.success) throw invalid('index', r.error);
    return { kind: 'index', mediaType: mediaType ?? INDEX_MEDIA_TYPES[0]!, manifests: r.data.manifests.map(normalise), subject: r.data.subject && normalise(r.data.subject), artifactType: r.data.artifactType, annotations: r.data.annotations };
  }
  const r = manifestSchema.safeParse(json);
  if (!r.success) throw invalid('manifest', r.error);
  return { kind: 'manifest', mediaType: mediaType ?? MANIFEST_MEDIA_TYPES[0]!, config: normalise(r.data.config), layers: r.data.layers.map(normalise), subject: r.data.subject && normalise(r.data.subject), artifactType: r.data.artifactType, annotations: r.data.annotations };
}

function normalise(d: z.infer<typeof descriptorSchema>): Descriptor {
  return { ...d, digest: parseDigest(d.digest).value };
}

function invalid(what: string, error: z.ZodError): TransshipError {
  const first = error.issues[0];
  const where = first?.path.length ? first.path.join('.') : '(root)';
  return new TransshipError('TS_MANIFEST_INVALID', `malformed ${what}: ${where}: ${first?.message ?? 'invalid'}`, { details: { path: where } });
}

/** Every descriptor a manifest references that must exist before it (blobs for a manifest, manifests for an index). */
export function references(m: ParsedManifest): Descriptor[] {
  return m.kind === 'index' ? m.manifests : [m.config, ...m.layers];
}
