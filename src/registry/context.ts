// What every registry handler shares: the store, the link helper, upload sessions, auth, options, and the two
// store operations with dedup rules (stat through the presence hint cache; write only what is not there yet).
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import type { BlobInfo, BlobStore } from '../store/contract.js';
import { blobSkippedBytesTotal, s3PutSkippedDueToDedup } from '../telemetry/metrics.js';
import { Authenticator, type AuthConfig, type Identity } from './auth.js';
import { TtlCache } from './cache.js';
import { RepoLinks } from './links.js';
import { metaStoreFor, type MetaStore } from './meta.js';
import type { Target } from './paths.js';
import { UploadSessions } from './uploads.js';

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
  allowDelete?: boolean | undefined;
  /** Record blob→repository links (default: on exactly when auth is on). */
  blobLinks?: boolean | undefined;
  auth?: AuthConfig | undefined;
  /** How long "blob present" answers are reused (ms, default 30 s; 0 = never). Must stay below any GC grace. */
  presenceTtlMs?: number | undefined;
}

export class RegistryContext {
  readonly store: BlobStore;
  readonly links: RepoLinks;
  readonly sessions: UploadSessions;
  readonly auth: Authenticator | undefined;
  readonly allowDelete: boolean;
  readonly maxManifestBytes: number;
  private readonly presence: TtlCache<BlobInfo>;

  constructor(opts: RegistryOptions) {
    this.store = opts.store;
    this.auth = opts.auth ? new Authenticator(opts.auth) : undefined;
    this.links = new RepoLinks(opts.store, opts.meta ?? metaStoreFor(opts.store), { blobLinks: opts.blobLinks ?? this.auth !== undefined });
    this.sessions = new UploadSessions({
      dir: opts.uploadDir ?? tmpdir(),
      idleMs: (opts.uploadIdleSeconds ?? 15 * 60) * 1000,
      maxBytes: opts.maxBodyBytes ?? 16 * 1024 ** 3,
    });
    this.allowDelete = opts.allowDelete ?? false;
    this.maxManifestBytes = opts.maxManifestBytes ?? 4 * 1024 * 1024;
    this.presence = new TtlCache(opts.presenceTtlMs ?? 30_000);
  }

  /** Size of a stored blob (a recent positive answer is reused), or undefined. */
  async stat(digest: string, signal?: AbortSignal): Promise<BlobInfo | undefined> {
    const hit = this.presence.get(digest);
    if (hit) return hit;
    const info = await this.store.statBlob(digest, { signal });
    if (info) this.presence.set(digest, info);
    return info;
  }

  async statMany(digests: string[], signal?: AbortSignal): Promise<Map<string, BlobInfo>> {
    const out = new Map<string, BlobInfo>();
    const unknown: string[] = [];
    for (const d of digests) {
      const hit = this.presence.get(d);
      if (hit) out.set(d, hit);
      else unknown.push(d);
    }
    if (unknown.length) {
      for (const [d, info] of await this.store.statBlobs(unknown, { signal })) {
        this.presence.set(d, info);
        out.set(d, info);
      }
    }
    return out;
  }

  forget(digest: string): void {
    this.presence.delete(digest);
  }

  /**
   * Writes a verified blob unless this instance recently saw it present. There is no HEAD before the write: the
   * store's conditional PUT (412 = already there) is the existence check, and for bodies over ~2 MiB the SDK's
   * `Expect: 100-continue` lets the backend refuse before any byte moves. Clients HEAD before they upload, so a
   * known blob rarely gets here at all.
   */
  async storeBlob(digest: string, size: number, open: () => Readable, signal?: AbortSignal): Promise<'written' | 'exists'> {
    if (this.presence.get(digest)) {
      s3PutSkippedDueToDedup.inc({ reason: 'exists' });
      blobSkippedBytesTotal.inc({ store: this.store.name }, size);
      return 'exists';
    }
    const out = await this.store.putBlob(digest, open, { size, signal });
    if (out.status === 'exists') {
      s3PutSkippedDueToDedup.inc({ reason: 'conditional_412' });
      blobSkippedBytesTotal.inc({ store: this.store.name }, size);
    }
    this.presence.set(digest, { digest, size: out.size });
    return out.status;
  }

  async close(): Promise<void> {
    await this.sessions.close();
    await this.links.meta.close();
  }
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
