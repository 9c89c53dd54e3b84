// Design note: a loopback reverse proxy in front of a real S3 endpoint, so tests can count what a client really
// sent (the project promises never to pay for a request twice) and inject the failures S3 produces in the wild
// (503 SlowDown, 403, dropped connections, latency) into an otherwise real conversation.
//
// Signatures: SigV4 covers the `host` header, and a client pointed at the proxy signs the proxy's host:port. The
// proxy forwards the request head byte-for-byte (`rawHeaders`, Host included) and RGW verifies the signature
// against the Host it receives, so the signature stays valid without re-signing. Bodies are streamed both ways
// with backpressure (uploads may be 1 GiB). Clients must use path-style URLs (`/bucket/key`), as the project does.
//
// Faults are drawn from a seeded PRNG, one draw per eligible request in arrival order, so a serial client sees
// the same faults on every run.
import { Agent, createServer, request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Transform, finished, pipeline } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * `corrupt` forwards the request and flips one byte of the response body (bytes damaged in flight on the way
 * down); `corruptUpload` flips one byte of the request body instead (damaged on the way up, after signing).
 * `resetMidBody` forwards the request, relays the status, headers and the first half of the response body, then
 * drops the connection (a stream lost mid-body: the client saw a 200 and then an unexpected EOF).
 */
export type FaultKind = 'slowdown503' | 'reset' | 'delay' | 'forbidden403' | 'corrupt' | 'corruptUpload' | 'resetMidBody';

export interface FaultConfig {
  /** Probability (0..1) that an eligible request gets a fault. */
  rate: number;
  /** One is picked uniformly per faulted request. */
  kinds: FaultKind[];
  /** For `delay`: how long the request waits before it is forwarded (default 1000 ms). */
  delayMs?: number;
  /** PRNG seed (default 1). */
  seed?: number;
  /** Only these operations are eligible (default: all), e.g. `['UploadPart']`. */
  operations?: string[];
  /** Only requests whose path contains this string are eligible (e.g. `/blobs/`). */
  pathIncludes?: string;
  /** Stop injecting after this many faults (default: no limit): "fail twice, then succeed". */
  limit?: number;
}

export interface ProxyLogEntry {
  method: string;
  /** Path without the query, as sent (`/bucket/key`, still URL-encoded). */
  path: string;
  /** Raw query string without `?`. */
  query: string;
  operation: string;
  /** Status sent to the client; 0 while unanswered or when the connection was reset. */
  status: number;
  fault?: FaultKind;
}

export interface ProxyCounts {
  /** Every request that reached the proxy, faulted or not. */
  total: number;
  byOperation: Record<string, number>;
  /** Requests that got a fault (a delayed request is faulted and still forwarded). */
  faulted: number;
  faultedByKind: Partial<Record<FaultKind, number>>;
}

export interface S3Proxy {
  url: string;
  counts(): ProxyCounts;
  /** Clears counts and the log (in place: references to `log` stay valid). */
  reset(): void;
  setFaults(faults: FaultConfig | undefined): void;
  log: ProxyLogEntry[];
  close(): Promise<void>;
}

export interface S3ProxyOptions {
  /** The S3 endpoint, e.g. `http://127.0.0.1:7480`. */
  target: string;
  faults?: FaultConfig;
}

