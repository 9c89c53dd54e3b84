// The BlobStore contract: the small surface every backend implements (tus-node-server style). Keys follow the store
// layout in keys.ts (and docs/architecture.md); names and tags are validated (src/core/names.ts) before they reach a
// store, and every store re-checks digests it is given.
//
// Two layers: each backend is a thin ObjectDriver (small objects, listing, batch delete, multipart leftovers) plus
// its own blob path (hash-verified writes, ranged reads), and ONE repository layer (repository.ts) implements tags,
// manifest links, listings and the registry's small keys over the driver for every backend.
import type { Readable } from 'node:stream';
import type { Signalled } from '@transship/core/signal';

// Signalled moved to core (every layer uses it); re-exported so the stores' own imports keep compiling.
export type { Signalled };

export interface BlobInfo {
  digest: string;
  size: number;
  /**
   * When the blob was written, ms since the epoch (S3 LastModified, fs mtime), where the answer carried it: what a
   * writer relying on the blob needs to know whether to touch it first (docs/gc.md, src/store/freshness.ts).
   */
  lastModified?: number | undefined;
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
  /** The store's id of this stage (S3: the multipart upload id). */
  readonly uploadId: string;
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
   * store already has it (then nothing is written and the outcome is 'exists'). With `verify`, the caller could not
   * (it never saw the bytes another process staged): the store reads the staged bytes back and hashes them before
   * anything becomes visible (TS_DIGEST_MISMATCH otherwise, and the stage is discarded) — unless `verify.etags`
   * matches the parts the earlier process checkpointed (StagedState.etags): then the parts are provably the bytes
   * that process hashed, and the caller holds that hash.
   */
  commit(digest: string, size: number, opts?: Signalled & { verify?: boolean | { etags: string } | undefined }): Promise<PutOutcome>;
  /**
   * Waits until every part queued so far is stored and says where the stage stands, so another process can continue
   * it (see StageOptions.resume). Throws when a part failed.
   */
  checkpoint(): Promise<StagedState>;
  /** Discards everything staged. Idempotent; a no-op after a successful commit. */
  abort(): Promise<void>;
  /**
   * Lets go of the stage without discarding it (another process continues it): parts in flight are cancelled and
   * waited for, what was checkpointed stays. Idempotent.
   */
  release(): Promise<void>;
}

/** Where a stage stands: enough for any process sharing the store to continue it. */
export interface StagedState {
  /** The store's id of the stage (S3: the multipart upload id). */
  uploadId: string;
  /** Parts stored, all of partSize bytes. */
  parts: number;
  /** Bytes in those parts. */
  bytes: number;
  /**
   * A digest of the parts' ETags (S3: each the MD5 of its part), when this process sent every part itself: whoever
   * continues the stage can tell the parts are still exactly those (a part re-sent since has another ETag).
   */
  etags?: string | undefined;
}

export interface StageOptions extends Signalled {
  /** A stable id for the stage (a registry upload's uuid), so other processes find its tail; default random. */
  id?: string | undefined;
  /** Continue a stage another process checkpointed instead of starting one. */
  resume?: StagedState | undefined;
}

/**
 * The bytes of a shared upload session that are not in a part yet (fewer than a part, or a session too small to
 * stage), kept beside the stage under the session's id so any instance can continue the session. One object per
 * session, overwritten by each checkpoint and tagged with the checkpoint's version.
 */
export interface StagedTails {
  put(id: string, version: string, body: Buffer, opts?: Signalled): Promise<void>;
  /** The tail and the version that wrote it, or undefined when there is none. */
  get(id: string, opts?: Signalled): Promise<{ version: string; body: Buffer } | undefined>;
  /** The version of the tail, without its body (HEAD), or undefined. */
  version(id: string, opts?: Signalled): Promise<string | undefined>;
  delete(id: string, opts?: Signalled): Promise<void>;
  /** Discards a stage by its state (a cancelled or abandoned session whose stage this process does not hold). */
  abortStage(id: string, uploadId: string): Promise<void>;
}

/** One object as a listing reports it. Keys are relative to the store (no bucket prefix, no directory). */
export interface ObjectInfo {
  key: string;
  size: number;
  /** Last modification, ms since the epoch (S3 LastModified; fs mtime). */
  lastModified: number;
  /** S3: the ETag without quotes (the body's MD5 for a single-PUT object). fs: undefined. */
  etag?: string | undefined;
}

export interface DeleteManyResult {
  /** Keys removed (or already absent: deleting is idempotent). */
  deleted: number;
  /** Keys the backend refused, with its reason; the others were still deleted. */
  errors: Array<{ key: string; code: string; message: string }>;
}

/** An upload the backend holds open (S3: a multipart upload, billed until completed or aborted). */
export interface PendingUpload {
  key: string;
  uploadId: string;
  /** When it was started, ms since the epoch. */
  initiated: number;
}

