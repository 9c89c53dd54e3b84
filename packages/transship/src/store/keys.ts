// The store layout, shared by every backend (a bucket prefix and a directory look the same):
//   blobs/<alg>/<hex>                                        the blob (manifests and indexes are blobs too)
//   repos/<name>/_tags/<tag>                                 body = manifest digest; written last
//   repos/<name>/_manifests/<alg>/<hex>                      the manifest belongs to the repository
//   repos/<name>/_layers/<alg>/<hex>                         the repository may read this blob (registry blob link)
//   repos/<name>/_referrers/<alg>/<subject-hex>/<alg>/<hex>  a referrer of <subject-hex> (body: its descriptor)
//   _placement/…                                             placement's markers (promoted.ts's shapes, built here)
//   _uploads/<uuid>                                          S3 only: a registry upload staged while it arrives
//   _uploads/<uuid>.tail                                     S3 only: its bytes not yet in a part (shared sessions)
//   _keys/upload-state                                       the secret signing upload-session tokens (generated)
//   _gc/…                                                    reserved for garbage collection (candidates, lease)
//   _layout                                                  written by `transship migrate`: no old-layout keys left
//   claims/<alg>/<hex>                                       S3 only: a large blob's short write lease
// Why the underscores: the OCI name grammar never lets a path component start with `_`, so a component of the
// layout's own can never be part of a repository name. The old layout (`repos/<name>/tags/…`, `…/manifests/…`,
// `…/blobs/…`, `…/referrers/…`, `repos/_placement/…`, `uploads/…`) used words a name may contain: pushing
// `team/tags/app` made listings see a repository `team` with a tag `app`. Old keys are still read for one release
// (repository.ts, on a miss) and rewritten by `transship migrate` (src/cli/migrate.ts) with legacyToCurrent().
//
// This is the only file that builds or parses a key: every component is validated here, so no caller can build a
// key from an unchecked string, and every parser answers undefined for a key that is not of the shape it names.
import { createHash } from 'node:crypto';
import { parseDigest } from '@transship/core/digest';
import { TransshipError } from '@transship/core/errors';
import { validateRepoName, validateTag } from '@transship/core/names';
import { isValidRepoName } from '@transship/core/names';

export const BLOBS_PREFIX = 'blobs/';
export const REPOS_PREFIX = 'repos/';
/** Where staged (not yet verified) uploads live; never read as blobs. */
export const STAGING_PREFIX = '_uploads/';
export const PLACEMENT_PREFIX = '_placement/';
/** Reserved for garbage collection (candidate records and the lease); nothing else writes here. */
export const GC_PREFIX = '_gc/';
export const CLAIMS_PREFIX = 'claims/';
/** Written last by `transship migrate`; its presence means readers need not look for old-layout keys. */
export const LAYOUT_KEY = '_layout';
export const LAYOUT_VERSION = 2;

/** Prefixes of the old layout, read for one release and rewritten by `transship migrate`. */
export const LEGACY_STAGING_PREFIX = 'uploads/';
export const LEGACY_PLACEMENT_PREFIX = 'repos/_placement/';

const ALG = '(sha256|sha512)';
const HEX = '([a-f0-9]{64,128})';

// --- blobs and claims ---

export function blobKey(digest: string): string {
  const d = parseDigest(digest);
  return `${BLOBS_PREFIX}${d.algorithm}/${d.hex}`;
}

/** `blobs/sha256/<hex>` → `sha256:<hex>`, or undefined for keys that are not blobs (temp files, junk). */
export function digestFromBlobKey(key: string): string | undefined {
  const m = /^blobs\/(sha256|sha512)\/([a-f0-9]+)$/.exec(key);
  return m ? digestOf(m[1], m[2]) : undefined;
}

export function claimKey(digest: string): string {
  const d = parseDigest(digest);
  return `${CLAIMS_PREFIX}${d.algorithm}/${d.hex}`;
}

export function stagingKey(id: string): string {
  if (!/^[0-9a-f-]{36}$/.test(id)) throw new TransshipError('TS_INTERNAL', `invalid staging id "${id.slice(0, 40)}"`);
  return `${STAGING_PREFIX}${id}`;
}

/** `_uploads/<uuid>.tail`: the bytes of a shared upload session not yet in a part (StagedTails). */
export function stagingTailKey(id: string): string {
  return `${stagingKey(id)}.tail`;
}

/** The secret that signs upload-session state tokens, when none is configured (registry/upload-state.ts). */
export const UPLOAD_STATE_SECRET_KEY = '_keys/upload-state';

// --- repositories ---