export async function startS3Proxy(opts: S3ProxyOptions): Promise<S3Proxy> {
  const target = new URL(opts.target);
  if (target.protocol !== 'http:') throw new TypeError(`startS3Proxy: target must be an http:// URL, got ${opts.target}`);
  if (target.pathname !== '/' || target.search) throw new TypeError(`startS3Proxy: target must be an origin without path, got ${opts.target}`);

  const upstreamAgent = new Agent({ keepAlive: true });
  const log: ProxyLogEntry[] = [];
  let counts = emptyCounts();
  let faults: FaultState | undefined;
  const setFaults = (f: FaultConfig | undefined) => {
    faults = f === undefined ? undefined : { config: validateFaults(f), random: mulberry32(f.seed ?? 1), injected: 0 };
  };
  setFaults(opts.faults);

  const pickFault = (operation: string, path: string): FaultKind | undefined => {
    if (!faults) return undefined;
    const { config, random } = faults;
    if (config.operations && !config.operations.includes(operation)) return undefined;
    if (config.pathIncludes !== undefined && !path.includes(config.pathIncludes)) return undefined;
    if (config.limit !== undefined && faults.injected >= config.limit) return undefined;
    if (random() >= config.rate) return undefined;
    faults.injected++;
    return config.kinds[Math.floor(random() * config.kinds.length)];
  };

  const handle = (req: IncomingMessage, res: ServerResponse, expectsContinue: boolean) => {
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    const query = q < 0 ? '' : rawUrl.slice(q + 1);
    const method = req.method ?? 'GET';
    const operation = classifyS3Operation(method, path, new URLSearchParams(query), req.headers);
    const entry: ProxyLogEntry = { method, path, query, operation, status: 0 };
    log.push(entry);
    counts.total++;
    counts.byOperation[operation] = (counts.byOperation[operation] ?? 0) + 1;

    const fault = pickFault(operation, path);
    if (fault) {
      entry.fault = fault;
      counts.faulted++;
      counts.faultedByKind[fault] = (counts.faultedByKind[fault] ?? 0) + 1;
    }
    const delayMs = faults?.config.delayMs ?? 1000;
    switch (fault) {
      case 'reset':
        // What a crashed load balancer looks like: no status line, the connection just goes away.
        req.socket.destroy();
        return;
      case 'slowdown503':
        answerError(req, res, entry, expectsContinue, 503, 'SlowDown', 'Please reduce your request rate.');
        return;
      case 'forbidden403':
        answerError(req, res, entry, expectsContinue, 403, 'AccessDenied', 'Access Denied');
        return;
      case 'delay': {
        // The client may give up while we wait: then nothing is forwarded and the timer goes away with it.
        const gone = new AbortController();
        const onClose = () => gone.abort();
        res.once('close', onClose);
        sleep(delayMs, undefined, { signal: gone.signal }).then(
          () => {
            res.removeListener('close', onClose);
            forward(req, res, entry, expectsContinue);
          },
          () => req.socket.destroy(),
        );
        return;
      }
      case 'corrupt':
        forward(req, res, entry, expectsContinue, 'response');
        return;
      case 'corruptUpload':
        forward(req, res, entry, expectsContinue, 'request');
        return;
      case 'resetMidBody':
        forward(req, res, entry, expectsContinue, 'cut');
        return;
      case undefined:
        forward(req, res, entry, expectsContinue);
        return;
    }
  };

  const forward = (req: IncomingMessage, res: ServerResponse, entry: ProxyLogEntry, expectsContinue: boolean, corrupt?: 'request' | 'response' | 'cut') => {
    const upstream = request({
      protocol: target.protocol,
      hostname: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url,
      // Exactly what the client sent, Host and Expect included: the signature covers Host.
      headers: req.rawHeaders,
      agent: upstreamAgent,
    });
    // `100 Continue` is relayed, not invented: a client that waits for it must learn what the upstream decided
    // before sending its body. Answering 100 ourselves let RGW refuse (e.g. 411) mid-body and reset the
    // connection, and the client saw a proxy error instead of RGW's answer.
    let continued = false;
    if (expectsContinue) {
      upstream.flushHeaders(); // No body will come until the upstream's 100 does: send the head now.
      upstream.once('continue', () => {
        continued = true;
        res.writeContinue();
      });
    }
    let answered = false;
    upstream.once('response', (upRes) => {
      answered = true;
      entry.status = upRes.statusCode ?? 0;
      let headers = upRes.rawHeaders;
      if (expectsContinue && !continued) {
        // The client will never send the body it announced, so this connection cannot carry another request.
        headers = withoutConnectionHeader(headers).concat('Connection', 'close');
      }
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, headers);
      const length = Number(upRes.headers['content-length'] ?? NaN);
      const cut = corrupt === 'cut' && length > 1 ? cutAfter(Math.floor(length / 2), () => res.socket?.destroy()) : damageOneByte(corrupt === 'response');
      pipeline(upRes, cut, res, () => {
        // Errors here mean one side went away mid-body; pipeline has already destroyed both.
      });
    });
    pipeline(req, damageOneByte(corrupt === 'request'), upstream, (err) => {
      // An upstream that answered early (an error before reading the whole body) may then close the connection
      // under the upload: its answer is already on its way to the client and is what the client must see.
      if (!err || answered) return;
      // Client reset mid-upload, or upstream unreachable: answer if anyone is still listening.
      entry.status = 502;
      if (!res.headersSent && !res.destroyed) {
        res.writeHead(502, { 'content-type': 'text/plain', connection: 'close' }).end(`proxy: ${err.message}\n`);
      }
    });
    // Client went away before the answer was complete: do not keep the upstream request running.
    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
  };

  const server = createServer({ requestTimeout: 0 });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => handle(req, res, false));
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => handle(req, res, true));
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    log,
    counts: () => ({
      total: counts.total,
      byOperation: { ...counts.byOperation },
      faulted: counts.faulted,
      faultedByKind: { ...counts.faultedByKind },
    }),
    reset: () => {
      counts = emptyCounts();
      log.length = 0;
    },
    setFaults,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      upstreamAgent.destroy();
      await closed;
    },
  };
}

