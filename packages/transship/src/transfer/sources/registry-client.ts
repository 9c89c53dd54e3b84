// The HTTP side of talking to an OCI distribution registry, shared by the docker:// source (pulls), the docker://
// destination (pushes) and `ls`/`inspect`: one place for the auth handshake, our timeouts, the error mapping and
// the one observed retry.
//
// Every exchange goes through the one observed retry (core/observed-retry: upload_retry_total, spans, logs) with the
// caller's signal; HTTP outcomes are mapped to our error table so the classifier decides: 401/403 → TS_UNAUTHORIZED
// (fatal: wrong credentials or a missing permission never get better by retrying), 404 → TS_TAG_UNKNOWN /
// TS_BLOB_UNKNOWN, 429 → TS_THROTTLED and 408/5xx → TS_BACKEND_UNAVAILABLE (retryable, honouring Retry-After),
// connection failures → TS_NETWORK. A 401 answered with a challenge is not a failure but the auth handshake: we
// authenticate (Bearer: a token from the realm for the challenge's scope plus the scopes this client needs; Basic:
// the credentials) and replay once within the same attempt. A replay that is refused again is TS_UNAUTHORIZED.
import type { Readable } from 'node:stream';
import { Readable as NodeReadable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { ReadableStream } from 'node:stream/web';
import { cancelledError, isAbortError, isTransshipError, TransshipError } from '@transship/core/errors';
import { parseRetryAfter, type RetryBudget } from '@transship/core/retry';
import { observedRetry, type ObservedCall } from '@transship/core/observed-retry';
import type { Signalled } from '@transship/core/signal';
import { basicHeader, credentialsFrom, parseChallenge, tokenFromResponse, type CachedToken, type Challenge, type RegistryCredentials } from './registry-auth.js';
import { readAll } from './verify.js';

export interface RegistryClientOptions extends Signalled {
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
/** Tag and catalog pages are JSON lists; one page larger than this is refused while reading. */
const MAX_LIST_PAGE_BYTES = 16 * 1024 * 1024;

const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/;

export type Kind = 'manifest' | 'blob' | 'token' | 'upload' | 'list';

export async function discard(res: Response): Promise<void> {
  await res.body?.cancel().catch(() => undefined);
}

/** Maps a non-2xx response to the error table. */
export function httpError(res: Response, kind: Kind, what: string): TransshipError {
  const status = res.status;
  const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
  const opts = { status, details: { status, what }, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };
  if (status === 401 || status === 403) {
    return new TransshipError('TS_UNAUTHORIZED', `${what}: the registry refused access (HTTP ${status}); check the credentials (--creds, --src-creds/--dest-creds, the auth file) and that the account may do this`, opts);
  }
  if (status === 404) {
    if (kind === 'blob') return new TransshipError('TS_BLOB_UNKNOWN', `${what}: blob not found (HTTP 404)`, opts);
    if (kind === 'upload') return new TransshipError('TS_BACKEND_REJECTED', `${what}: the registry lost the upload session (HTTP 404)`, opts);
    return new TransshipError('TS_TAG_UNKNOWN', `${what}: not found (HTTP 404)`, opts);
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

/** Bodies above this are streamed from the caller's buffer (see bodyInit). */
const STREAMED_BODY_BYTES = 1024 * 1024;

/**
 * fetch copies a Buffer body into a fresh ArrayBuffer; for 8 MiB PATCH chunks that is 8 MiB of external memory per
 * request, freed whenever the GC gets to it (peak RSS of a 300 MB push: +140 MiB). Large bodies are therefore sent
 * as an iterable of views of the caller's buffer (no copy; Content-Length is still the caller's), which a retry
 * simply iterates again.
 */
function bodyInit(body: Buffer | undefined): { body?: RequestInit['body']; duplex?: 'half' } {
  if (!body) return {};
  if (body.length <= STREAMED_BODY_BYTES) return { body };
  const views = async function* (): AsyncGenerator<Buffer> {
    for (let i = 0; i < body.length; i += STREAMED_BODY_BYTES) yield body.subarray(i, i + STREAMED_BODY_BYTES);
  };
  return { body: views(), duplex: 'half' };
}

export interface RegistryRequest {
  method?: string | undefined;
  /** Absolute URL, or a path under `/v2/`. */
  url: string;
  headers?: Record<string, string> | undefined;
  /** Buffers only: a retried request sends them again. */
  body?: Buffer | undefined;
  kind: Kind;
  what: string;
  /** Statuses that are answers, not errors (HEAD 404 = absent); returned with the body unread. */
  accept?: readonly number[] | undefined;
  /** Follow redirects (blob GETs: registries hand out storage URLs). Default: only for GET. */
  follow?: boolean | undefined;
}

export class RegistryClient {
  /** `http[s]://endpoint` */
  readonly origin: string;
  private readonly fetchImpl: typeof fetch;
  private readonly credentials: RegistryCredentials | undefined;
  private auth: CachedToken | undefined;
  /** Scopes this client asks for whenever it fetches a token (a push needs pull,push on its repository). */
  private readonly scopes = new Set<string>();
  private readonly counts: Record<string, number> = {};
  private pinged: Promise<void> | undefined;

  constructor(
    /** How the registry was named (`docker.io`, `localhost:5000`): for messages and metrics. */
    readonly registry: string,
    /** Host[:port] the API is served from. */
    readonly endpoint: string,
    private readonly opts: RegistryClientOptions = {},
  ) {
    this.origin = `${opts.insecure || LOOPBACK.test(endpoint) ? 'http' : 'https'}://${endpoint}`;
    this.fetchImpl = opts.fetch ?? fetch;
    this.credentials = opts.credentialsFromEnv === false ? opts.credentials : credentialsFrom(opts.credentials);
  }

  /** Adds a scope every token request includes (e.g. `repository:team/app:pull,push`). */
  want(scope: string): void {
    this.scopes.add(scope);
  }

  /** Requests sent, by method (what `copy --json` reports as `requests`). */
  requestCounts(): Record<string, number> {
    return { ...this.counts };
  }

  url(path: string): string {
    return path.startsWith('http://') || path.startsWith('https://') ? path : `${this.origin}/v2/${path}`;
  }

  /** The observed retry of one exchange: `store` is the registry, `operation` what was asked. */
  retryCall(kind: Kind, signal: AbortSignal | undefined, digest?: string): ObservedCall {
    const { budget, ...retry } = this.opts.retry ?? {};
    return { store: `docker://${this.registry}`, operation: `registry.${kind}`, digest, signal: signal ?? this.opts.signal, budget, retry };
  }

  /** `op` under the one observed retry. */
  retry<T>(kind: Kind, signal: AbortSignal | undefined, op: (signal: AbortSignal) => Promise<T>, digest?: string): Promise<T> {
    return observedRetry(this.retryCall(kind, signal, digest), op);
  }

  /** One retried request that returns a 2xx (or accepted) response with its body unread. */
  request(req: RegistryRequest, signal?: AbortSignal): Promise<Response> {
    return this.retry(req.kind, signal, (s) => this.send(req, s));
  }

  /**
   * The version check (`GET /v2/`) once per client, before the first real request: it tells which auth the
   * registry wants, so credentials (or a token for every scope this client needs) go out with the first real
   * request. Without it, each of the parallel HEADs a push starts with met the challenge and was sent twice
   * (measured against Distribution with htpasswd: 22 requests for a fresh push where skopeo sends 18).
   */
  private ping(signal: AbortSignal): Promise<void> {
    this.pinged ??= (async () => {
      const res = await this.exchange({ url: '', kind: 'list', what: `docker://${this.registry}: version check` }, undefined, signal);
      await discard(res);
      if (res.status === 401) await this.authenticate(parseChallenge(res.headers.get('www-authenticate') ?? ''), `docker://${this.registry}`, signal);
    })().catch((err: unknown) => {
      // A failed check is asked again next time (and the request itself reports what is wrong).
      this.pinged = undefined;
      throw err;
    });
    return this.pinged;
  }

  /** One attempt: the request with our auth; on a 401 challenge, authenticate and replay once. */
  async send(req: RegistryRequest, signal: AbortSignal): Promise<Response> {
    await this.ping(signal);
    const sent = this.currentAuth();
    let res = await this.exchange(req, sent, signal);
    if (res.status === 401) {
      const challenge = parseChallenge(res.headers.get('www-authenticate') ?? '');
      await discard(res);
      // Parallel requests meet the same challenge: one that went out before a sibling authenticated just replays
      // with the sibling's credentials; only a refusal of what we already sent asks the token service again.
      if (this.currentAuth() === sent) await this.authenticate(challenge, req.what, signal);
      const now = this.currentAuth();
      if (now === undefined || now === sent) throw httpError(res, req.kind, req.what);
      res = await this.exchange(req, now, signal);
    }
    if (!res.ok && !req.accept?.includes(res.status)) {
      await discard(res);
      throw httpError(res, req.kind, req.what);
    }
    return res;
  }

  /** The Authorization header requests carry now (undefined before any challenge or once a token expired). */
  private currentAuth(): string | undefined {
    return this.auth && this.auth.expiresAt > Date.now() ? this.auth.header : undefined;
  }

  private exchange(req: RegistryRequest, authorization: string | undefined, signal: AbortSignal): Promise<Response> {
    const method = req.method ?? 'GET';
    const h: Record<string, string> = { ...(req.headers ?? {}), 'user-agent': this.opts.userAgent ?? 'transship' };
    if (authorization) h.authorization = authorization;
    this.counts[method] = (this.counts[method] ?? 0) + 1;
    return this.fetchTimed(this.url(req.url), { method, headers: h, redirect: (req.follow ?? method === 'GET') ? 'follow' : 'manual', ...bodyInit(req.body) }, signal);
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

  /** A response body as a Node stream that fails with TS_TIMEOUT when the server sends nothing for `idleMs`. */
  bodyStream(res: Response, what: string): Readable {
    if (!res.body) throw new TransshipError('TS_BACKEND_REJECTED', `${what}: empty response body`);
    return NodeReadable.fromWeb(this.idleGuarded(res.body as WebReadableStream<Uint8Array>, what));
  }

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
  async readBody(res: Response, limit: number, what: string, signal: AbortSignal): Promise<Buffer> {
    if (!res.body) return Buffer.alloc(0);
    try {
      return await readAll(NodeReadable.fromWeb(this.idleGuarded(res.body as WebReadableStream<Uint8Array>, what)), limit, what, signal);
    } catch (err) {
      if (isTransshipError(err)) throw err;
      throw networkError(err, res.url || this.origin, signal);
    }
  }

  /** Every page of a paginated list (`tags/list`, `_catalog`): follows `Link: <…>; rel="next"` until there is none. */
  async listPages<T>(path: string, what: string, pick: (doc: Record<string, unknown>) => T[], signal?: AbortSignal): Promise<T[]> {
    const out: T[] = [];
    let next: string | undefined = this.url(path);
    for (let page = 0; next; page++) {
      if (page >= 10_000) throw new TransshipError('TS_BACKEND_REJECTED', `${what}: more than 10000 pages; the registry's Link headers loop`);
      const url: string = next;
      const { doc, link } = await this.retry('list', signal, async (s) => {
        const res = await this.send({ url, kind: 'list', what, headers: { accept: 'application/json' } }, s);
        const text = await this.readBody(res, MAX_LIST_PAGE_BYTES, what, s);
        let parsed: unknown;
        try {
          parsed = JSON.parse(text.toString('utf8'));
        } catch (err) {
          throw new TransshipError('TS_BACKEND_REJECTED', `${what}: the registry answered with malformed JSON`, { cause: err });
        }
        return { doc: (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>, link: res.headers.get('link') };
      });
      out.push(...pick(doc));
      const rel = link ? /<([^>]+)>\s*;\s*rel="?next"?/i.exec(link)?.[1] : undefined;
      next = rel ? new URL(rel, url).toString() : undefined;
    }
    return out;
  }

  /** Every tag of `repo` (`tags/list`, all pages). */
  async tags(repo: string, signal?: AbortSignal): Promise<string[]> {
    return this.listPages(`${repo}/tags/list?n=1000`, `docker://${this.registry}/${repo}: tags`, (doc) => (Array.isArray(doc.tags) ? doc.tags.filter((t): t is string => typeof t === 'string') : []), signal);
  }

  /** Every repository the registry lists to us (`_catalog`, all pages; registries may refuse or filter it). */
  async catalog(signal?: AbortSignal): Promise<string[]> {
    return this.listPages('_catalog?n=1000', `docker://${this.registry}: catalog`, (doc) => (Array.isArray(doc.repositories) ? doc.repositories.filter((t): t is string => typeof t === 'string') : []), signal);
  }

  /** The digest a tag names (HEAD, Docker-Content-Digest), undefined when the registry does not say. */
  async tagDigest(repo: string, tag: string, accept: string, signal?: AbortSignal): Promise<string | undefined> {
    const res = await this.request({ method: 'HEAD', url: `${repo}/manifests/${tag}`, kind: 'manifest', what: `docker://${this.registry}/${repo}:${tag}`, headers: { accept } }, signal);
    await discard(res);
    return res.headers.get('docker-content-digest') ?? undefined;
  }

  private async authenticate(challenge: Challenge | undefined, what: string, signal: AbortSignal): Promise<void> {
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
    // What the registry asked for, plus what this client will need next (so a push does not re-authenticate per
    // request); the token service grants what it allows and the registry decides.
    const scopes = new Set([...(challenge.params.scope ?? '').split(' ').filter(Boolean), ...this.scopes]);
    for (const s of scopes) realm.searchParams.append('scope', s);
    const headers: Record<string, string> = { 'user-agent': this.opts.userAgent ?? 'transship' };
    if (this.credentials) headers.authorization = basicHeader(this.credentials);
    this.counts.GET = (this.counts.GET ?? 0) + 1;
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
