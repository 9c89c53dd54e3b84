// The BlobStore contract: the small surface every backend implements (tus-node-server style). Keys follow the store
// layout in docs/architecture.md; names and tags are validated (src/core/names.ts) before they reach a store, and
// every store re-checks digests it is given.
import type { Readable } from 'node:stream';
import type { Signalled } from '@transship/core/signal';

// Signalled moved to core (every layer uses it); re-exported so the stores' own imports keep compiling.
export type { Signalled };

export interface BlobInfo {
  digest: string;
  size: number;
}

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive (HTTP Range semantics). */
  end: number;
}

export type PutOutcome =
  /** We wrote the bytes. */
  | { status: 'written'; size: number }
  /** The store already had the blob (conditional write answered 412, or the key existed). Nothing was written. */
  | { status: 'exists'; size: number };

export interface PutBlobOptions extends Signalled {
  /** Declared size when known (checked: a mismatch fails the write). */
  size?: number | undefined;
  /** Progress callback, bytes read from the source so far. */
  onProgress?: ((bytes: number) => void) | undefined;
}

/**
 * A blob uploaded in parts while its bytes still arrive, before anyone knows its digest (a registry upload
 * session). Nothing staged is visible as a blob until commit(); abort() leaves nothing behind.
 */
export interface StagedBlob {
  /** Every part but the last must be exactly this many bytes. */
  readonly partSize: number;
  /** The largest blob this stage can commit; past it, the caller must fall back to putBlob. */
  readonly maxBytes: number;
  /**
   * A part-sized buffer to fill and pass to addPart: a finished part's buffer when there is one, so a long upload
   * reuses a few buffers instead of leaving V8 one 8 MiB buffer per part to collect (each one pushes it towards a
   * full mark-compact of the whole heap).
   */
  buffer(): Buffer;
  /** Queues the next part; resolves once the store has room for another (a few parts in flight at most). */
  addPart(body: Buffer): Promise<void>;
  /**
   * The caller verified that the staged bytes hash to `digest` and number `size`: make them that blob, unless the
   * store already has it (then nothing is written and the outcome is 'exists').
   */
  commit(digest: string, size: number, opts?: Signalled): Promise<PutOutcome>;
  /** Discards everything staged. Idempotent; a no-op after a successful commit. */
  abort(): Promise<void>;
}

export interface BlobStore {
  /** Display name, e.g. `s3://bucket/prefix` or `dir:/var/lib/transship`. */
  readonly name: string;
  /** The region this store lives in; every store has one from the start. */
  readonly region: string;

  /** Size of a stored blob, or undefined when absent. */
  statBlob(digest: string, opts?: Signalled): Promise<BlobInfo | undefined>;
  /** Batch presence check: returns the subset of `digests` present, with sizes. Cheap in requests. */
  statBlobs(digests: readonly string[], opts?: Signalled): Promise<Map<string, BlobInfo>>;
  /** Streams a blob (or a byte range of it). Throws TS_BLOB_UNKNOWN when absent. */
  getBlob(digest: string, opts?: Signalled & { range?: ByteRange | undefined }): Promise<Readable>;
  /**
   * Optional (S3): streams a whole blob and says its size from the same response — one request where statBlob +
   * getBlob take two. Throws TS_BLOB_UNKNOWN when absent.
   */
  openBlob?(digest: string, opts?: Signalled): Promise<{ stream: Readable; size: number }>;
  /**
   * Stores a blob under `digest` only if the bytes hash to it (TS_DIGEST_MISMATCH otherwise, nothing visible).
   * `source` may be called more than once (retries) and must return a fresh stream each time.
   */
  putBlob(digest: string, source: () => Readable | Promise<Readable>, opts?: PutBlobOptions): Promise<PutOutcome>;
  /** Optional (S3): a URL a client can GET the blob from directly for `expiresInSeconds` (presigned). */
  blobUrl?(digest: string, opts: { expiresInSeconds: number }): Promise<string>;
  /** Optional (S3): starts a staged blob, see StagedBlob. Stores without it are written with putBlob only. */
  stageBlob?(opts?: Signalled): Promise<StagedBlob>;
  /** Optional, with stageBlob: removes staged uploads older than `olderThanMs` that a crashed process left. */
  sweepStaged?(olderThanMs: number, opts?: Signalled): Promise<{ multipart: number; objects: number }>;
  deleteBlob(digest: string, opts?: Signalled): Promise<void>;
  listBlobs(opts?: Signalled): AsyncIterable<BlobInfo>;

  /** Tag → manifest digest. Written last, after the manifest and its blobs are durable. */
  getTag(repo: string, tag: string, opts?: Signalled): Promise<string | undefined>;
  putTag(repo: string, tag: string, digest: string, opts?: Signalled): Promise<void>;
  deleteTag(repo: string, tag: string, opts?: Signalled): Promise<void>;
  listTags(repo: string, opts?: Signalled): Promise<string[]>;
  /** Records that manifest `digest` belongs to `repo` (listing, authorization, GC roots). */
  linkManifest(repo: string, digest: string, opts?: Signalled): Promise<void>;
  unlinkManifest(repo: string, digest: string, opts?: Signalled): Promise<void>;
  hasManifestLink(repo: string, digest: string, opts?: Signalled): Promise<boolean>;
  listManifestLinks(repo: string, opts?: Signalled): Promise<string[]>;
  /**
   * What the store knows about a repository in one call: its tags with their digests (when cheap to know) and its
   * manifest links. Lets a re-push skip writes that are already true.
   */
  repoState(repo: string, opts?: Signalled): Promise<{ tags: Map<string, string | undefined>; manifests: Set<string> }>;
  listRepos(opts?: Signalled): Promise<string[]>;

  /**
   * Small registry-owned keys under `repos/` (blob→repository and subject→referrer links). Keys are built by
   * src/registry/links.ts from validated names and digests and checked again here (see keys.ts, checkMetaKey).
   */
  putMetaIfAbsent(key: string, body: string, opts?: Signalled): Promise<void>;
  getMeta(key: string, opts?: Signalled): Promise<string | undefined>;
  hasMeta(key: string, opts?: Signalled): Promise<boolean>;
  /** Full keys under `prefix` (ending in '/'), any depth. */
  listMeta(prefix: string, opts?: Signalled): Promise<string[]>;
  deleteMeta(key: string, opts?: Signalled): Promise<void>;

  /** Counts of requests sent to the backend by operation (for --json summaries and benchmarks). */
  requestCounts(): Record<string, number>;
  close(): Promise<void>;
}
