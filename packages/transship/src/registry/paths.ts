// URL → registry operation. Repository names contain slashes (`a/b/c`), so fastify path params cannot split them;
// the path is matched from its end, where the resource keywords are, and the name is whatever precedes them.
// Every part is validated (names.ts, digest.ts) before it reaches a store key.
import { validateRepoName, validateTag } from '@transship/core/names';
import { parseDigest } from '@transship/core/digest';
import { isDigestReference } from '@transship/core/reference';
import { RegistryError } from './errors.js';

export type Target =
  | { kind: 'base' }
  | { kind: 'catalog' }
  | { kind: 'tags'; name: string }
  | { kind: 'manifest'; name: string; reference: Reference }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'uploads'; name: string }
  | { kind: 'upload'; name: string; id: string }
  | { kind: 'referrers'; name: string; digest: string };

export type Reference = { tag: string; digest?: undefined } | { digest: string; tag?: undefined };

const PATTERNS: Array<[RegExp, (name: string, rest: string, method: string) => Target]> = [
  [/^\/v2\/(.+)\/blobs\/uploads\/?$/, (name) => ({ kind: 'uploads', name })],
  [/^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, (name, id) => ({ kind: 'upload', name, id })],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, (name, d) => ({ kind: 'blob', name, digest: digestParam(d) })],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, (name, ref, method) => ({ kind: 'manifest', name, reference: parseReference(name, ref, method) })],
  [/^\/v2\/(.+)\/tags\/list\/?$/, (name) => ({ kind: 'tags', name })],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, (name, d) => ({ kind: 'referrers', name, digest: digestParam(d) })],
];

/**
 * Parses the path part of a request URL (no query) of a `method` request. Returns undefined for paths that are not
 * registry API paths.
 */
export function parseTarget(path: string, method = 'GET'): Target | undefined {
  if (path === '/v2' || path === '/v2/') return { kind: 'base' };
  if (path === '/v2/_catalog') return { kind: 'catalog' };
  for (const [re, make] of PATTERNS) {
    const m = re.exec(path);
    if (!m) continue;
    const name = decode(m[1] ?? '');
    // The name is checked before anything else so `../`, uppercase and overlong names all answer NAME_INVALID.
    try {
      validateRepoName(name);
    } catch (err) {
      throw new RegistryError('NAME_INVALID', (err as Error).message, { name: name.slice(0, 300) });
    }
    return make(name, decode(m[2] ?? ''), method);
  }
  return undefined;
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function digestParam(d: string): string {
  try {
    return parseDigest(d).value;
  } catch (err) {
    throw new RegistryError('DIGEST_INVALID', (err as Error).message, { digest: d.slice(0, 200) });
  }
}

/**
 * A manifest reference. A tag that is not valid can name nothing: reading or deleting it is 404 MANIFEST_UNKNOWN
 * (what the spec says of a manifest that is not there, and what conformance tests expect); only a PUT under it is
 * an invalid request (400 MANIFEST_INVALID).
 */
function parseReference(name: string, ref: string, method: string): Reference {
  if (isDigestReference(ref)) return { digest: digestParam(ref) };
  try {
    return { tag: validateTag(ref) };
  } catch (err) {
    if (method !== 'PUT') throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${ref.slice(0, 200)} is unknown to repository ${name}`, { name, reference: ref.slice(0, 200) });
    throw new RegistryError('MANIFEST_INVALID', (err as Error).message, { tag: ref.slice(0, 200) });
  }
}

/** The canonical URL path of a resource, for Location headers. */
export function blobPath(name: string, digest: string): string {
  return `/v2/${name}/blobs/${digest}`;
}

export function manifestPath(name: string, reference: string): string {
  return `/v2/${name}/manifests/${reference}`;
}

/** An upload session's URL; `state` is a shared session's token (base64url and `.`, nothing to escape). */
export function uploadPath(name: string, id: string, state?: string): string {
  return `/v2/${name}/blobs/uploads/${id}${state ? `?_state=${state}` : ''}`;
}

/** The actions a request needs on its repository (for auth). */
export function requiredAction(target: Target, method: string): 'pull' | 'push' | 'delete' | undefined {
  if (target.kind === 'base' || target.kind === 'catalog') return undefined;
  if (method === 'DELETE' && (target.kind === 'manifest' || target.kind === 'blob')) return 'delete';
  if (target.kind === 'uploads' || target.kind === 'upload') return 'push';
  if (method === 'PUT' || method === 'POST' || method === 'PATCH' || method === 'DELETE') return 'push';
  return 'pull';
}
