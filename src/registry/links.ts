// Repository-scoped facts the registry keeps beside the store layout (see meta.ts for why they are not in the
// BlobStore contract yet); keys.ts builds and parses the keys:
//   repos/<name>/_layers/<alg>/<hex>                          blob linked to the repository (uploaded or mounted there)
//   repos/<name>/_referrers/<alg>/<subject-hex>/<alg>/<hex>   manifest <hex> in <name> has subject <subject-hex>;
//                                                             body = its descriptor (JSON) for the referrers API
// Blob links are what stop cross-repository leaks when auth is on. They are written only when `blobLinks` is on
// (the default when auth is configured): one conditional PutObject per blob uploaded or mounted. A blob that has no
// link but is referenced by a manifest already in the repository counts as linked (found by reading the
// repository's manifests once, then the link is written) — so turning auth on later needs no migration.
import { parseDigest } from '../core/digest.js';
import { isTransshipError } from '../core/errors.js';
import { parseManifest, references } from '../transfer/manifest.js';
import type { Descriptor } from '../transfer/types.js';
import type { BlobStore } from '../store/contract.js';
import { layerLinkKey, parseRepoKey, referrerKey, referrersPrefix } from '../store/keys.js';
import type { MetaStore } from './meta.js';
import { ContentCache, TtlCache } from './cache.js';
import { buffer } from 'node:stream/consumers';

export interface LinkOptions {
  /** Record blob→repository links on upload and mount (needed for auth's cross-repository rules). */
  blobLinks: boolean;
  /** How long a positive link lookup is trusted in memory (ms). */
  cacheTtlMs?: number;
  /**
   * With regions: the other regions' stores. A repository pushed elsewhere and not replicated here has its links
   * there; a link found there is recorded here too (the blob itself is a lazy fetch).
   */
  elsewhere?: readonly BlobStore[];
}

export class RepoLinks {
  private readonly linked: TtlCache<true>;
  readonly manifests = new ContentCache();

  constructor(
    readonly store: BlobStore,
    readonly meta: MetaStore,
    readonly opts: LinkOptions,
  ) {
    this.linked = new TtlCache(opts.cacheTtlMs ?? 30_000);
  }

  async linkBlob(repo: string, digest: string, signal?: AbortSignal): Promise<void> {
    if (!this.opts.blobLinks) return;
    const key = layerLinkKey(repo, digest);
    if (this.linked.get(key)) return;
    await this.meta.putIfAbsent(key, parseDigest(digest).value, { signal });
    this.linked.set(key, true);
  }

  async unlinkBlob(repo: string, digest: string, signal?: AbortSignal): Promise<void> {
    const key = layerLinkKey(repo, digest);
    this.linked.delete(key);
    await this.meta.delete(key, { signal });
  }

  /** True when `digest` is linked to `repo`, or referenced by one of the repository's manifests (then linked). */
  async isBlobLinked(repo: string, digest: string, signal?: AbortSignal): Promise<boolean> {
    const key = layerLinkKey(repo, digest);
    if (this.linked.get(key)) return true;
    if (await this.meta.has(key, { signal })) {
      this.linked.set(key, true);
      return true;
    }
    if (!(await this.referencedByRepo(this.store, repo, digest, signal)) && !(await this.linkedElsewhere(key, repo, digest, signal))) return false;
    await this.meta.putIfAbsent(key, parseDigest(digest).value, { signal });
    this.linked.set(key, true);
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
