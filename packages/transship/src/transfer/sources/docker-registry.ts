// `docker://HOST/REPO[:TAG|@DIGEST]`: pulling from a registry over the OCI distribution API with Node's fetch.
//
// Every HTTP exchange goes through the one observed retry (src/telemetry/observed-retry.ts: core/retry plus the
// upload_retry_total metrics) with the caller's signal; HTTP outcomes are
// mapped to our error table so the classifier decides: 401/403 → TS_UNAUTHORIZED (fatal: wrong credentials never
// get better), 404 → TS_TAG_UNKNOWN / TS_BLOB_UNKNOWN, 429 → TS_THROTTLED and 408/5xx → TS_BACKEND_UNAVAILABLE
// (retryable, honouring Retry-After), connection failures → TS_NETWORK. A 401 answered with a Bearer challenge is
// not a failure but the auth handshake: we fetch a token and replay once within the same attempt.
//
// What is served is verified: a manifest's bytes must hash to the digest it was asked by and to the
// Docker-Content-Digest the registry claims; blob streams are checked against their descriptor while they flow.
// Blob GETs follow redirects (registries hand out storage URLs); fetch drops Authorization on cross-origin hops,
// which is what presigned S3 URLs need.
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { digestOf, parseDigest, digestMismatch } from '@transship/core/digest';
import { cancelledError, isAbortError, isTransshipError, TransshipError } from '@transship/core/errors';
import { parseRetryAfter, type RetryBudget } from '@transship/core/retry';
import { observedRetry, type ObservedCall } from '@transship/core/observed-retry';
import { isDigestReference } from '@transship/core/reference';
import type { Signalled } from '@transship/core/signal';
import { ReadableStream } from 'node:stream/web';
import type { DockerReference } from '../reference.js';
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, MediaTypes, type Descriptor, type FetchedManifest, type ImageSource } from '../types.js';
import { parseManifest } from '../manifest.js';
import { basicHeader, credentialsFrom, parseChallenge, tokenFromResponse, type CachedToken, type RegistryCredentials } from './registry-auth.js';
import { checkBytes, MAX_MANIFEST_BYTES, readAll, verifiedStream } from './verify.js';

export const MANIFEST_ACCEPT = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerManifestList, MediaTypes.dockerManifest].join(', ');

export interface DockerRegistryOptions extends Signalled {
  /** Basic credentials (for the token service or a Basic registry); default from TRANSSHIP_REGISTRY_USER/PASSWORD. */
  credentials?: RegistryCredentials | undefined;
  /** Use http:// (always the case for localhost, 127.0.0.1 and [::1]). */
  insecure?: boolean | undefined;
  /** Retry policy overrides (attempts, delays) and a shared budget. */
  retry?: (NonNullable<ObservedCall['retry']> & { budget?: RetryBudget | undefined }) | undefined;
  /** Injectable for tests. */
  fetch?: typeof fetch | undefined;
  /** Our own bounds on a registry that accepts connections and then stalls (see RegistryTimeouts). */
  timeouts?: Partial<RegistryTimeouts> | undefined;
  userAgent?: string | undefined;
  /**
   * Fall back to TRANSSHIP_REGISTRY_USER/PASSWORD when `credentials` is absent (default true). A pull-through
   * mirror turns it off: an upstream configured without credentials is pulled anonymously, never with whatever
   * credentials the process environment holds for `copy`.
   */
  credentialsFromEnv?: boolean | undefined;
}

/**
 * undici's defaults wait 300 s for response headers and between body chunks, so a registry that accepts a
 * connection and never answers held `copy` for minutes. Each bound fails the attempt with TS_TIMEOUT, which the one
 * retry retries (the connection itself is bounded by undici's connect timeout, 10 s).
 */
export interface RegistryTimeouts {
  /** From sending a request to its response headers (includes connecting). */
  firstByteMs: number;
  /** Between two body chunks while the reader is waiting for one (a slow consumer does not count). */
  idleMs: number;
}

export const DEFAULT_REGISTRY_TIMEOUTS: RegistryTimeouts = { firstByteMs: 30_000, idleMs: 30_000 };

/** Token responses are small JSON documents; a service streaming more is refused while reading. */
const MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024;

const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/;

async function discard(res: Response): Promise<void> {
  await res.body?.cancel().catch(() => undefined);
}

type Kind = 'manifest' | 'blob' | 'token';

/** A blob response opened for a caller that verifies it (a mirror hashes it into its spool). */
export interface OpenedBlob {
  stream: Readable;
  /** From Content-Length, when the registry sent one. */
  size: number | undefined;
}