/**
 * The thin per-backend object layer: what the repository layer, migrate and garbage collection need, nothing about
 * OCI. Keys are relative to the store and are not validated beyond "no `.`, `..` or empty component" — callers build
 * them with keys.ts. Every call goes through the store's retry loop and request counts.
 */
export interface ObjectDriver {
  readonly name: string;
  /** A small object's body as text, or undefined when absent. */
  get(key: string, opts?: Signalled): Promise<string | undefined>;
  stat(key: string, opts?: Signalled): Promise<ObjectInfo | undefined>;
  /** Writes (or overwrites) a small object atomically: readers see the old body or the new one. */
  put(key: string, body: string, opts?: Signalled): Promise<void>;
  /**
   * Writes a small object only if the key is absent; true when this call wrote it. Atomic against concurrent
   * writers (S3: `If-None-Match: *`; fs: link(2) of a finished temp file), so it can carry a lease.
   */
  putIfAbsent(key: string, body: string, opts?: Signalled): Promise<boolean>;
  /** Idempotent. fs: empty parent directories are removed too (a deleted repository leaves no directory). */
  delete(key: string, opts?: Signalled): Promise<void>;
  /** Batch delete (S3: DeleteObjects, 1000 keys a request), reporting per-key failures instead of throwing. */
  deleteMany(keys: readonly string[], opts?: Signalled): Promise<DeleteManyResult>;
  /**
   * Every object whose key starts with `prefix`, any depth, in key order, streamed (S3: ListObjectsV2 pages of 1000;
   * fs: readdir + stat per directory): memory stays bounded whatever the store holds.
   */
  list(prefix: string, opts?: Signalled & { startAfter?: string | undefined }): AsyncIterable<ObjectInfo>;
  /** Uploads the backend holds open under `prefix` (S3: ListMultipartUploads; fs: none). */
  listUploads(prefix: string, opts?: Signalled): AsyncIterable<PendingUpload>;
  /** Aborts one pending upload; an upload already gone is not an error. */
  abortUpload(upload: PendingUpload, opts?: Signalled): Promise<void>;
}

export interface BlobStore {
  /** Display name, e.g. `s3://bucket/prefix` or `dir:/var/lib/transship`. */
  readonly name: string;
  /** The region this store lives in; every store has one from the start. */
  readonly region: string;
  /**
   * The backend's object driver (see ObjectDriver): for migrate and garbage collection, which walk the layout
   * itself. Everything else goes through the methods below.
   */
  readonly objects: ObjectDriver;

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
  /** Optional (S3): starts (or continues) a staged blob, see StagedBlob. Stores without it are written with putBlob only. */
  stageBlob?(opts?: StageOptions): Promise<StagedBlob>;
  /** Optional (S3): tails of shared upload sessions (see StagedTails); with stageBlob, sessions work on any instance. */
  readonly stagedTails?: StagedTails | undefined;
  /**
   * Optional: removes what crashed or killed writers left that is older than `olderThanMs` — S3: multipart uploads
   * and temporary objects of staged uploads; fs: temp files of interrupted writes (`.tmp/*.part`, counted as
   * objects). Live writes are younger than the limit: keep it well above the longest write.
   */
  sweepStaged?(olderThanMs: number, opts?: Signalled): Promise<{ multipart: number; objects: number }>;
  /** Optional: the temporary objects writes leave until they finish (fs: `.tmp/*.part`), for `verify` to report. */
  listTemporary?(opts?: Signalled): AsyncIterable<ObjectInfo>;
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
  /** Repositories with at least one tag or manifest link (nothing else makes a repository exist). */
  listRepos(opts?: Signalled): Promise<string[]>;

  /**
   * Small keys of the registry (blob and referrer links under `repos/`), placement (`_placement/`) and GC (`_gc/`).
   * Keys are built by keys.ts from validated names and digests and checked again here (checkMetaKey). Until a store
   * is migrated (`transship migrate`), reads also see the old layout's twin of a key (keys.ts, currentToLegacy).
   */
  putMetaIfAbsent(key: string, body: string, opts?: Signalled): Promise<void>;
  getMeta(key: string, opts?: Signalled): Promise<string | undefined>;
  hasMeta(key: string, opts?: Signalled): Promise<boolean>;
  /** Full keys under `prefix` (ending in '/'), any depth. */
  listMeta(prefix: string, opts?: Signalled): Promise<string[]>;
  deleteMeta(key: string, opts?: Signalled): Promise<void>;

  /** Optional: forget whether the store was migrated (`transship migrate` calls it after writing the marker). */
  layoutChanged?(): void;

  /** Counts of requests sent to the backend by operation (for --json summaries and benchmarks). */
  requestCounts(): Record<string, number>;
  close(): Promise<void>;
}
