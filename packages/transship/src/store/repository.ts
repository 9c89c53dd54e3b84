// The repository layer: tags, manifest links, listings, repoState and the registry's small keys, written once over
// an ObjectDriver for every backend (as Distribution and zot put one registry over thin storage drivers). Backends
// extend this class and bring their driver and their blob path.
//
// Old layout for one release: a store written before the reserved layout (keys.ts) keeps working unmigrated.
//   - point reads (getTag, hasManifestLink, getMeta, hasMeta) read the old key only on a miss: +1 request per miss;
//   - listings of one kind (listTags, listManifestLinks, listMeta of a `_…` prefix) list the old prefix as well:
//     +1 LIST (S3) or readdir (fs) each; repoState and listRepos list `repos/…`, which holds both layouts: +0;
//   - deletes delete the old key as well: +1 DELETE;
//   - writes write the current layout only; where both exist the current key wins.
// Once `transship migrate` has moved every old key it writes `_layout`; the first fallback a process would take reads
// it (one GET per process) and, when present, the process never looks at the old layout again.
import { parseDigest } from '@transship/core/digest';
import { throwIfAborted } from '@transship/core/errors';
import type { BlobInfo, BlobStore, ByteRange, ObjectDriver, PutBlobOptions, PutOutcome, Signalled } from './contract.js';
import type { Readable } from 'node:stream';
import {
  BLOBS_PREFIX, blobKey, digestFromBlobKey, LAYOUT_KEY, REPOS_PREFIX, checkMetaKey, currentToLegacy, legacyPrefixOf, legacyToCurrent,
  manifestLinkKey, manifestLinksPrefix, parseLegacyRepoKey, parseRepoKey, repoPrefix, tagKey, tagsPrefix,
  type RepoKey,
} from './keys.js';

export abstract class RepositoryStore implements BlobStore {
  abstract readonly name: string;
  abstract readonly region: string;
  abstract readonly objects: ObjectDriver;

  // --- blobs: the same over every driver (writes differ per backend and live in the stores) ---

  async deleteBlob(digest: string, opts: Signalled = {}): Promise<void> {
    await this.objects.delete(blobKey(digest), opts);
  }

  async *listBlobs(opts: Signalled = {}): AsyncIterable<BlobInfo> {
    for await (const obj of this.objects.list(BLOBS_PREFIX, opts)) {
      const digest = digestFromBlobKey(obj.key);
      if (digest) yield { digest, size: obj.size, lastModified: obj.lastModified };
    }
  }

  /** undefined until a fallback first needs to know whether the store was migrated. */
  private legacyLayout: Promise<boolean> | undefined;

  abstract statBlob(digest: string, opts?: Signalled): Promise<BlobInfo | undefined>;
  abstract statBlobs(digests: readonly string[], opts?: Signalled): Promise<Map<string, BlobInfo>>;
  abstract getBlob(digest: string, opts?: Signalled & { range?: ByteRange | undefined }): Promise<Readable>;
  abstract putBlob(digest: string, source: () => Readable | Promise<Readable>, opts?: PutBlobOptions): Promise<PutOutcome>;
  abstract requestCounts(): Record<string, number>;
  abstract close(): Promise<void>;

  /** True while the store may still hold old-layout keys (no `_layout` marker seen). */
  protected mayHoldLegacy(opts: Signalled): Promise<boolean> {
    this.legacyLayout ??= this.objects.get(LAYOUT_KEY, opts).then(
      (body) => body === undefined,
      (err: unknown) => {
        this.legacyLayout = undefined; // ask again next time
        throw err;
      },
    );
    return this.legacyLayout;
  }

  /** Forget what was learnt about the marker (migrate calls this after writing it). */
  layoutChanged(): void {
    this.legacyLayout = undefined;
  }

  // --- tags ---

  async getTag(repo: string, tag: string, opts: Signalled = {}): Promise<string | undefined> {
    throwIfAborted(opts.signal);
    const body = await this.readWithFallback(tagKey(repo, tag), opts);
    return body === undefined ? undefined : parseDigest(body.trim()).value;
  }

  async putTag(repo: string, tag: string, digest: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    await this.objects.put(tagKey(repo, tag), parseDigest(digest).value, opts);
  }

  async deleteTag(repo: string, tag: string, opts: Signalled = {}): Promise<void> {
    await this.deleteWithLegacy(tagKey(repo, tag), opts);
  }

  async listTags(repo: string, opts: Signalled = {}): Promise<string[]> {
    throwIfAborted(opts.signal);
    const out = new Set<string>();
    for (const k of await this.listKinds(tagsPrefix(repo), opts)) if (k.kind === 'tag' && k.repo === repo) out.add(k.tag);
    return [...out].sort();
  }

  // --- manifest links ---

  async linkManifest(repo: string, digest: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    await this.objects.putIfAbsent(manifestLinkKey(repo, digest), parseDigest(digest).value, opts);
  }

  async unlinkManifest(repo: string, digest: string, opts: Signalled = {}): Promise<void> {
    await this.deleteWithLegacy(manifestLinkKey(repo, digest), opts);
  }

  async hasManifestLink(repo: string, digest: string, opts: Signalled = {}): Promise<boolean> {
    throwIfAborted(opts.signal);
    return this.existsWithFallback(manifestLinkKey(repo, digest), opts);
  }

