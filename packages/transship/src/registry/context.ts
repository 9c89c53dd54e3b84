// What every registry handler shares: the store, the link helper, upload sessions, auth, options, and the two
// store operations with dedup rules (stat through the presence hint cache; write only what is not there yet).
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import type { BlobInfo, BlobStore, PutOutcome } from '../store/contract.js';
import { RegistryError } from './errors.js';
import { log } from '@transship/core/log';
import { blobSkippedBytesTotal, registryUploadContinuedTotal, s3PutSkippedDueToDedup } from '../telemetry/metrics.js';
import { Authenticator, type AuthConfig, type Identity } from './auth.js';
import { ExpiringMap } from '@transship/core/expiring-map';
import { PresenceCache, REGISTRY_HINT_TTL_MS } from '../index/presence-cache.js';
import { RepoLinks } from './links.js';
import { metaStoreFor, type MetaStore } from './meta.js';
import type { Target } from './paths.js';
import { UploadSessions, type SharedUploadsOptions, type UploadSessionsOptions } from './uploads.js';
import { UploadStateCodec, uploadStateSecret } from './upload-state.js';
import type { SpoolStreamer } from './spool-streamer.js';
import type { PlacedReader } from '../placement/read-path.js';
import { BlobCache, type BlobCacheOptions } from './blob-cache.js';
import { Freshness, type FreshnessOptions } from '../store/freshness.js';
import { PullRecorder, type PullRecorderOptions } from './pulls.js';

export interface RegistryOptions {
  store: BlobStore;
  /** Where registry links live; default: next to an FsStore, or in memory (see meta.ts). */
  meta?: MetaStore | undefined;
  uploadDir?: string | undefined;
  /** Largest blob accepted (default 16 GiB). */
  maxBodyBytes?: number | undefined;
  /** Largest manifest accepted (default 4 MiB, what the distribution spec suggests registries accept). */
  maxManifestBytes?: number | undefined;
  uploadIdleSeconds?: number | undefined;
  /** Open upload sessions at most (429 beyond; default 1000). */
  maxUploadSessions?: number | undefined;
  /** Bytes in all upload spools at most (429 beyond; default unbounded). */
  maxSpoolBytes?: number | undefined;
  allowDelete?: boolean | undefined;
  /** Record blob→repository links (default: on exactly when auth is on). */
  blobLinks?: boolean | undefined;
  auth?: AuthConfig | undefined;
  /** With regions configured: reads that miss the home store are lazy fetches from other regions. */
  placed?: PlacedReader | undefined;
  /**
   * Upload sessions larger than this are streamed to the store while they arrive (stores that can stage blobs,
   * i.e. S3). Default 32 MiB (the S3 store's multipart threshold); 0 turns streaming off.
   */
  streamUploadsAfterBytes?: number | undefined;
  /**
   * Answer blob GETs with a 307 to a presigned store URL (stores with blobUrl, i.e. S3), as Distribution does by
   * default: clients must reach the store's endpoint. Off by default.
   */
  redirect?: { expiresInSeconds: number } | undefined;
  /**
   * How long "blob present" answers are reused (ms, default REGISTRY_HINT_TTL_MS = 30 s; 0 = never). Must stay below
   * any GC grace: see maxPresenceHintMs in src/index/presence-cache.ts.
   */
  presenceTtlMs?: number | undefined;
  /** Keep blob bytes on local disk and answer GETs from there (blob-cache.ts); absent or maxBytes 0 = off. */
  blobCache?: BlobCacheOptions | undefined;
  /** The writers' half of the GC protocol (gc.refreshAfterSeconds, settleSeconds, clockSkewSeconds; docs/gc.md). */
  freshness?: FreshnessOptions | undefined;
  /** A pull-through mirror in front of the handlers of mirrored repositories (src/mirror). */
  mirror?: MirrorHook | undefined;
  /**
   * Record manifest GETs as pull markers for retention's pulledWithin (pulls.ts): on by default, one background
   * write per (repository, digest) per `periodMs` (default a day) per instance; false turns it off.
   */
  pulls?: PullRecorderOptions | false | undefined;
  /**
   * Upload sessions any instance sharing the store can continue (uploads.ts): on by default for stores that can
   * stage (S3). `secret` signs the state tokens; without it one is generated and kept in the store.
   */
  sharedUploads?: { enabled?: boolean | undefined; secret?: string | undefined } | undefined;
}

