// The store layout, shared by every backend (a bucket prefix and a directory look the same):
//   blobs/sha256/<hex>                    the blob (manifests and indexes are blobs too)
//   repos/<name>/tags/<tag>               body = manifest digest; written last
//   repos/<name>/manifests/sha256/<hex>   the manifest belongs to the repository
//   uploads/<uuid>                        S3 only: a registry upload staged while it arrives (removed on commit)
// Every component is validated here, so no caller can build a key from an unchecked string.
import { createHash } from 'node:crypto';
import { parseDigest } from '@transship/core/digest';
import { TransshipError } from '@transship/core/errors';
import { validateRepoName, validateTag } from '@transship/core/names';

export function blobKey(digest: string): string {
  const d = parseDigest(digest);
  return `blobs/${d.algorithm}/${d.hex}`;
}

/** Where staged (not yet verified) uploads live; never read as blobs. */
export const STAGING_PREFIX = 'uploads/';

export function stagingKey(id: string): string {
  if (!/^[0-9a-f-]{36}$/.test(id)) throw new TransshipError('TS_INTERNAL', `invalid staging id "${id.slice(0, 40)}"`);
  return `${STAGING_PREFIX}${id}`;
}

export function tagKey(repo: string, tag: string): string {
  return `repos/${validateRepoName(repo)}/tags/${validateTag(tag)}`;
}

export function tagsPrefix(repo: string): string {
  return `repos/${validateRepoName(repo)}/tags/`;
}

export function manifestLinkKey(repo: string, digest: string): string {
  const d = parseDigest(digest);
  return `repos/${validateRepoName(repo)}/manifests/${d.algorithm}/${d.hex}`;
}

export function manifestLinksPrefix(repo: string): string {
  return `repos/${validateRepoName(repo)}/manifests/`;
}

export function repoPrefix(repo: string): string {
  return `repos/${validateRepoName(repo)}/`;
}

/** `blobs/sha256/<hex>` → `sha256:<hex>`, or undefined for keys that are not blobs (temp files, junk). */
export function digestFromBlobKey(key: string): string | undefined {
  const m = /^blobs\/(sha256|sha512)\/([a-f0-9]+)$/.exec(key);
  if (!m) return undefined;
  const digest = `${m[1]}:${m[2]}`;
  try {
    return parseDigest(digest).value;
  } catch {
    return undefined;
  }
}

/** `manifests/sha256/<hex>` relative to the links prefix → digest. */
export function digestFromLinkSuffix(suffix: string): string | undefined {
  return digestFromBlobKey(`blobs/${suffix.replace(/^\/+/, '')}`);
}

/**
 * A tag's fingerprint as stores report it in repoState(): the digest itself (fs) or `md5:<hex>` of the tag body
 * (S3 ETag of a single-PUT object). Lets a re-push recognise an up-to-date tag without reading it.
 */
export function tagMatches(stateValue: string | undefined, digest: string): boolean {
  if (stateValue === undefined) return false;
  const d = parseDigest(digest).value;
  return stateValue === d || stateValue === `md5:${createHash('md5').update(d).digest('hex')}`;
}

/** Registry meta keys live under `repos/`, in the layout's own grammar; nothing else may be named. */
export function checkMetaKey(key: string, prefix = false): string {
  const body = prefix ? key.replace(/\/$/, '') : key;
  if (prefix && body === 'repos') return key;
  if (!body.startsWith('repos/') || body.split('/').some((c) => c === '' || c === '.' || c === '..') || !/^[a-z0-9._/-]+$/.test(body)) {
    throw new TransshipError('TS_INVALID_NAME', `invalid registry key "${key.slice(0, 200)}"`);
  }
  return key;
}