/** The four kinds of key under `repos/<name>/`, by their component in the current layout. */
export const REPO_DIRS = { tag: '_tags', manifest: '_manifests', layer: '_layers', referrer: '_referrers' } as const;
const LEGACY_DIRS = { tag: 'tags', manifest: 'manifests', layer: 'blobs', referrer: 'referrers' } as const;

export type RepoKey =
  | { kind: 'tag'; repo: string; tag: string }
  | { kind: 'manifest'; repo: string; digest: string }
  /** A registry blob link: the repository may read `digest`. */
  | { kind: 'layer'; repo: string; digest: string }
  | { kind: 'referrer'; repo: string; subject: string; digest: string };

export function repoPrefix(repo: string): string {
  return `${REPOS_PREFIX}${validateRepoName(repo)}/`;
}

export function tagsPrefix(repo: string): string {
  return `${repoPrefix(repo)}${REPO_DIRS.tag}/`;
}

export function tagKey(repo: string, tag: string): string {
  return `${tagsPrefix(repo)}${validateTag(tag)}`;
}

export function manifestLinksPrefix(repo: string): string {
  return `${repoPrefix(repo)}${REPO_DIRS.manifest}/`;
}

export function manifestLinkKey(repo: string, digest: string): string {
  return `${manifestLinksPrefix(repo)}${digestPath(digest)}`;
}

export function layerLinksPrefix(repo: string): string {
  return `${repoPrefix(repo)}${REPO_DIRS.layer}/`;
}

/** The registry's blob link: `digest` was uploaded to or mounted into `repo` (what auth's cross-repo rules read). */
export function layerLinkKey(repo: string, digest: string): string {
  return `${layerLinksPrefix(repo)}${digestPath(digest)}`;
}

/**
 * A blob link deleted through the registry API (DELETE …/blobs/<digest>): a marker so the link is not healed back
 * from a manifest that still references the blob.
 */
export function unlinkedKey(repo: string, digest: string): string {
  return `${repoPrefix(repo)}_unlinked/${digestPath(digest)}`;
}

/** The Content-Type a manifest without a `mediaType` field was pushed with (it is served back with it). */
export function manifestMediaTypeKey(repo: string, digest: string): string {
  return `${repoPrefix(repo)}_mediatypes/${digestPath(digest)}`;
}

/**
 * `repos/<name>/_pulled/<alg>/<hex>`: manifest `digest` was served to a GET in `repo` (registry/pulls.ts); its
 * modification time is the pull, written at most once per stamp period per instance. Retention's `pulledWithin`
 * reads it (gc/mark.ts); GC removes it once the manifest is no root of the repository any more.
 */
export function pulledKey(repo: string, digest: string): string {
  return `${pulledPrefix(repo)}${digestPath(digest)}`;
}

export function pulledPrefix(repo: string): string {
  return `${repoPrefix(repo)}_pulled/`;
}

const PULLED_KEY = new RegExp(`^repos/(.+)/_pulled/${ALG}/${HEX}$`);

/** A pull marker's repository and manifest digest, or undefined for any other key. */
export function parsePulledKey(key: string): { repo: string; digest: string } | undefined {
  const m = PULLED_KEY.exec(key);
  if (!m || !isValidRepoName(m[1] as string)) return undefined;
  const digest = digestOf(m[2], m[3]);
  return digest ? { repo: m[1] as string, digest } : undefined;
}

/** Every referrer link of `repo` (all subjects). */
export function referrersRootPrefix(repo: string): string {
  return `${repoPrefix(repo)}${REPO_DIRS.referrer}/`;
}

export function referrersPrefix(repo: string, subject: string): string {
  return `${referrersRootPrefix(repo)}${digestPath(subject)}/`;
}

export function referrerKey(repo: string, subject: string, referrer: string): string {
  return `${referrersPrefix(repo, subject)}${digestPath(referrer)}`;
}

/** The key of a parsed repository key, in the current layout. */
export function repoKeyString(k: RepoKey): string {
  switch (k.kind) {
    case 'tag':
      return tagKey(k.repo, k.tag);
    case 'manifest':
      return manifestLinkKey(k.repo, k.digest);
    case 'layer':
      return layerLinkKey(k.repo, k.digest);
    case 'referrer':
      return referrerKey(k.repo, k.subject, k.digest);
  }
}

const CURRENT_SHAPES = repoShapes(REPO_DIRS);
const LEGACY_SHAPES = repoShapes(LEGACY_DIRS);

/**
 * A key of the current layout under `repos/` → what it says, or undefined. The layout's `_` component ends the
 * name, so the parse is exact whatever the name contains.
 */