/**
 * The registry's one hook for a pull-through mirror (implemented in src/mirror, which sits above this layer): for a
 * request naming a repository, undefined when the repository is not mirrored; otherwise the name the request is
 * served (and authorized) under — `?ns=docker.io` + `library/alpine` is stored as `docker.io/library/alpine` — and
 * the handler to run instead of `local`, which it may call (a hit) after fetching what the store lacks (a miss).
 */
export interface MirrorHook {
  intercept(name: string, kind: Target['kind'], method: string, query: URLSearchParams, local: Handler): { name: string; handler: Handler } | undefined;
  close(): Promise<void>;
}

/** Staged uploads older than this are leftovers of a crashed instance. */
const STAGED_ORPHAN_AGE_MS = 24 * 3600 * 1000;
/** A listing answers "absent" for this long (a push's HEADs come within seconds of each other). */
const LISTING_FRESH_MS = 10_000;
/** Stores with more blobs than this (10 ListObjectsV2 pages) are not listed: HEAD per blob instead. */
const LISTING_MAX_BLOBS = 10_000;

export class RegistryContext {
  readonly store: BlobStore;
  readonly links: RepoLinks;
  readonly sessions: UploadSessions;
  readonly auth: Authenticator | undefined;
  readonly allowDelete: boolean;
  readonly placed: PlacedReader | undefined;
  readonly maxManifestBytes: number;
  readonly redirect: { expiresInSeconds: number } | undefined;
  readonly blobCache: BlobCache | undefined;
  /** Blobs a manifest relies on are fresh or touched before it becomes visible (store/freshness.ts). */
  readonly freshness: Freshness;
  readonly mirror: MirrorHook | undefined;
  /** Pull markers (pulls.ts); undefined when recording is off. */
  readonly pulls: PullRecorder | undefined;
  private readonly presence: PresenceCache;
  private readonly presenceTtl: number;

  constructor(opts: RegistryOptions) {
    this.store = opts.store;
    this.auth = opts.auth ? new Authenticator(opts.auth) : undefined;
    const regions = opts.placed?.regions;
    this.links = new RepoLinks(opts.store, opts.meta ?? metaStoreFor(opts.store), {
      blobLinks: opts.blobLinks ?? this.auth !== undefined,
      elsewhere: regions ? regions.others.map((r) => regions.store(r)) : [],
    });
    this.sessions = new UploadSessions({
      dir: opts.uploadDir ?? tmpdir(),
      idleMs: (opts.uploadIdleSeconds ?? 15 * 60) * 1000,
      maxBytes: opts.maxBodyBytes ?? 16 * 1024 ** 3,
      maxSessions: opts.maxUploadSessions,
      maxSpoolBytes: opts.maxSpoolBytes,
      stream: streamingFor(opts.store, opts.streamUploadsAfterBytes ?? 32 * 1024 ** 2),
      shared: sharingFor(opts.store, opts.sharedUploads, {
        storeBlob: (digest, size, open, signal) => this.storeBlob(digest, size, open, signal),
        readBlob: (digest, signal) => this.store.getBlob(digest, { signal }),
      }),
    });
    this.allowDelete = opts.allowDelete ?? false;
    this.placed = opts.placed;
    this.maxManifestBytes = opts.maxManifestBytes ?? 4 * 1024 * 1024;
    this.redirect = opts.redirect;
    this.presenceTtl = opts.presenceTtlMs ?? REGISTRY_HINT_TTL_MS;
    this.presence = new PresenceCache({ ttlMs: this.presenceTtl, maxEntries: 100_000 });
    this.blobCache = opts.blobCache && opts.blobCache.maxBytes > 0 ? new BlobCache(opts.blobCache) : undefined;
    this.freshness = new Freshness(opts.store, opts.freshness);
    this.mirror = opts.mirror;
    this.pulls = opts.pulls === false ? undefined : new PullRecorder(opts.store.objects, opts.pulls);
  }

  /**
   * Size of a stored blob (a recent positive answer is reused), or undefined. A miss triggers one listing of the
   * store's blobs (when the store is small enough to list in a few pages) instead of a HEAD per blob: a client
   * HEADs every blob of an image before pushing, and one listing answers all of them. A digest absent from a
   * listing younger than LISTING_FRESH_MS is answered 404 without asking again; if another instance wrote it
   * meanwhile, the client uploads it and our conditional PUT answers 412 — one request either way, never a
   * wrong "present".
   */
  async stat(digest: string, signal?: AbortSignal): Promise<BlobInfo | undefined> {
    const hit = this.known(digest);
    if (hit) return hit;
    if (await this.refreshListing(signal)) return this.known(digest);
    const info = await this.store.statBlob(digest, { signal });
    if (info) this.notePresent(digest, info.size, info.lastModified);
    return info;
  }

