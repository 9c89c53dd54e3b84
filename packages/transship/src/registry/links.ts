// Repository-scoped facts the registry keeps beside the store layout (see meta.ts for why they are not in the
// BlobStore contract yet); keys.ts builds and parses the keys:
//   repos/<name>/_layers/<alg>/<hex>                          blob linked to the repository (uploaded or mounted there)
//   repos/<name>/_referrers/<alg>/<subject-hex>/<alg>/<hex>   manifest <hex> in <name> has subject <subject-hex>;
//                                                             body = its descriptor (JSON) for the referrers API
//   repos/<name>/_unlinked/<alg>/<hex>                        blob link deleted (DELETE …/blobs/<digest>): not healed
//   repos/<name>/_mediatypes/<alg>/<hex>                      manifest <hex> has no `mediaType` field and was pushed
//                                                             with a Content-Type its shape does not imply; body = it
// Blob links are what stop cross-repository leaks when auth is on. They are written only when `blobLinks` is on
// (the default when auth is configured): one conditional PutObject per blob uploaded or mounted. A blob that has no
// link but is referenced by a manifest already in the repository counts as linked (found by reading the
// repository's manifests once, then the link is written) — so turning auth on later needs no migration.
import { ExpiringMap } from '@transship/core/expiring-map';
import { parseDigest } from '@transship/core/digest';
import { isTransshipError } from '@transship/core/errors';
import { parseManifest, references } from '../transfer/manifest.js';
import type { Descriptor } from '../transfer/types.js';
import type { BlobStore } from '../store/contract.js';
import { layerLinkKey, manifestMediaTypeKey, parseRepoKey, referrerKey, referrersPrefix, unlinkedKey } from '../store/keys.js';
import type { MetaStore } from './meta.js';
import { ContentCache } from './cache.js';
import { PresenceCache, REGISTRY_HINT_TTL_MS } from '../index/presence-cache.js';
import { buffer } from 'node:stream/consumers';

export interface LinkOptions {
  /** Record blob→repository links on upload and mount (needed for auth's cross-repository rules). */
  blobLinks: boolean;
  /** How long a positive link lookup is trusted in memory (ms; default REGISTRY_HINT_TTL_MS, a presence hint). */
  cacheTtlMs?: number;
  /**
   * With regions: the other regions' stores. A repository pushed elsewhere and not replicated here has its links
   * there; a link found there is recorded here too (the blob itself is a lazy fetch).
   */
  elsewhere?: readonly BlobStore[];
}

export class RepoLinks {
  private readonly linked: PresenceCache;
  readonly manifests = new ContentCache();
  /** Media types of manifests without a `mediaType` field ('' = none recorded), reused for a while. */
  private readonly mediaTypes = new ExpiringMap<string>({ ttlMs: 30_000, maxEntries: 100_000 });

  constructor(
    readonly store: BlobStore,
    readonly meta: MetaStore,
    readonly opts: LinkOptions,
  ) {
    this.linked = new PresenceCache({ ttlMs: opts.cacheTtlMs ?? REGISTRY_HINT_TTL_MS, maxEntries: 100_000 });
  }

  async linkBlob(repo: string, digest: string, signal?: AbortSignal): Promise<void> {
    if (!this.opts.blobLinks) return;
    const key = layerLinkKey(repo, digest);
    if (this.linked.get(this.store.name, key)) return;
    await this.meta.putIfAbsent(key, parseDigest(digest).value, { signal });
    this.linked.markPresent(this.store.name, [key]);
  }

  async unlinkBlob(repo: string, digest: string, signal?: AbortSignal): Promise<void> {
    const key = layerLinkKey(repo, digest);
    // The marker first: between the two writes the blob is already invisible, never healed back.
    await this.meta.putIfAbsent(unlinkedKey(repo, digest), parseDigest(digest).value, { signal });
    this.linked.invalidate(this.store.name, key);
    await this.meta.delete(key, { signal });
  }