interface FaultState {
  config: FaultConfig;
  random: () => number;
  injected: number;
}

function emptyCounts(): ProxyCounts {
  return { total: 0, byOperation: {}, faulted: 0, faultedByKind: {} };
}

const FAULT_KINDS: readonly FaultKind[] = ['slowdown503', 'reset', 'delay', 'forbidden403', 'corrupt', 'corruptUpload', 'resetMidBody'];

/** Passes the first `bytes` bytes on, then calls `drop` (which destroys the client's connection) once they are written. */
function cutAfter(bytes: number, drop: () => void): Transform {
  let passed = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (passed >= bytes) {
        cb();
        return;
      }
      const piece = chunk.subarray(0, bytes - passed);
      passed += piece.length;
      cb(null, piece);
      if (passed >= bytes) setImmediate(drop);
    },
  });
}

/** Same length, one byte different (when `damage`): only a checksum or digest check can notice. */
function damageOneByte(damage: boolean): Transform {
  let flipped = !damage;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (!flipped && chunk.length > 0) {
        const copy = Buffer.from(chunk);
        const i = Math.floor(copy.length / 2);
        copy[i] = (copy[i] ?? 0) ^ 0xff;
        flipped = true;
        cb(null, copy);
      } else cb(null, chunk);
    },
  });
}

function validateFaults(f: FaultConfig): FaultConfig {
  if (!(f.rate >= 0 && f.rate <= 1)) throw new RangeError(`faults.rate must be within 0..1, got ${f.rate}`);
  if (f.kinds.length === 0) throw new RangeError('faults.kinds must name at least one kind');
  for (const k of f.kinds) if (!FAULT_KINDS.includes(k)) throw new RangeError(`unknown fault kind ${JSON.stringify(k)}`);
  if (f.delayMs !== undefined && !(f.delayMs >= 0)) throw new RangeError(`faults.delayMs must be >= 0, got ${f.delayMs}`);
  if (f.limit !== undefined && !(Number.isInteger(f.limit) && f.limit >= 0)) {
    throw new RangeError(`faults.limit must be a non-negative integer, got ${f.limit}`);
  }
  return { ...f, kinds: [...f.kinds], operations: f.operations ? [...f.operations] : undefined };
}

/**
 * Answers with an S3 error document. A request body the client is already sending is read and discarded first:
 * answering and closing mid-upload would make the client see EPIPE/ECONNRESET instead of our status. A client that
 * waits for `100 Continue` has not sent its body, so it gets the answer at once and the connection closes (the
 * body it withheld must not be mistaken for the next request).
 */
function answerError(
  req: IncomingMessage,
  res: ServerResponse,
  entry: ProxyLogEntry,
  expectsContinue: boolean,
  status: number,
  code: string,
  message: string,
): void {
  const send = () => {
    entry.status = status;
    const requestId = `transship-proxy-${Math.random().toString(36).slice(2, 10)}`;
    const body =
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      `<Error><Code>${code}</Code><Message>${message}</Message><Resource>${escapeXml(entry.path)}</Resource>` +
      `<RequestId>${requestId}</RequestId></Error>`;
    const headers: Record<string, string | number> = {
      'content-type': 'application/xml',
      'content-length': Buffer.byteLength(body),
      'x-amz-request-id': requestId,
    };
    if (expectsContinue) headers.connection = 'close';
    res.writeHead(status, headers).end(body);
  };
  if (expectsContinue) {
    send();
    return;
  }
  req.resume();
  finished(req, (err) => {
    if (err) req.socket.destroy();
    else send();
  });
}

function withoutConnectionHeader(raw: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    const lower = name.toLowerCase();
    if (lower !== 'connection' && lower !== 'keep-alive') out.push(name, raw[i + 1] ?? '');
  }
  return out;
}

