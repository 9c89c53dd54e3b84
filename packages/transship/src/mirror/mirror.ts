// The pull-through mirror: the registry hook (registry/context.ts, MirrorHook) that serves mirrored repositories.
//
// A read is first answered from the store (a hit: the registry's own handler). What the store lacks is fetched
// from the upstream once — concurrent misses join the fetch in flight (in-flight.ts) — and stored in the same
// content-addressed store as pushed content, under the mirrored name (`docker.io/library/alpine`):
// - manifests: bytes as a blob → repository link → tag (with its fetch time, tag-clock.ts);
// - blobs: streamed to the clients while they are written to a local spool and from it to the store
//   (blob-fetch.ts); verified before anything is visible.
// A blob the store already holds (pushed, or mirrored from another upstream) is linked and served, not fetched.
// Tags are revalidated after their upstream's TTL with a HEAD and refetched only when the digest moved; when the
// upstream cannot answer (unreachable, 429, 5xx) the stored tag is served and marked stale.
//
// Unlike a push, a mirrored manifest is stored before its blobs: they are fetched when a client asks for them
// (pull-through), which is what lets the first pull of a large image start at once. GC treats mirrored
// repositories like any other: their manifests are roots, and a blob not yet fetched is simply not there.
import { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import { errorSummary, isTransshipError } from '@transship/core/errors';
import { log } from '@transship/core/log';
import { withSpan } from '@transship/core/tracing';
import { mirrorCoalescedWaitersTotal, mirrorRequestsTotal, mirrorUpstreamBytesTotal, mirrorUpstreamRequestsTotal, registryServedBytesTotal } from '../telemetry/metrics.js';
import type { Call, Handler, MirrorHook, RegistryContext } from '../registry/context.js';
import { RegistryError } from '../registry/errors.js';
import { parseRange } from '../registry/blobs.js';
import type { Target } from '../registry/paths.js';
import { parseManifest } from '../transfer/manifest.js';
import type { FetchedManifest } from '../transfer/types.js';
import { BlobFetch } from './blob-fetch.js';
import { InFlight } from './in-flight.js';
import { TagClock } from './tag-clock.js';
import { Upstreams, type MirrorRoute } from './upstreams.js';

export interface MirrorOptions {
  /** Where blob spools live while they are fetched (default: the OS temp dir; use serve.uploadDir). */
  dir?: string | undefined;
  /** Largest blob fetched when the upstream sends no size (serve.maxBodyBytes; default 16 GiB). */
  maxBlobBytes?: number | undefined;
  now?: (() => number) | undefined;
}

/** The response header that says how a mirrored read was answered. */
export const MIRROR_HEADER = 'x-transship-mirror';

/** Upstream failures after which a stored tag is served anyway (the upstream may be back later). */
const STALE_OK = new Set(['TS_NETWORK', 'TS_TIMEOUT', 'TS_THROTTLED', 'TS_BACKEND_UNAVAILABLE', 'TS_RETRY_EXHAUSTED', 'TS_RETRY_BUDGET_EXHAUSTED']);

type Result = 'hit' | 'miss' | 'stale';

interface Fetching {
  fetch: BlobFetch;
  /** Settles when the blob is stored (or could not be); the spool is gone after. */
  stored: Promise<void>;
}

export class Mirror implements MirrorHook {
  private readonly manifests = new InFlight<'same' | 'changed' | 'new'>();
  private readonly blobs = new InFlight<Fetching>();
  private readonly clock: TagClock;
  private readonly closing = new AbortController();
  private readonly dir: string;
  private readonly maxBlobBytes: number;
  /** Store writes of fetched blobs still running (drain() waits for them). */
  private readonly storing = new Set<Promise<void>>();

  constructor(
    readonly upstreams: Upstreams,
    opts: MirrorOptions = {},
  ) {
    this.dir = opts.dir ?? tmpdir();
    this.maxBlobBytes = opts.maxBlobBytes ?? 16 * 1024 ** 3;
    this.clock = new TagClock(opts.now);
  }

  intercept(name: string, kind: Target['kind'], method: string, query: URLSearchParams, local: Handler): { name: string; handler: Handler } | undefined {
    const route = this.upstreams.route(name, query.get('ns'));
    if (!route) return undefined;
    const read = method === 'GET' || method === 'HEAD';
    if (!read && !route.upstream.allowPush) {
      const handler: Handler = async () => {
        throw new RegistryError('DENIED', `repository ${route.name} mirrors ${route.upstream.registry}/${route.repo}: pushes and deletes are refused (mirror.upstreams[].allowPush)`, { name: route.name, upstream: route.upstream.registry });
      };
      return { name: route.name, handler };
    }
    if (read && kind === 'manifest') return { name: route.name, handler: (call) => this.manifest(call, route, local) };
    if (read && kind === 'blob') return { name: route.name, handler: (call) => this.blob(call, route, local) };
    // Tag lists and referrers answer what is stored; allowed pushes are stored here and never sent upstream.
    return { name: route.name, handler: local };
  }

  async close(): Promise<void> {
    this.closing.abort(new Error('mirror closing'));
    await this.drain();
  }

  /** Waits until every blob fetched so far is stored (or refused): tests and shutdown. */
  async drain(): Promise<void> {
    while (this.storing.size) await Promise.allSettled([...this.storing]);
  }

  // --- manifests ---

  private async manifest(call: Call, route: MirrorRoute, local: Handler): Promise<void> {
    if (call.target.kind !== 'manifest') return;
    const { ctx, signal } = call;
    const { reference } = call.target;
    if (reference.digest !== undefined) {
      // Content-addressed: once stored, served forever without asking the upstream.
      if (await ctx.store.hasManifestLink(route.name, reference.digest, { signal })) return this.served(call, 'manifest', 'hit', local);
      const digest = reference.digest;
      const { value, joined } = this.manifests.run(`${route.name}@${digest}`, () => this.fetchManifest(ctx, route, digest).then(() => 'new' as const));
      await this.upstreamOutcome(value, joined, 'manifest');
      return this.served(call, 'manifest', 'miss', local);
    }
    const tag = reference.tag;
    const stored = await ctx.store.getTag(route.name, tag, { signal });
    if (stored && (await this.clock.isFresh(ctx.store, route.name, tag, route.upstream.tagTtlMs, { signal }))) return this.served(call, 'manifest', 'hit', local);
    try {
      const { value, joined } = this.manifests.run(`${route.name}:${tag}`, () => this.refreshTag(ctx, route, tag, stored));
      const outcome = await this.upstreamOutcome(value, joined, 'manifest');
      return this.served(call, 'manifest', outcome === 'same' ? 'hit' : 'miss', local);
    } catch (err) {
      const code = errorSummary(err).code;
      if (!stored || !STALE_OK.has(code)) throw err;
      log.warn({ upstream: route.upstream.registry, repository: route.name, tag, err: errorSummary(err) }, 'mirror: upstream could not revalidate the tag; serving the stored one');
      return this.served(call, 'manifest', 'stale', local);
    }
  }

  /** Waits for a (possibly shared) upstream fetch; the caller's cancellation stops its wait, never the fetch. */
  private async upstreamOutcome<T>(value: Promise<T>, joined: boolean, kind: 'manifest' | 'blob'): Promise<T> {
    if (joined) mirrorCoalescedWaitersTotal.inc({ kind });
    try {
      return await value;
    } catch (err) {
      throw upstreamError(err);
    }
  }

  private async served(call: Call, kind: 'manifest' | 'blob', result: Result, local: Handler): Promise<void> {
    mirrorRequestsTotal.inc({ kind, result });
    call.reply.header(MIRROR_HEADER, result);
    await local(call);
  }

  /**
   * A tag that is not stored, or whose TTL ran out: HEAD it upstream when we hold it (a HEAD is not counted by
   * Docker Hub's pull limit), and fetch the manifest only when the digest moved or was never stored.
   */
  private async refreshTag(ctx: RegistryContext, route: MirrorRoute, tag: string, stored: string | undefined): Promise<'same' | 'changed' | 'new'> {
    const signal = this.closing.signal;
    const client = route.upstream.client(route.repo);
    let current: string | undefined;
    if (stored) {
      try {
        current = await this.upstream(route, 'manifest_head', () => client.headManifest(tag, { signal }));
      } catch (err) {
        // Gone upstream (or pushed here with allowPush): what we hold is all there is.
        if (!isTransshipError(err, 'TS_TAG_UNKNOWN')) throw err;
        current = stored;
      }
      if (current === stored) {
        // Written again so its modification time, the fetch time every instance reads, moves too.
        await ctx.store.putTag(route.name, tag, stored, { signal });
        this.clock.touch(route.name, tag);
        return 'same';
      }
    }
    await this.fetchManifest(ctx, route, current ?? tag, tag);
    return stored ? 'changed' : 'new';
  }

  /** Fetches a manifest (verified by the client against its digest), stores it, links it, and tags it. */
  private async fetchManifest(ctx: RegistryContext, route: MirrorRoute, reference: string, tag?: string): Promise<void> {
    const signal = this.closing.signal;
    const client = route.upstream.client(route.repo);
    const m = await this.upstream(route, 'manifest', () => client.fetchReference(reference, { signal }));
    mirrorUpstreamBytesTotal.inc({ upstream: route.upstream.registry }, m.bytes.length);
    await storeManifest(ctx, route.name, m, signal);
    if (tag !== undefined) {
      await ctx.store.putTag(route.name, tag, m.descriptor.digest, { signal });
      this.clock.touch(route.name, tag);
    }
  }

  /** One upstream call, with its span and its count by result. */
  private async upstream<T>(route: MirrorRoute, kind: 'manifest' | 'manifest_head' | 'blob', op: () => Promise<T>): Promise<T> {
    const upstream = route.upstream.registry;
    return withSpan('mirror.upstream.fetch', { 'mirror.upstream': upstream, 'mirror.kind': kind, 'registry.repository': route.name }, async () => {
      try {
        const out = await op();
        if (kind !== 'blob') mirrorUpstreamRequestsTotal.inc({ upstream, kind, result: 'ok' });
        return out;
      } catch (err) {
        mirrorUpstreamRequestsTotal.inc({ upstream, kind, result: resultOf(err) });
        throw err;
      }
    });
  }

  // --- blobs ---

  private async blob(call: Call, route: MirrorRoute, local: Handler): Promise<void> {
    if (call.target.kind !== 'blob') return;
    const { ctx, signal } = call;
    const { digest } = call.target;
    const running = this.blobs.has(digest);
    if (!running) {
      try {
        call.reply.header(MIRROR_HEADER, 'hit'); // before local() sends the response
        await local(call);
        mirrorRequestsTotal.inc({ kind: 'blob', result: 'hit' });
        return;
      } catch (err) {
        call.reply.removeHeader(MIRROR_HEADER);
        if (!isUnknownBlob(err)) throw err;
      }
      // Stored once: a blob the store holds for another repository (a push, another upstream) is linked here.
      if (await ctx.stat(digest, signal)) {
        if (ctx.links.opts.blobLinks) await ctx.links.linkBlob(route.name, digest, signal);
        return this.served(call, 'blob', 'hit', local);
      }
    }
    const { value, joined } = this.blobs.run(digest, () => this.startBlob(ctx, route, digest), (f) => f.stored);
    const { fetch } = await this.upstreamOutcome(value, joined, 'blob');
    // The fetch may have ended between joining and here: then the store has the blob (or the next miss fetches it).
    if (!this.sendSpooled(call, fetch)) return this.served(call, 'blob', 'hit', local);
    mirrorRequestsTotal.inc({ kind: 'blob', result: 'miss' });
  }

  private async startBlob(ctx: RegistryContext, route: MirrorRoute, digest: string): Promise<Fetching> {
    const signal = this.closing.signal;
    const upstream = route.upstream.registry;
    const opened = await this.upstream(route, 'blob', () => route.upstream.client(route.repo).openBlob(digest, { signal }));
    const fetch = await BlobFetch.start({
      digest,
      size: opened.size,
      body: opened.stream,
      dir: this.dir,
      maxBytes: this.maxBlobBytes,
      onBytes: (n) => mirrorUpstreamBytesTotal.inc({ upstream }, n),
    });
    const stored = this.storeFetched(ctx, route, fetch).finally(() => fetch.finish());
    this.storing.add(stored);
    void stored.finally(() => this.storing.delete(stored));
    return { fetch, stored };
  }

  /** From the spool into the store (putBlob verifies again), linked to the repository, and into the blob cache. */
  private async storeFetched(ctx: RegistryContext, route: MirrorRoute, fetch: BlobFetch): Promise<void> {
    const signal = this.closing.signal;
    const upstream = route.upstream.registry;
    try {
      // The store write follows the spool while it grows; it needs the size up front, so without a declared size
      // it starts once the body is complete.
      if (fetch.size === undefined) await fetch.verified;
      const size = fetch.size!;
      await ctx.storeBlob(fetch.digest, size, () => fetch.reader(), signal);
      await fetch.verified;
      mirrorUpstreamRequestsTotal.inc({ upstream, kind: 'blob', result: 'ok' });
      if (ctx.links.opts.blobLinks) await ctx.links.linkBlob(route.name, fetch.digest, signal);
      await ctx.blobCache?.adopt(fetch.digest, size, fetch.path);
    } catch (err) {
      const verdict = await fetch.verified.then(() => undefined, (e: unknown) => e);
      if (verdict) {
        mirrorUpstreamRequestsTotal.inc({ upstream, kind: 'blob', result: resultOf(verdict) });
        log.warn({ upstream, repository: route.name, digest: fetch.digest, err: errorSummary(verdict) }, 'mirror: the upstream blob was refused (not stored)');
      } else if (!signal.aborted) {
        mirrorUpstreamRequestsTotal.inc({ upstream, kind: 'blob', result: 'ok' });
        log.warn({ upstream, repository: route.name, digest: fetch.digest, err: errorSummary(err) }, 'mirror: a verified upstream blob could not be stored; the next miss fetches it again');
      }
    }
  }

  /**
   * Blob response from the spool: headers now, bytes as they arrive, the end only once the blob is verified. False
   * when the fetch is already over (its spool gone).
   */
  private sendSpooled(call: Call, fetch: BlobFetch): boolean {
    const { reply } = call;
    const size = fetch.size;
    const range = size === undefined ? undefined : parseRange(call.request.headers.range, size);
    let stream: Readable | undefined;
    try {
      if (call.method !== 'HEAD') stream = fetch.reader(range?.start ?? 0, range?.end);
    } catch (err) {
      if (isTransshipError(err, 'TS_BLOB_UNKNOWN')) return false;
      throw err;
    }
    reply.header('docker-content-digest', fetch.digest).header('etag', `"${fetch.digest}"`).header(MIRROR_HEADER, 'miss').type('application/octet-stream');
    if (size !== undefined) reply.header('accept-ranges', 'bytes');
    reply.code(range ? 206 : 200);
    if (range && size !== undefined) reply.header('content-range', `bytes ${range.start}-${range.end}/${size}`).header('content-length', String(range.end - range.start + 1));
    else if (size !== undefined) reply.header('content-length', String(size));
    if (!stream) {
      reply.send();
      return true;
    }
    const length = range ? range.end - range.start + 1 : size;
    if (length !== undefined) reply.raw.once('finish', () => registryServedBytesTotal.inc(length));
    reply.send(stream);
    return true;
  }
}

/** Writes a fetched manifest in the push's order: its bytes as a blob → repository link (the tag comes after). */
async function storeManifest(ctx: RegistryContext, name: string, m: FetchedManifest, signal: AbortSignal): Promise<void> {
  const { digest, mediaType } = m.descriptor;
  await ctx.storeBlob(digest, m.bytes.length, () => Readable.from([m.bytes]), signal);
  ctx.links.manifests.set(digest, m.bytes);
  // Served with the media type the upstream served it with, when its body does not say it and its shape implies
  // another (a Docker v2 manifest without `mediaType`), as a push with that Content-Type would be.
  if (!hasMediaTypeField(m.bytes) && parseManifest(m.bytes).mediaType !== mediaType) await ctx.links.setManifestMediaType(name, digest, mediaType, signal);
  await ctx.store.linkManifest(name, digest, { signal });
}

function hasMediaTypeField(bytes: Buffer): boolean {
  try {
    return typeof (JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown }).mediaType === 'string';
  } catch {
    return false;
  }
}