/** Maps a non-2xx response to the error table. */
function httpError(res: Response, kind: Kind, what: string): TransshipError {
  const status = res.status;
  const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
  const opts = { status, details: { status, what }, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };
  if (status === 401 || status === 403) return new TransshipError('TS_UNAUTHORIZED', `${what}: the registry refused access (HTTP ${status}); check TRANSSHIP_REGISTRY_USER/PASSWORD`, opts);
  if (status === 404) {
    return kind === 'blob' ? new TransshipError('TS_BLOB_UNKNOWN', `${what}: blob not found (HTTP 404)`, opts) : new TransshipError('TS_TAG_UNKNOWN', `${what}: not found (HTTP 404)`, opts);
  }
  if (status === 429) return new TransshipError('TS_THROTTLED', `${what}: the registry asked to slow down (HTTP 429)`, opts);
  if (status === 408 || status >= 500) return new TransshipError('TS_BACKEND_UNAVAILABLE', `${what}: registry error (HTTP ${status})`, opts);
  return new TransshipError('TS_BACKEND_REJECTED', `${what}: the registry rejected the request (HTTP ${status})`, opts);
}

/** fetch() failures: aborts stay aborts, everything else is a (retryable) network error with the cause's code. */
function networkError(err: unknown, url: string, signal: AbortSignal): unknown {
  if (signal.aborted) return cancelledError(signal);
  if (isAbortError(err) || isTransshipError(err)) return err;
  const cause = (err as { cause?: { code?: unknown; message?: unknown } }).cause;
  const code = typeof cause?.code === 'string' ? cause.code : undefined;
  return new TransshipError('TS_NETWORK', `cannot reach ${new URL(url).host}: ${code ?? (err as Error).message}`, { cause: err, details: { url, errno: code } });
}

export class DockerRegistrySource implements ImageSource {
  readonly description: string;
  private readonly base: string;
  private readonly fetchImpl: typeof fetch;
  private readonly credentials: RegistryCredentials | undefined;
  private auth: CachedToken | undefined;
  private rootManifest: FetchedManifest | undefined;

  constructor(
    readonly ref: DockerReference,
    private readonly opts: DockerRegistryOptions = {},
  ) {
    const scheme = opts.insecure || LOOPBACK.test(ref.endpoint) ? 'http' : 'https';
    this.base = `${scheme}://${ref.endpoint}/v2/${ref.repo}`;
    this.fetchImpl = opts.fetch ?? fetch;
    this.credentials = opts.credentialsFromEnv === false ? opts.credentials : credentialsFrom(opts.credentials);
    this.description = `docker://${ref.registry}/${ref.repo}${ref.digest ? `@${ref.digest}` : `:${ref.tag ?? 'latest'}`}`;
  }

  /** Creates the source and resolves the root manifest (so a missing tag or bad credentials fail at open). */
  static async open(ref: DockerReference, opts: DockerRegistryOptions = {}): Promise<DockerRegistrySource> {
    const src = new DockerRegistrySource(ref, opts);
    await src.root(opts);
    return src;
  }

  async root(opts: Signalled = {}): Promise<FetchedManifest> {
    if (!this.rootManifest) this.rootManifest = await this.fetchManifest(this.ref.digest ?? this.ref.tag ?? 'latest', undefined, opts.signal);
    return this.rootManifest;
  }

  async manifest(desc: Descriptor, opts: Signalled = {}): Promise<FetchedManifest> {
    return this.fetchManifest(parseDigest(desc.digest).value, desc, opts.signal);
  }

  async blob(desc: Descriptor, opts: Signalled & { callerVerifies?: boolean | undefined } = {}): Promise<Readable> {
    const digest = parseDigest(desc.digest).value;
    const what = `${this.description}: blob ${digest}`;
    const res = await this.request(`${this.base}/blobs/${digest}`, {}, 'blob', what, opts.signal);
    if (!res.body) throw new TransshipError('TS_BACKEND_REJECTED', `${what}: empty response body`);
    // Bounded while it flows: the verifier (ours or the caller's) fails on the first byte past the descriptor's size.
    return verifiedStream(Readable.fromWeb(this.idleGuarded(res.body as WebReadableStream<Uint8Array>, what)), { ...desc, digest }, opts.signal, opts.callerVerifies);
  }

  /**
   * A manifest by tag or digest, verified (against the digest asked for and the registry's Docker-Content-Digest).
   * Unlike root(), nothing is cached: a mirror asks again when a tag may have moved.
   */
  async fetchReference(reference: string, opts: Signalled = {}): Promise<FetchedManifest> {
    return this.fetchManifest(reference, undefined, opts.signal);
  }