function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Small, fast, seedable PRNG (mulberry32): enough for picking faults reproducibly. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `size` bytes (a multiple of 4) of seeded pseudo-random data: the same seed gives the same blob in every run. */
export function seededBytes(seed: number, size: number): Buffer {
  const random = mulberry32(seed);
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i += 4) b.writeUInt32LE(Math.floor(random() * 2 ** 32), i);
  return b;
}

/**
 * Names the S3 operation of a path-style request (`/`, `/bucket`, `/bucket/key`) from its method, sub-resources
 * in the query and a few headers — the names the AWS API reference uses. Unknown shapes get `METHOD:bucket` or
 * `METHOD:object` so they still count, visibly.
 */
export function classifyS3Operation(method: string, path: string, query: URLSearchParams, headers: IncomingHttpHeaders): string {
  const m = method.toUpperCase();
  const rest = path.replace(/^\/+/, '');
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  const key = slash < 0 ? '' : rest.slice(slash + 1);
  const has = (name: string) => query.has(name);
  const copy = headers['x-amz-copy-source'] !== undefined;

  if (!bucket) return m === 'GET' ? 'ListBuckets' : `${m}:service`;

  if (!key) {
    const sub = BUCKET_SUBRESOURCES.find((s) => has(s));
    switch (m) {
      case 'HEAD':
        return 'HeadBucket';
      case 'GET':
        if (sub) return `GetBucket${BUCKET_SUBRESOURCE_NAMES[sub]}`;
        if (has('uploads')) return 'ListMultipartUploads';
        if (has('versions')) return 'ListObjectVersions';
        if (has('location')) return 'GetBucketLocation';
        return query.get('list-type') === '2' ? 'ListObjectsV2' : 'ListObjects';
      case 'PUT':
        return sub ? `PutBucket${BUCKET_SUBRESOURCE_NAMES[sub]}` : 'CreateBucket';
      case 'DELETE':
        return sub ? `DeleteBucket${BUCKET_SUBRESOURCE_NAMES[sub]}` : 'DeleteBucket';
      case 'POST':
        return has('delete') ? 'DeleteObjects' : 'POST:bucket';
      default:
        return `${m}:bucket`;
    }
  }

  switch (m) {
    case 'HEAD':
      return 'HeadObject';
    case 'GET':
      if (has('uploadId')) return 'ListParts';
      if (has('acl')) return 'GetObjectAcl';
      if (has('tagging')) return 'GetObjectTagging';
      if (has('attributes')) return 'GetObjectAttributes';
      return 'GetObject';
    case 'PUT':
      if (has('uploadId') && has('partNumber')) return copy ? 'UploadPartCopy' : 'UploadPart';
      if (has('acl')) return 'PutObjectAcl';
      if (has('tagging')) return 'PutObjectTagging';
      return copy ? 'CopyObject' : 'PutObject';
    case 'POST':
      if (has('uploads')) return 'CreateMultipartUpload';
      if (has('uploadId')) return 'CompleteMultipartUpload';
      if (has('restore')) return 'RestoreObject';
      if (has('select')) return 'SelectObjectContent';
      return 'POST:object';
    case 'DELETE':
      if (has('uploadId')) return 'AbortMultipartUpload';
      if (has('tagging')) return 'DeleteObjectTagging';
      return 'DeleteObject';
    default:
      return `${m}:object`;
  }
}

// Bucket sub-resources whose GET/PUT/DELETE operations are named Get/Put/DeleteBucket<Name>.
const BUCKET_SUBRESOURCE_NAMES = {
  acl: 'Acl',
  policy: 'Policy',
  versioning: 'Versioning',
  lifecycle: 'LifecycleConfiguration',
  cors: 'Cors',
  tagging: 'Tagging',
  encryption: 'Encryption',
  notification: 'NotificationConfiguration',
  website: 'Website',
  replication: 'Replication',
  logging: 'Logging',
  'object-lock': 'ObjectLockConfiguration',
  policyStatus: 'PolicyStatus',
  requestPayment: 'RequestPayment',
  accelerate: 'AccelerateConfiguration',
  ownershipControls: 'OwnershipControls',
  publicAccessBlock: 'PublicAccessBlock',
} as const;
const BUCKET_SUBRESOURCES = Object.keys(BUCKET_SUBRESOURCE_NAMES) as Array<keyof typeof BUCKET_SUBRESOURCE_NAMES>;