  async listManifestLinks(repo: string, opts: Signalled = {}): Promise<string[]> {
    throwIfAborted(opts.signal);
    const out = new Set<string>();
    for (const k of await this.listKinds(manifestLinksPrefix(repo), opts)) if (k.kind === 'manifest' && k.repo === repo) out.add(k.digest);
    return [...out].sort();
  }

  /**
   * One listing of `repos/<name>/` answers both questions a re-push asks (nested repositories' keys in it are
   * skipped by the parse). A tag's digest is recognised without a GET where the driver reports an ETag: a tag's body
   * is the digest string and a single-PUT object's ETag is the MD5 of its body; otherwise the tag is read.
   */
  async repoState(repo: string, opts: Signalled = {}): Promise<{ tags: Map<string, string | undefined>; manifests: Set<string> }> {
    throwIfAborted(opts.signal);
    const found = new Map<string, { value: string | undefined; key: string; current: boolean }>();
    const manifests = new Set<string>();
    for await (const obj of this.objects.list(repoPrefix(repo), opts)) {
      const current = parseRepoKey(obj.key);
      const k = current ?? parseLegacyRepoKey(obj.key);
      if (!k || k.repo !== repo) continue;
      if (k.kind === 'manifest') manifests.add(k.digest);
      else if (k.kind === 'tag' && (current || !found.get(k.tag)?.current)) {
        found.set(k.tag, { value: obj.etag ? `md5:${obj.etag}` : undefined, key: obj.key, current: current !== undefined });
      }
    }
    const tags = new Map<string, string | undefined>();
    for (const [tag, t] of found) {
      if (t.value !== undefined) {
        tags.set(tag, t.value);
        continue;
      }
      const body = await this.objects.get(t.key, opts);
      tags.set(tag, body === undefined ? undefined : parseDigest(body.trim()).value);
    }
    return { tags, manifests };
  }

  /** Repositories with a tag or a manifest link; blob and referrer links alone do not make one. */
  async listRepos(opts: Signalled = {}): Promise<string[]> {
    throwIfAborted(opts.signal);
    const repos = new Set<string>();
    for await (const obj of this.objects.list(REPOS_PREFIX, opts)) {
      const k = parseRepoKey(obj.key) ?? parseLegacyRepoKey(obj.key);
      if (k && (k.kind === 'tag' || k.kind === 'manifest')) repos.add(k.repo);
    }
    return [...repos].sort();
  }

  // --- small keys (registry links, placement markers, GC records) ---

  async putMetaIfAbsent(key: string, body: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    await this.objects.putIfAbsent(checkMetaKey(key), body, opts);
  }

  async getMeta(key: string, opts: Signalled = {}): Promise<string | undefined> {
    throwIfAborted(opts.signal);
    return this.readWithFallback(checkMetaKey(key), opts);
  }

  async hasMeta(key: string, opts: Signalled = {}): Promise<boolean> {
    throwIfAborted(opts.signal);
    return this.existsWithFallback(checkMetaKey(key), opts);
  }

  /** Full keys under `prefix` (ending in '/'), any depth, in the current layout (old keys are reported moved). */
  async listMeta(prefix: string, opts: Signalled = {}): Promise<string[]> {
    checkMetaKey(prefix, true);
    const out = new Set<string>();
    const legacy = legacyPrefixOf(prefix);
    const lists = [prefix];
    if (legacy !== undefined && legacy !== prefix && (await this.mayHoldLegacy(opts))) lists.push(legacy);
    for (const p of lists) {
      for await (const obj of this.objects.list(p, opts)) {
        const key = legacyToCurrent(obj.key) ?? obj.key;
        if (key.startsWith(prefix)) out.add(key);
      }
    }
    return [...out].sort();
  }

  async deleteMeta(key: string, opts: Signalled = {}): Promise<void> {
    await this.deleteWithLegacy(checkMetaKey(key), opts);
  }

  // --- helpers ---

  private async readWithFallback(key: string, opts: Signalled): Promise<string | undefined> {
    const body = await this.objects.get(key, opts);
    if (body !== undefined) return body;
    const old = currentToLegacy(key);
    if (old === undefined || !(await this.mayHoldLegacy(opts))) return undefined;
    return this.objects.get(old, opts);
  }

  private async existsWithFallback(key: string, opts: Signalled): Promise<boolean> {
    if (await this.objects.stat(key, opts)) return true;
    const old = currentToLegacy(key);
    if (old === undefined || !(await this.mayHoldLegacy(opts))) return false;
    return (await this.objects.stat(old, opts)) !== undefined;
  }

  private async deleteWithLegacy(key: string, opts: Signalled): Promise<void> {
    throwIfAborted(opts.signal);
    await this.objects.delete(key, opts);
    const old = currentToLegacy(key);
    if (old !== undefined && (await this.mayHoldLegacy(opts))) await this.objects.delete(old, opts);
  }

  /** Parsed repository keys under a current prefix of one kind, and under its old twin while one may exist. */
  private async listKinds(prefix: string, opts: Signalled): Promise<RepoKey[]> {
    const out: RepoKey[] = [];
    const collect = async (p: string, parse: (key: string) => RepoKey | undefined): Promise<void> => {
      for await (const obj of this.objects.list(p, opts)) {
        const k = parse(obj.key);
        if (k) out.push(k);
      }
    };
    await collect(prefix, parseRepoKey);
    const legacy = legacyPrefixOf(prefix);
    if (legacy !== undefined && legacy !== prefix && (await this.mayHoldLegacy(opts))) await collect(legacy, parseLegacyRepoKey);
    return out;
  }
}
