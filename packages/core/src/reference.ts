// The grammar every layer shares for naming things in a store: tag-or-digest, store locations (`dir:PATH`,
// `s3://BUCKET[/PREFIX]`, `store:`, `store@REGION:`). In core because the store layer (store/open.ts), the registry's
// URL parser and the transfer references (transfer/reference.ts, which adds the image transports on top) must all
// agree, and the layer map lets each of them import only downwards.
import { TransshipError } from './errors.js';
import { parseDigest } from './digest.js';
import { isValidRegionName, REGION_NAME_RULE, validateTag } from './names.js';

/**
 * Whether a manifest reference (what follows `:` or `@`, or a registry URL's last component) names a digest.
 * Tags cannot contain ':' (distribution grammar), digests always do (`algorithm:hex`): the colon alone decides.
 */
export function isDigestReference(ref: string): boolean {
  return ref.includes(':');
}

/** A tag or a digest, validated: TS_INVALID_DIGEST or TS_INVALID_TAG otherwise. */
export function parseTagOrDigest(ref: string): { tag: string; digest?: undefined } | { digest: string; tag?: undefined } {
  return isDigestReference(ref) ? { digest: parseDigest(ref).value } : { tag: validateTag(ref) };
}

export interface DirLocation {
  kind: 'dir';
  path: string;
}
export interface S3Location {
  kind: 's3';
  bucket: string;
  prefix: string;
}
/** `store:` / `store@REGION:`: the configured home store, or the store of a named region. */
export interface ConfiguredLocation {
  kind: 'configured';
  region?: string | undefined;
}
export type StoreLocation = DirLocation | S3Location | ConfiguredLocation;

const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const PREFIX_COMPONENT_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const LOCATION_FORMS = 'dir:PATH or s3://BUCKET[/PREFIX]';

function badStore(input: string, why: string, forms = LOCATION_FORMS): TransshipError {
  const shown = input.length > 200 ? `${input.slice(0, 200)}…` : input;
  return new TransshipError('TS_INVALID_REFERENCE', `invalid store "${shown}": ${why}; expected ${forms}`, { details: { reference: shown } });
}

/** Why `bucket` is not a bucket name (3-63 lowercase letters, digits, "." and "-"), or undefined. */
export function bucketProblem(bucket: string): string | undefined {
  return BUCKET_RE.test(bucket) && !bucket.includes('..') ? undefined : `"${bucket}" is not a valid bucket name (3-63 lowercase letters, digits, "." and "-")`;
}

/** Why `prefix` cannot be a key prefix (components of [A-Za-z0-9._-], no "." / ".." / empty ones), or undefined. */
export function prefixProblem(prefix: string): string | undefined {
  if (prefix === '') return undefined;
  for (const c of prefix.split('/')) {
    if (!PREFIX_COMPONENT_RE.test(c)) return `prefix component "${c}" is empty, "." / "..", or has characters outside [A-Za-z0-9._-]`;
  }
  return undefined;
}

/** Why `region` is not a region name, or undefined (the rule is core/names.ts's, shared with the config). */
export function regionProblem(region: string): string | undefined {
  return isValidRegionName(region) ? undefined : `"${region}" is not a region name (${REGION_NAME_RULE})`;
}

/** `dir:PATH` or `s3://BUCKET[/PREFIX]` with no repository part: what `ls`, `verify`, `serve` and the config take. */
export function parseStoreLocation(input: string): DirLocation | S3Location {
  if (input.startsWith('dir:')) {
    const path = input.slice(4);
    if (!path) throw badStore(input, 'the path is empty');
    if (path.includes('\0')) throw badStore(input, 'the path contains a NUL byte');
    return { kind: 'dir', path };
  }
  if (input.startsWith('s3://')) {
    const rest = input.slice(5).replace(/\/+$/, '');
    const slash = rest.indexOf('/');
    const bucket = slash === -1 ? rest : rest.slice(0, slash);
    const prefix = slash === -1 ? '' : rest.slice(slash + 1);
    const problem = bucketProblem(bucket) ?? prefixProblem(prefix);
    if (problem) throw badStore(input, problem);
    return { kind: 's3', bucket, prefix };
  }
  throw badStore(input, 'unknown store kind');
}

/** A store argument: a location, or `store:` / `store@REGION:` for the configured stores. */
export function parseStoreArgument(input: string): StoreLocation {
  const m = /^store(?::|@([^:]*):?)$/s.exec(input);
  if (m) {
    const region = m[1];
    if (region === undefined) return { kind: 'configured' };
    const problem = regionProblem(region);
    if (problem) throw badStore(input, problem, `store:, store@REGION:, ${LOCATION_FORMS}`);
    return { kind: 'configured', region };
  }
  return parseStoreLocation(input);
}