export function parseRepoKey(key: string): RepoKey | undefined {
  return parseWith(CURRENT_SHAPES, key);
}

/**
 * A key of the old layout → what it says, or undefined. Parsed from the end: the four old shapes differ in their
 * last components (a tag has no `/`, a digest path is `<alg>/<hex>`), so a name like `team/tags/app` is recovered
 * exactly even though old listings misread it.
 */
export function parseLegacyRepoKey(key: string): RepoKey | undefined {
  return parseWith(LEGACY_SHAPES, key);
}

/** A key of the old layout in the same place of the old tree (for reads that fall back, and for tests). */
export function legacyRepoKeyString(k: RepoKey): string {
  const base = `${REPOS_PREFIX}${validateRepoName(k.repo)}/`;
  switch (k.kind) {
    case 'tag':
      return `${base}${LEGACY_DIRS.tag}/${validateTag(k.tag)}`;
    case 'manifest':
      return `${base}${LEGACY_DIRS.manifest}/${digestPath(k.digest)}`;
    case 'layer':
      return `${base}${LEGACY_DIRS.layer}/${digestPath(k.digest)}`;
    case 'referrer':
      return `${base}${LEGACY_DIRS.referrer}/${digestPath(k.subject)}/${digestPath(k.digest)}`;
  }
}

/**
 * Where an old-layout key moves (`transship migrate`), or undefined for a key that is not of the old layout
 * (current keys, blobs, claims, junk). Staged uploads under `uploads/` do not move: they are in-flight state that
 * sweepStaged() removes once old.
 */
export function legacyToCurrent(key: string): string | undefined {
  if (key.startsWith(LEGACY_PLACEMENT_PREFIX)) {
    const moved = PLACEMENT_PREFIX + key.slice(LEGACY_PLACEMENT_PREFIX.length);
    return parsePlacementKey(moved) ? moved : undefined;
  }
  if (!key.startsWith(REPOS_PREFIX) || parseRepoKey(key)) return undefined;
  const k = parseLegacyRepoKey(key);
  return k ? repoKeyString(k) : undefined;
}

/** The old-layout key a current key used to be, or undefined when it has no old twin. */
export function currentToLegacy(key: string): string | undefined {
  if (key.startsWith(PLACEMENT_PREFIX)) return LEGACY_PLACEMENT_PREFIX + key.slice(PLACEMENT_PREFIX.length);
  const k = parseRepoKey(key);
  return k ? legacyRepoKeyString(k) : undefined;
}

/**
 * The old-layout prefix holding what `prefix` holds now, or undefined when the old layout had nothing there. For
 * `repos/` and `repos/<name>/` it is the same prefix: one listing sees both layouts.
 */
export function legacyPrefixOf(prefix: string): string | undefined {
  if (prefix.startsWith(PLACEMENT_PREFIX)) return LEGACY_PLACEMENT_PREFIX + prefix.slice(PLACEMENT_PREFIX.length);
  if (!prefix.startsWith(REPOS_PREFIX)) return undefined;
  const m = /^(repos\/(?:[^_/][^/]*\/)*)_(tags|manifests|layers|referrers)\/(.*)$/.exec(prefix);
  if (!m) return prefix;
  const kind = (Object.keys(REPO_DIRS) as Array<keyof typeof REPO_DIRS>).find((k) => REPO_DIRS[k] === `_${m[2]}`) as keyof typeof REPO_DIRS;
  return `${m[1]}${LEGACY_DIRS[kind]}/${m[3]}`;
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

// --- placement (src/placement/promoted.ts explains the markers) ---

export const PROMOTED_PREFIX = `${PLACEMENT_PREFIX}promoted/`;
export const EVICTIONS_PREFIX = `${PLACEMENT_PREFIX}evictions/`;

export function promotedPrefix(digest: string): string {
  return `${PROMOTED_PREFIX}${digestPath(digest)}/`;
}

/** A read of promoted copy `digest` in the stamp period starting at `at` (ms). */
export function promotedReadKey(digest: string, at: number): string {
  return `${promotedPrefix(digest)}read/${Math.max(0, Math.floor(at))}`;
}

export function evictionRecordKey(at: number): string {
  return `${EVICTIONS_PREFIX}${Math.max(0, Math.floor(at))}`;
}

export type PlacementKey = { kind: 'read'; digest: string; at: number } | { kind: 'eviction'; at: number };

const READ_KEY = new RegExp(`^_placement/promoted/${ALG}/${HEX}/read/(\\d{1,16})$`);
const RECORD_KEY = /^_placement\/evictions\/(\d{1,16})$/;

export function parsePlacementKey(key: string): PlacementKey | undefined {
  const r = READ_KEY.exec(key);
  if (r) {
    const digest = digestOf(r[1], r[2]);
    return digest ? { kind: 'read', digest, at: Number(r[3]) } : undefined;
  }
  const e = RECORD_KEY.exec(key);
  return e ? { kind: 'eviction', at: Number(e[1]) } : undefined;
}

// --- small keys through the store's meta operations ---

/** Where the meta operations may read and write: the repository links, placement's markers and GC's records. */
const META_ROOTS = [REPOS_PREFIX, PLACEMENT_PREFIX, GC_PREFIX];

/** Meta keys live under the roots above, in the layout's own grammar; nothing else may be named. */
export function checkMetaKey(key: string, prefix = false): string {
  const body = prefix ? key.replace(/\/$/, '') : key;
  const rooted = META_ROOTS.some((r) => body.startsWith(r) || (prefix && body === r.slice(0, -1)));
  if (!rooted || body.split('/').some((c) => c === '' || c === '.' || c === '..') || !/^[a-z0-9._/-]+$/.test(body)) {
    throw new TransshipError('TS_INVALID_NAME', `invalid registry key "${key.slice(0, 200)}"`);
  }
  return key;
}

// Garbage collection's own keys (docs/gc.md), under the reserved `_gc/` component no repository can collide with.
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
  return `${GC_TOUCH_PREFIX}${digestPath(digest)}/${String(Math.max(0, Math.floor(at))).padStart(15, '0')}`;
}

