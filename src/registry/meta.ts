// Small registry-owned keys next to the store layout: blob→repository links and subject→referrer links
// (`repos/<name>/_layers/<alg>/<hex>`, `repos/<name>/_referrers/<alg>/<subject-hex>/<alg>/<hex>`). They go through
// the store's own small-key operations (BlobStore.putMetaIfAbsent & co.), so the same client, retry loop, request
// counts, key validation and old-layout fallback apply; keys are built only by store/keys.ts, from validated names
// and digests.
import type { Signalled, BlobStore } from '../store/contract.js';

export interface MetaStore {
  readonly name: string;
  /** Writes `key` unless it already exists (links are idempotent facts, so the first writer wins). */
  putIfAbsent(key: string, body: string, opts?: Signalled): Promise<void>;
  get(key: string, opts?: Signalled): Promise<string | undefined>;
  has(key: string, opts?: Signalled): Promise<boolean>;
  /** Full keys under `prefix` (which ends with '/'), any depth. */
  list(prefix: string, opts?: Signalled): Promise<string[]>;
  delete(key: string, opts?: Signalled): Promise<void>;
  /** Requests sent, by operation (benchmarks add these to the store's own counts). */
  requestCounts(): Record<string, number>;
  close(): Promise<void>;
}

/** The registry's view of a store's small keys. */
export class StoreMetaStore implements MetaStore {
  readonly name: string;
  constructor(private readonly store: BlobStore) {
    this.name = store.name;
  }
  putIfAbsent(key: string, body: string, opts?: Signalled): Promise<void> {
    return this.store.putMetaIfAbsent(key, body, opts);
  }
  get(key: string, opts?: Signalled): Promise<string | undefined> {
    return this.store.getMeta(key, opts);
  }
  has(key: string, opts?: Signalled): Promise<boolean> {
    return this.store.hasMeta(key, opts);
  }
  list(prefix: string, opts?: Signalled): Promise<string[]> {
    return this.store.listMeta(prefix, opts);
  }
  delete(key: string, opts?: Signalled): Promise<void> {
    return this.store.deleteMeta(key, opts);
  }
  /** Counted by the store itself (its requestCounts include these). */
  requestCounts(): Record<string, number> {
    return {};
  }
  /** The store is owned by whoever opened it. */
  async close(): Promise<void> {}
}

export function metaStoreFor(store: BlobStore): MetaStore {
  return new StoreMetaStore(store);
}
