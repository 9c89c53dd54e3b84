// Writing an image into a BlobStore, in the order the invariants demand: blobs → manifests → manifest link → tag.
// The presence check runs before any byte moves: cache hits first, then one batch check for the misses.
import { Readable } from 'node:stream';
import type { BlobStore } from '../store/contract.js';
import type { Signalled } from '@transship/core/signal';
import type { BlobInfo } from '../store/contract.js';
import { TransshipError } from '@transship/core/errors';
import { Freshness } from '../store/freshness.js';
import { tagMatches } from '../store/keys.js';
import type { PresenceCache } from '../index/presence-cache.js';
import { validateRepoName, validateTag } from '@transship/core/names';
import { s3PutSkippedDueToDedup, blobSkippedBytesTotal, indexLookupsTotal } from '../telemetry/metrics.js';
import type { Descriptor, DestinationPutResult, FetchedManifest, ImageDestination } from './types.js';

export class StoreDestination implements ImageDestination {
  readonly description: string;
  private rootWasPresent = false;
  /** Blobs this copy found present and did not write: made fresh (GC protocol, docs/gc.md) before the commit. */
  private readonly relied = new Map<string, BlobInfo>();
  private readonly freshness: Freshness;

  constructor(
    readonly store: BlobStore,
    readonly repo: string,
    /** Tag to point at the root; undefined = push by digest only. */
    readonly tag: string | undefined,
    private readonly cache?: PresenceCache,
    freshness?: Freshness,
  ) {
    this.freshness = freshness ?? new Freshness(store);
    validateRepoName(repo);
    if (tag !== undefined) validateTag(tag);
    this.description = `${store.name}/${repo}${tag ? ':' + tag : ''}`;
  }

  async present(descs: readonly Descriptor[], opts: Signalled = {}): Promise<Map<string, 'cache' | 'exists'>> {
    const digests = [...new Set(descs.map((d) => d.digest))];
    const out = new Map<string, 'cache' | 'exists'>();
    const hits = this.cache?.known(this.store.name, digests) ?? new Set<string>();
    const sizeOf = new Map(descs.map((d) => [d.digest, d.size] as const));
    for (const d of hits) {
      out.set(d, 'cache');
      this.relied.set(d, { digest: d, size: sizeOf.get(d) ?? 0, lastModified: this.cache?.freshnessOf(this.store.name, d) });
    }
    const misses = digests.filter((d) => !hits.has(d));
    if (misses.length) {
      const found = await this.store.statBlobs(misses, opts);
      for (const d of misses) indexLookupsTotal.inc({ result: found.has(d) ? 'remote_present' : 'remote_absent' });
      for (const [d, info] of found) {
        out.set(d, 'exists');
        this.relied.set(d, info);
      }
      // Old blobs get their GC touch now, so the settle wait has passed by the commit.
      this.freshness.prefetch([...found.values()]);
      this.cache?.markPresent(this.store.name, found.keys(), { freshness: new Map([...found].map(([d, i]) => [d, i.lastModified] as const)) });
    }
    const sizes = new Map(descs.map((d) => [d.digest, d.size] as const));
    let skipped = 0;
    for (const d of out.keys()) skipped += sizes.get(d) ?? 0;
    blobSkippedBytesTotal.inc({ store: this.store.name }, skipped);
    return out;
  }

  /** Tells the destination the root manifest was already present, so commit() checks before writing links/tags. */
  notePresent(rootDigest: string, present: ReadonlyMap<string, unknown>): void {
    this.rootWasPresent = present.has(rootDigest);
  }

  async putBlob(desc: Descriptor, open: () => Promise<Readable>, opts: Signalled & { onProgress?: (bytes: number) => void } = {}): Promise<DestinationPutResult> {
    const r = await this.store.putBlob(desc.digest, open, { size: desc.size, signal: opts.signal, onProgress: opts.onProgress });
    if (r.status === 'exists') {
      s3PutSkippedDueToDedup.inc({ reason: 'conditional_412' });
      blobSkippedBytesTotal.inc({ store: this.store.name }, desc.size);
      this.relied.set(desc.digest, { digest: desc.digest, size: desc.size });
    } else {
      this.relied.delete(desc.digest);
      this.freshness.noteWritten(desc.digest);
    }
    this.cache?.markPresent(this.store.name, [desc.digest], r.status === 'written' ? { freshness: new Map([[desc.digest, Date.now()]]) } : {});
    return { status: r.status };
  }

  async putManifest(m: FetchedManifest, opts: Signalled = {}): Promise<DestinationPutResult> {
    return this.putBlob(m.descriptor, async () => Readable.from([m.bytes]), opts);
  }

  async commit(root: FetchedManifest, opts: Signalled = {}): Promise<void> {
    const digest = root.descriptor.digest;
    // Nothing becomes visible over a blob garbage collection may be deleting (docs/gc.md "The protocol").
    const gone = await this.freshness.ensure([...this.relied.values()], opts);
    if (gone.length) {
      for (const d of gone) this.cache?.invalidate(this.store.name, d);
      throw new TransshipError('TS_MANIFEST_BLOB_UNKNOWN', `${gone.length} blob(s) this copy found present were removed by garbage collection meanwhile (${gone[0]}); nothing was linked — run the copy again`, { details: { digests: gone } });
    }
    // What the check learnt (touches included) saves the next run the question.
    const learnt = new Map([...this.relied.keys()].map((d) => [d, this.freshness.knownFreshness(d)] as const).filter(([, f]) => f !== undefined));
    if (learnt.size) this.cache?.markPresent(this.store.name, learnt.keys(), { freshness: learnt });
    // A fresh root cannot have a link or tag yet, so skip the listing; a known root may be fully in place already.
    const state = this.rootWasPresent ? await this.store.repoState(this.repo, opts) : undefined;
    if (!state?.manifests.has(digest)) await this.store.linkManifest(this.repo, digest, opts);
    if (this.tag !== undefined && !tagMatches(state?.tags.get(this.tag), digest)) await this.store.putTag(this.repo, this.tag, digest, opts);
  }

  async close(): Promise<void> {}
}