export function gcTouchPrefix(digest: string): string {
  return `${GC_TOUCH_PREFIX}${digestPath(digest)}/`;
}

const TOUCH_KEY = new RegExp(`^_gc/touch/${ALG}/${HEX}/\\d{15}$`);

/** A touch marker's digest, or undefined for any other key. */
export function digestFromTouchKey(key: string): string | undefined {
  const m = TOUCH_KEY.exec(key);
  return m ? digestOf(m[1], m[2]) : undefined;
}

/** `_gc/passes/<ms>`: a pass's report (what it removed), for audit. */
export function gcReportKey(at: number): string {
  return `${GC_REPORT_PREFIX}${String(Math.max(0, Math.floor(at))).padStart(15, '0')}.json`;
}

// --- helpers ---

function digestPath(digest: string): string {
  const d = parseDigest(digest);
  return `${d.algorithm}/${d.hex}`;
}

function isValidTag(tag: string): boolean {
  try {
    return validateTag(tag) === tag;
  } catch {
    return false;
  }
}

function digestOf(alg: string | undefined, hex: string | undefined): string | undefined {
  try {
    return parseDigest(`${alg}:${hex}`).value;
  } catch {
    return undefined;
  }
}

type Shape = { kind: RepoKey['kind']; re: RegExp };

function repoShapes(dirs: Record<RepoKey['kind'], string>): Shape[] {
  return [
    { kind: 'tag', re: new RegExp(`^repos/(.+)/${dirs.tag}/([^/]+)$`) },
    { kind: 'manifest', re: new RegExp(`^repos/(.+)/${dirs.manifest}/${ALG}/${HEX}$`) },
    { kind: 'layer', re: new RegExp(`^repos/(.+)/${dirs.layer}/${ALG}/${HEX}$`) },
    { kind: 'referrer', re: new RegExp(`^repos/(.+)/${dirs.referrer}/${ALG}/${HEX}/${ALG}/${HEX}$`) },
  ];
}

function parseWith(shapes: readonly Shape[], key: string): RepoKey | undefined {
  for (const { kind, re } of shapes) {
    const m = re.exec(key);
    if (!m) continue;
    const repo = m[1] as string;
    // The greedy name group backs off to the last match of the shape, which is the only one a writer could have
    // made (shapes differ in their tails); a name that fails the grammar is a foreign or hand-made key.
    if (!isValidRepoName(repo)) return undefined;
    switch (kind) {
      case 'tag': {
        const tag = m[2] as string;
        return isValidTag(tag) ? { kind, repo, tag } : undefined;
      }
      case 'manifest':
      case 'layer': {
        const digest = digestOf(m[2], m[3]);
        return digest ? { kind, repo, digest } : undefined;
      }
      case 'referrer': {
        const subject = digestOf(m[2], m[3]);
        const digest = digestOf(m[4], m[5]);
        return subject && digest ? { kind, repo, subject, digest } : undefined;
      }
    }
  }
  return undefined;
}