  private listedAt = 0;
  private listing: Promise<boolean> | undefined;

  /** True when a complete listing younger than LISTING_FRESH_MS is in the presence cache. */
  private async refreshListing(signal?: AbortSignal): Promise<boolean> {
    if (this.presenceTtl <= 0) return false;
    if (Date.now() - this.listedAt < Math.min(LISTING_FRESH_MS, this.presenceTtl)) return true;
    this.listing ??= (async () => {
      const started = Date.now();
      const found: BlobInfo[] = [];
      try {
        for await (const b of this.store.listBlobs({ signal })) {
          found.push(b);
          if (found.length > LISTING_MAX_BLOBS) return false; // a big store: HEAD per blob is cheaper
        }
      } catch {
        return false;
      }
      for (const b of found) this.notePresent(b.digest, b.size, b.lastModified);
      this.listedAt = started;
      return true;
    })().finally(() => {
      this.listing = undefined;
    });
    return this.listing;
  }

  async statMany(digests: string[], signal?: AbortSignal): Promise<Map<string, BlobInfo>> {
    const out = new Map<string, BlobInfo>();
    const unknown: string[] = [];
    for (const d of digests) {
      const hit = this.known(d);
      if (hit) out.set(d, hit);
      else unknown.push(d);
    }
    if (unknown.length) {
      for (const [d, info] of await this.store.statBlobs(unknown, { signal })) {
        this.notePresent(d, info.size, info.lastModified);
        out.set(d, info);
      }
    }
    return out;
  }

  /**
   * A presigned URL for `digest` (redirect mode). One URL is handed to every client for the first half of its
   * lifetime, so a fleet pulling the same image costs one signature per blob, not one per GET; every client still
   * gets at least half the configured validity.
   */
  async redirectUrl(digest: string, expiresInSeconds: number): Promise<string | undefined> {
    if (!this.store.blobUrl) return undefined;
    this.signedUrls ??= new ExpiringMap({ ttlMs: (expiresInSeconds * 1000) / 2, maxEntries: 10_000 });
    const hit = this.signedUrls.get(digest);
    if (hit) return hit;
    const url = await this.store.blobUrl(digest, { expiresInSeconds });
    this.signedUrls.set(digest, url);
    return url;
  }

  private signedUrls: ExpiringMap<string> | undefined;

  /**
   * A recent "present" answer, without asking the store; with the blob's write time when the answer carried one, so
   * the GC protocol (store/freshness.ts) need not ask again whether a fresh blob needs a touch.
   */
  known(digest: string): BlobInfo | undefined {
    const hint = this.presence.get(this.store.name, digest);
    if (hint?.size === undefined) return undefined;
    return { digest, size: hint.size, ...(hint.fresh === undefined ? {} : { lastModified: hint.fresh }) };
  }

  notePresent(digest: string, size: number, lastModified?: number): void {
    this.presence.markPresent(this.store.name, [digest], { size, ...(lastModified === undefined ? {} : { freshness: new Map([[digest, lastModified]]) }) });
  }

  forget(digest: string): void {
    this.presence.invalidate(this.store.name, digest);
  }

  /**
   * Writes a verified blob unless this instance recently saw it present. There is no HEAD before the write: the
   * store's conditional PUT (412 = already there) is the existence check, and for bodies over ~2 MiB the SDK's
   * `Expect: 100-continue` lets the backend refuse before any byte moves. Clients HEAD before they upload, so a
   * known blob rarely gets here at all.
   */
  async storeBlob(digest: string, size: number, open: () => Readable | Promise<Readable>, signal?: AbortSignal, streamed?: SpoolStreamer): Promise<'written' | 'exists'> {
    if (this.known(digest)) {
      await streamed?.abandon();
      s3PutSkippedDueToDedup.inc({ reason: 'exists' });
      blobSkippedBytesTotal.inc({ store: this.store.name }, size);
      return 'exists';
    }
    // A session streamed while it arrived only needs its tail sent; otherwise (or if streaming gave up) one upload.
    const out = (await streamed?.commit(digest, size, signal)) ?? (await this.store.putBlob(digest, open, { size, signal }));
    return this.stored(digest, size, out);
  }