  /**
   * HEAD of a manifest: the digest the registry says the reference names now (Docker-Content-Digest), undefined
   * when it did not say. A HEAD does not count against Docker Hub's pull rate limit, so a mirror revalidates tags
   * with it.
   */
  async headManifest(reference: string, opts: Signalled = {}): Promise<string | undefined> {
    const what = `${this.description}: manifest ${reference}`;
    return observedRetry(this.retryCall('manifest', opts.signal), async (s) => {
      const res = await this.send(`${this.base}/manifests/${reference}`, { accept: MANIFEST_ACCEPT }, 'manifest', what, s, 'HEAD');
      await discard(res);
      const claimed = res.headers.get('docker-content-digest');
      return claimed ? parseDigest(claimed).value : undefined;
    });
  }

  /**
   * A blob's response with its declared size and the body unread and unverified (bounded by the idle timeout): for a
   * caller that hashes the bytes itself before anything becomes visible. blob() is the verified form.
   */
  async openBlob(digest: string, opts: Signalled = {}): Promise<OpenedBlob> {
    const d = parseDigest(digest).value;
    const what = `${this.description}: blob ${d}`;
    const res = await this.request(`${this.base}/blobs/${d}`, {}, 'blob', what, opts.signal);
    if (!res.body) throw new TransshipError('TS_BACKEND_REJECTED', `${what}: empty response body`);
    const length = res.headers.get('content-length');
    const size = length !== null && /^\d+$/.test(length) ? Number(length) : undefined;
    return { stream: Readable.fromWeb(this.idleGuarded(res.body as WebReadableStream<Uint8Array>, what)), size };
  }

  async close(): Promise<void> {}