function isUnknownBlob(err: unknown): boolean {
  return (err instanceof RegistryError && err.code === 'BLOB_UNKNOWN') || isTransshipError(err, 'TS_BLOB_UNKNOWN');
}

/** The metrics label of an upstream failure. */
function resultOf(err: unknown): string {
  const code = errorSummary(err).code;
  if (code === 'TS_TAG_UNKNOWN' || code === 'TS_BLOB_UNKNOWN') return 'not_found';
  if (code === 'TS_UNAUTHORIZED') return 'unauthorized';
  if (code === 'TS_THROTTLED') return 'throttled';
  if (code === 'TS_DIGEST_MISMATCH' || code === 'TS_SIZE_MISMATCH') return 'digest_mismatch';
  if (STALE_OK.has(code)) return 'unavailable';
  return 'error';
}

/**
 * What the client is told when the upstream failed. Not-found stays not-found; the upstream refusing *our*
 * credentials is not the client's authentication problem (a 401 would send it to our token service), and content
 * that failed verification is the upstream's fault, not a bad request.
 */
function upstreamError(err: unknown): unknown {
  if (isTransshipError(err, 'TS_UNAUTHORIZED')) return new RegistryError('DENIED', 'the upstream registry refused the mirror access to this repository', {});
  if (isTransshipError(err, 'TS_DIGEST_MISMATCH') || isTransshipError(err, 'TS_SIZE_MISMATCH')) {
    return new RegistryError('UNAVAILABLE', 'the upstream registry served content that does not match its digest; nothing was stored', { code: err.code }, 502);
  }
  return err;
}