  /** True when `digest` is linked to `repo`, or referenced by one of the repository's manifests (then linked). */
  async isBlobLinked(repo: string, digest: string, signal?: AbortSignal): Promise<boolean> {
    const key = layerLinkKey(repo, digest);
    if (this.linked.get(this.store.name, key)) return true;
    if (await this.meta.has(key, { signal })) {
      this.linked.markPresent(this.store.name, [key]);
      return true;
    }
    // Healing from manifests is for links that were never written (auth turned on later), not for deleted ones.
    if (await this.meta.has(unlinkedKey(repo, digest), { signal })) return false;
    if (!(await this.referencedByRepo(this.store, repo, digest, signal)) && !(await this.linkedElsewhere(key, repo, digest, signal))) return false;
    await this.meta.putIfAbsent(key, parseDigest(digest).value, { signal });
    this.linked.markPresent(this.store.name, [key]);
    return true;
  }

  /** Manifest bytes by digest, through the content cache (manifests are small and immutable). */
  async manifestBytes(digest: string, signal?: AbortSignal, from: BlobStore = this.store): Promise<Buffer> {
    const hit = this.manifests.get(digest);
    if (hit) return hit;
    const bytes = await buffer(await from.getBlob(digest, { signal }));
    this.manifests.set(digest, bytes);
    return bytes;
  }

  /** The same two questions, asked of the other regions; an unreachable region proves nothing. */
  private async linkedElsewhere(key: string, repo: string, digest: string, signal?: AbortSignal): Promise<boolean> {
    for (const store of this.opts.elsewhere ?? []) {
      try {
        if ((await store.hasMeta(key, { signal })) || (await this.referencedByRepo(store, repo, digest, signal))) return true;
      } catch (err) {
        if (!isTransshipError(err) || signal?.aborted) throw err;
      }
    }
    return false;
  }

  private async referencedByRepo(store: BlobStore, repo: string, digest: string, signal?: AbortSignal): Promise<boolean> {
    for (const m of await store.listManifestLinks(repo, { signal })) {
      if (m === digest) return true;
      try {
        const parsed = parseManifest(await this.manifestBytes(m, signal, store));
        if (parsed.kind === 'manifest' && references(parsed).some((r) => r.digest === digest)) return true;
      } catch (err) {
        // A link whose manifest is gone or unreadable proves nothing; keep looking.
        if (!isTransshipError(err)) throw err;
      }
    }
    return false;
  }

  /** Remembers the Content-Type a manifest without a `mediaType` field was pushed with (it is served back with it). */
  async setManifestMediaType(repo: string, digest: string, mediaType: string, signal?: AbortSignal): Promise<void> {
    const key = manifestMediaTypeKey(repo, digest);
    await this.meta.putIfAbsent(key, mediaType, { signal });
    this.mediaTypes.set(key, mediaType);
  }

  async manifestMediaType(repo: string, digest: string, signal?: AbortSignal): Promise<string | undefined> {
    const key = manifestMediaTypeKey(repo, digest);
    const hit = this.mediaTypes.get(key);
    if (hit !== undefined) return hit || undefined;
    const found = await this.meta.get(key, { signal });
    this.mediaTypes.set(key, found ?? '');
    return found;
  }

  async forgetManifestMediaType(repo: string, digest: string, signal?: AbortSignal): Promise<void> {
    const key = manifestMediaTypeKey(repo, digest);
    this.mediaTypes.delete(key);
    await this.meta.delete(key, { signal });
  }

  async addReferrer(repo: string, subject: string, desc: Descriptor, signal?: AbortSignal): Promise<void> {
    await this.meta.putIfAbsent(referrerKey(repo, subject, desc.digest), JSON.stringify(desc), { signal });
  }

  async removeReferrer(repo: string, subject: string, referrer: string, signal?: AbortSignal): Promise<void> {
    await this.meta.delete(referrerKey(repo, subject, referrer), { signal });
  }

  async listReferrers(repo: string, subject: string, signal?: AbortSignal): Promise<Descriptor[]> {
    const out: Descriptor[] = [];
    const s = parseDigest(subject).value;
    for (const key of await this.meta.list(referrersPrefix(repo, subject), { signal })) {
      const k = parseRepoKey(key);
      if (k?.kind !== 'referrer' || k.repo !== repo || k.subject !== s) continue;
      const body = await this.meta.get(key, { signal });
      if (body === undefined) continue;
      try {
        out.push(JSON.parse(body) as Descriptor);
      } catch {
        // A damaged link is skipped rather than failing the whole listing.
      }
    }
    return out;
  }
}