  /**
   * Stores a shared upload session that continued another instance's stage: nobody here saw all its bytes, so the
   * store reads them back to check `digest` (DIGEST_INVALID otherwise, nothing stored). No "known" shortcut: the
   * caller links the blob to its repository afterwards, which only verified bytes may earn.
   */
  async storeStaged(digest: string, size: number, streamed: SpoolStreamer | undefined, signal?: AbortSignal, vouched?: { etags: string }): Promise<'written' | 'exists'> {
    // A mismatch is TS_DIGEST_MISMATCH (→ DIGEST_INVALID); a stage that is not what the token says is
    // TS_UPLOAD_STATE_INVALID (→ BLOB_UPLOAD_UNKNOWN: the client starts that blob again). `vouched`: the instance
    // that staged every part hashed every byte (uploads.ts); the store still checks the parts are the ones it sent.
    const out = await streamed?.commit(digest, size, signal, vouched ?? true);
    if (!out) throw new RegistryError('BLOB_UPLOAD_INVALID', 'the staged upload could not be committed; start the upload again', {});
    registryUploadContinuedTotal.inc({ event: vouched ? 'commit_vouched' : 'commit_reread' });
    return this.stored(digest, size, out);
  }

  private stored(digest: string, size: number, out: PutOutcome): 'written' | 'exists' {
    if (out.status === 'exists') {
      s3PutSkippedDueToDedup.inc({ reason: 'conditional_412' });
      blobSkippedBytesTotal.inc({ store: this.store.name }, size);
    }
    this.notePresent(digest, out.size);
    if (out.status === 'written') this.freshness.noteWritten(digest);
    return out.status;
  }

  private readonly closing = new AbortController();
  private sweeping: Promise<void> | undefined;

  /**
   * In the background: removes staged uploads that crashed instances left behind. Only those older than a day are
   * touched — longer than any live upload of another instance — so every instance can run it at start.
   */
  sweepStaged(): Promise<void> {
    if (!this.store.sweepStaged) return Promise.resolve();
    if (this.sweeping) return this.sweeping; // once per instance; callers may wait for it
    this.sweeping = this.store
      .sweepStaged(STAGED_ORPHAN_AGE_MS, { signal: this.closing.signal })
      .then((r) => {
        if (r.multipart || r.objects) log.info({ store: this.store.name, ...r }, 'removed staged uploads left by a crashed instance');
      })
      .catch((err: unknown) => {
        if (!this.closing.signal.aborted) log.warn({ err, store: this.store.name }, 'could not sweep old staged uploads; a bucket lifecycle rule (AbortIncompleteMultipartUpload) covers them too');
      });
    return this.sweeping;
  }

  async close(): Promise<void> {
    this.closing.abort(new Error('registry closing'));
    await this.mirror?.close();
    await this.pulls?.close();
    this.blobCache?.close();
    await this.sweeping;
    await this.sessions.close();
    await this.links.meta.close();
  }
}

/** Shared sessions need a store that stages blobs and keeps tails (S3); on by default there. */
function sharingFor(store: BlobStore, opts: RegistryOptions['sharedUploads'], blobs: Pick<SharedUploadsOptions, 'storeBlob' | 'readBlob'>): UploadSessionsOptions['shared'] {
  if (opts?.enabled === false || !store.stageBlob || !store.stagedTails) return undefined;
  const stageBlob = store.stageBlob.bind(store);
  return {
    ...blobs,
    store: { stageBlob },
    tails: store.stagedTails,
    codec: async () => new UploadStateCodec(await uploadStateSecret(store.objects, opts?.secret)),
  };
}

function streamingFor(store: BlobStore, afterBytes: number): UploadSessionsOptions['stream'] {
  if (afterBytes <= 0 || !store.stageBlob) return undefined;
  const stageBlob = store.stageBlob.bind(store);
  return { store: { stageBlob }, afterBytes };
}

/** One registry request, parsed and authenticated, as handlers see it. */
export interface Call {
  ctx: RegistryContext;
  target: Target;
  method: string;
  query: URLSearchParams;
  request: FastifyRequest;
  reply: FastifyReply;
  /** Aborted when the client goes away: passed to every store call. */
  signal: AbortSignal;
  identity: Identity;
}

export type Handler = (call: Call) => Promise<void>;