  private async fetchManifest(reference: string, expected: Descriptor | undefined, signal?: AbortSignal): Promise<FetchedManifest> {
    const what = `${this.description}: manifest ${reference}`;
    return observedRetry(this.retryCall('manifest', signal, isDigestReference(reference) ? reference : undefined), async (s) => {
      const res = await this.send(`${this.base}/manifests/${reference}`, { accept: MANIFEST_ACCEPT }, 'manifest', what, s);
      const length = Number(res.headers.get('content-length') ?? '0');
      if (length > MAX_MANIFEST_BYTES) {
        await discard(res);
        throw new TransshipError('TS_MANIFEST_INVALID', `${what} is ${length} bytes; the limit is ${MAX_MANIFEST_BYTES}`);
      }
      // Read with the limit enforced chunk by chunk: a registry streaming without end is cut off at the limit,
      // never buffered first (Content-Length may be absent or lie).
      const bytes = await this.readBody(res, MAX_MANIFEST_BYTES, what, s);
      // The registry's claim and our request must both agree with the bytes.
      const claimed = res.headers.get('docker-content-digest');
      if (claimed) {
        const d = parseDigest(claimed);
        const actual = digestOf(bytes, d.algorithm);
        if (actual !== d.value) throw digestMismatch(d.value, actual);
      }
      const byDigest = isDigestReference(reference) ? parseDigest(reference) : undefined;
      const digest = byDigest ? digestOf(bytes, byDigest.algorithm) : digestOf(bytes);
      if (byDigest && digest !== byDigest.value) throw digestMismatch(byDigest.value, digest);
      const contentType = (res.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
      // A Content-Type that is not a manifest type (application/json, octet-stream) says nothing about the document.
      const said = expected?.mediaType ?? (INDEX_MEDIA_TYPES.includes(contentType) || MANIFEST_MEDIA_TYPES.includes(contentType) ? contentType : undefined);
      const declared = parseManifest(bytes, said, what).mediaType;
      const descriptor: Descriptor = expected ? { ...expected } : { mediaType: declared, digest, size: bytes.length };
      if (expected) checkBytes(bytes, expected);
      return { descriptor, bytes };
    });
  }

  /** The observed retry of one exchange: `store` is the registry, `operation` what was asked. */
  private retryCall(kind: Kind, signal: AbortSignal | undefined, digest?: string): ObservedCall {
    const { budget, ...retry } = this.opts.retry ?? {};
    return { store: `docker://${this.ref.registry}`, operation: `registry.${kind}`, digest, signal: signal ?? this.opts.signal, budget, retry };
  }

  /** One retried GET that returns a 2xx response with its body unread. */
  private request(url: string, headers: Record<string, string>, kind: Kind, what: string, signal?: AbortSignal): Promise<Response> {
    return observedRetry(this.retryCall(kind, signal), (s) => this.send(url, headers, kind, what, s));
  }

  /** One attempt: GET with our auth; on a 401 challenge, authenticate and replay once. */
  private async send(url: string, headers: Record<string, string>, kind: Kind, what: string, signal: AbortSignal, method = 'GET'): Promise<Response> {
    let res = await this.get(url, headers, signal, method);
    if (res.status === 401) {
      const challenge = parseChallenge(res.headers.get('www-authenticate') ?? '');
      await discard(res);
      const before = this.auth?.header;
      await this.authenticate(challenge, what, signal);
      if (this.auth?.header === undefined || this.auth.header === before) throw httpError(res, kind, what);
      res = await this.get(url, headers, signal, method);
    }
    if (!res.ok) {
      await discard(res);
      throw httpError(res, kind, what);
    }
    return res;
  }

  private async get(url: string, headers: Record<string, string>, signal: AbortSignal, method = 'GET'): Promise<Response> {
    const h: Record<string, string> = { ...headers, 'user-agent': this.opts.userAgent ?? 'transship' };
    if (this.auth && this.auth.expiresAt > Date.now()) h.authorization = this.auth.header;
    return this.fetchTimed(url, { method, headers: h, redirect: 'follow' }, signal);
  }

  private get timeouts(): RegistryTimeouts {
    return { ...DEFAULT_REGISTRY_TIMEOUTS, ...(this.opts.timeouts ?? {}) };
  }

  /** fetch with our first-byte bound: no response headers within it → TS_TIMEOUT (retryable). */
  private async fetchTimed(url: string | URL, init: RequestInit, signal: AbortSignal): Promise<Response> {
    const ms = this.timeouts.firstByteMs;
    const timer = new AbortController();
    const t = setTimeout(() => timer.abort(new TransshipError('TS_TIMEOUT', `${new URL(url).host} sent no response within ${ms} ms`, { details: { url: String(url), timeoutMs: ms } })), ms);
    try {
      return await this.fetchImpl(url, { ...init, signal: AbortSignal.any([signal, timer.signal]) });
    } catch (err) {
      if (timer.signal.aborted && !signal.aborted) throw timer.signal.reason;
      throw networkError(err, String(url), signal);
    } finally {
      clearTimeout(t);
    }
  }

  /** A body stream that fails with TS_TIMEOUT when the server sends nothing for `idleMs` while we wait for a chunk. */
  private idleGuarded(body: WebReadableStream<Uint8Array>, what: string): WebReadableStream<Uint8Array> {
    const ms = this.timeouts.idleMs;
    const reader = body.getReader();
    return new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          let t: NodeJS.Timeout | undefined;
          const idle = new Promise<never>((_, reject) => {
            t = setTimeout(() => reject(new TransshipError('TS_TIMEOUT', `${what}: the registry sent nothing for ${ms} ms`, { details: { timeoutMs: ms } })), ms);
          });
          try {
            const r = await Promise.race([reader.read(), idle]);
            if (r.done) controller.close();
            else controller.enqueue(r.value);
          } catch (err) {
            await reader.cancel(err).catch(() => undefined);
            throw err;
          } finally {
            clearTimeout(t);
          }
        },
        cancel: (reason) => reader.cancel(reason),
      },
      { highWaterMark: 0 },
    );
  }

  /** A whole (small) response body, refused past `limit` bytes while it is read, guarded by the idle bound. */
  private async readBody(res: Response, limit: number, what: string, signal: AbortSignal): Promise<Buffer> {
    if (!res.body) return Buffer.alloc(0);
    try {
      return await readAll(Readable.fromWeb(this.idleGuarded(res.body as WebReadableStream<Uint8Array>, what)), limit, what, signal);
    } catch (err) {
      if (isTransshipError(err)) throw err;
      throw networkError(err, res.url || this.base, signal);
    }
  }

  private async authenticate(challenge: ReturnType<typeof parseChallenge>, what: string, signal: AbortSignal): Promise<void> {
    if (challenge?.scheme === 'basic') {
      if (this.credentials) this.auth = { header: basicHeader(this.credentials), expiresAt: Number.POSITIVE_INFINITY };
      return;
    }
    if (challenge?.scheme !== 'bearer' || !challenge.params.realm) return;
    let realm: URL;
    try {
      realm = new URL(challenge.params.realm);
    } catch (err) {
      throw new TransshipError('TS_UNAUTHORIZED', `${what}: the registry's token realm "${challenge.params.realm}" is not a URL`, { cause: err });
    }
    if (challenge.params.service) realm.searchParams.set('service', challenge.params.service);
    realm.searchParams.set('scope', challenge.params.scope ?? `repository:${this.ref.repo}:pull`);
    const headers: Record<string, string> = { 'user-agent': this.opts.userAgent ?? 'transship' };
    if (this.credentials) headers.authorization = basicHeader(this.credentials);
    const res = await this.fetchTimed(realm, { headers, redirect: 'follow' }, signal);
    if (!res.ok) {
      await discard(res);
      throw httpError(res, 'token', `${what}: token service ${realm.host}`);
    }
    const text = await this.readBody(res, MAX_TOKEN_RESPONSE_BYTES, `${what}: token service ${realm.host}`, signal);
    let body: unknown;
    try {
      body = JSON.parse(text.toString('utf8'));
    } catch (err) {
      throw new TransshipError('TS_UNAUTHORIZED', `${what}: the token service answered with malformed JSON`, { cause: err });
    }
    this.auth = tokenFromResponse(body);
  }
}
