// The store layout, shared by every backend (a bucket prefix and a directory look the same):
//   blobs/sha256/<hex>                    the blob (manifests and indexes are blobs too)
//   repos/<name>/tags/<tag>               body = manifest digest; written last
//   repos/<name>/manifests/sha256/<hex>   the manifest belongs to the repository
//   uploads/<uuid>                        S3 only: a registry upload staged while it arrives (removed on commit)
// Every component is validated here, so no caller can build a key from an unchecked string.
import { createHash } from 'node:crypto';
import { parseDigest } from '../core/digest.js';
import { TransshipError } from '../core/errors.js';
import { validateRepoName, validateTag } from '../core/names.js';

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

// Garbage collection's own keys (docs/gc.md), under the reserved `_gc/` component no repository can collide with.
/** `_gc/`: the lease, touch markers and pass reports. */
export const GC_PREFIX = '_gc/';
export const GC_LEASE_PREFIX = `${GC_PREFIX}lease/`;
export const GC_TOUCH_PREFIX = `${GC_PREFIX}touch/`;
export const GC_REPORT_PREFIX = `${GC_PREFIX}passes/`;

/** `_gc/lease/<epoch>`, zero-padded so a listing is in epoch order. */
export function gcLeaseKey(epoch: number): string {
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new TransshipError('TS_INTERNAL', `invalid lease epoch ${epoch}`);
  return `${GC_LEASE_PREFIX}${String(epoch).padStart(16, '0')}`;
}

export function gcLeaseEpoch(key: string): number | undefined {
  const m = /^_gc\/lease\/(\d{16})$/.exec(key);
  return m ? Number(m[1]) : undefined;
}

/** `_gc/touch/<alg>/<hex>/<ms>`: a writer relied on the blob at <ms> (body empty; never overwritten). */
export function gcTouchKey(digest: string, at: number): string {
  const d = parseDigest(digest);
  return `${GC_TOUCH_PREFIX}${d.algorithm}/${d.hex}/${String(Math.max(0, Math.floor(at))).padStart(15, '0')}`;
}

export function gcTouchPrefix(digest: string): string {
  const d = parseDigest(digest);
  return `${GC_TOUCH_PREFIX}${d.algorithm}/${d.hex}/`;
}

/** A touch marker's digest, or undefined for any other key. */
export function digestFromTouchKey(key: string): string | undefined {
  const m = /^_gc\/touch\/(sha256|sha512)\/([a-f0-9]{64,128})\/\d{15}$/.exec(key);
  return m ? digestFromBlobKey(`blobs/${m[1]}/${m[2]}`) : undefined;
}

/** `_gc/passes/<ms>`: a pass's report (what it removed), for audit. */
export function gcReportKey(at: number): string {
  return `${GC_REPORT_PREFIX}${String(Math.max(0, Math.floor(at))).padStart(15, '0')}.json`;
}
