// The S3 connection every part of the S3 store shares: SDK client set-up, the bucket prefix, request counting and
// the one call wrapper (observedRetry + error mapping).
//
// Why it works this way: the SDK's own retries are off (maxAttempts: 1) so observedRetry owns backoff, budget,
// cancellation and the retry metrics, and a middleware counts every request actually sent (one per attempt), which
// is what `--json` summaries, benchmarks and the request-count tests read.
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { S3Client } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { TransshipError } from '../core/errors.js';
import { RetryBudget, type RetryOptions } from '../core/retry.js';
import { observedRetry } from '../telemetry/observed-retry.js';
import { s3RequestsTotal } from '../telemetry/metrics.js';
import { mapS3Error } from './s3-errors.js';

export interface S3StoreOptions {
  bucket: string;
  prefix?: string | undefined;
  endpoint?: string | undefined;
  /** The S3 signing region (AWS_REGION). */
  s3Region?: string | undefined;
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  sessionToken?: string | undefined;
  /** transship's region name for placement. */
  region?: string | undefined;
  multipartThreshold?: number | undefined;
  partSize?: number | undefined;
  partConcurrency?: number | undefined;
  retry?: Pick<RetryOptions, 'maxAttempts' | 'baseDelayMs' | 'maxDelayMs' | 'maxElapsedMs'> | undefined;
  /** Max sockets per host; bounds concurrent requests. */
  maxSockets?: number | undefined;
  /** A request whose socket moves no byte for this long fails and is retried (default 60 s). */
  idleTimeoutMs?: number | undefined;
  /** Lease length for large-blob claims, ms (plus time proportional to size). */
  claimLeaseMs?: number | undefined;
}

export class S3Connection {
  readonly client: S3Client;
  readonly bucket: string;
  /** The key prefix inside the bucket: '' or ending with '/'. */
  readonly prefix: string;
  readonly name: string;
  readonly endpoint: string | undefined;
  retries = 0;
  private readonly counts: Record<string, number> = {};
  private readonly budget = new RetryBudget(200, 5, 1);
  private readonly retry: S3StoreOptions['retry'];

  constructor(opts: S3StoreOptions) {
    if (!opts.bucket || opts.bucket.length < 3) throw new TransshipError('TS_CONFIG_INVALID', `invalid bucket name "${opts.bucket}": S3 bucket names have 3-63 characters`);
    this.bucket = opts.bucket;
    this.prefix = normalisePrefix(opts.prefix);
    this.name = `s3://${this.bucket}${this.prefix ? '/' + this.prefix.replace(/\/$/, '') : ''}`;
    this.endpoint = opts.endpoint;
    this.retry = opts.retry;
    const maxSockets = opts.maxSockets ?? 64;
    this.client = new S3Client({
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      region: opts.s3Region ?? 'us-east-1',
      forcePathStyle: true,
      maxAttempts: 1,
      // No CRC32 or Content-MD5: every body we send is a Buffer or string, which SigV4 signs with its sha256
      // (x-amz-content-sha256) and S3/RGW verify (XAmzContentSHA256Mismatch). A second checksum only costs CPU —
      // MD5 was the single largest CPU cost of a push. The blob's own digest we verify ourselves.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      ...(opts.accessKeyId && opts.secretAccessKey
        ? { credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey, ...(opts.sessionToken ? { sessionToken: opts.sessionToken } : {}) } }
        : {}),
      requestHandler: new NodeHttpHandler({
        httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
        httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
        connectionTimeout: 5_000,
        // An idle socket (no byte either way) fails the attempt, which observedRetry then retries. It must be a
        // *socket* timeout: the handler's requestTimeout only logs a warning, and a backend that stops reading
        // (RGW with a full OSD does) would otherwise hang a transfer forever.
        socketTimeout: opts.idleTimeoutMs ?? 60_000,
      }),
    });
    // Count every request actually sent (one per attempt, since the SDK does not retry on its own).
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        const op = (context.commandName ?? 'Unknown').replace(/Command$/, '');
        try {
          const out = await next(args);
          // Presigning (blobUrl) runs the same stack but sends nothing: not a request.
          if ((out.output as { presigned?: unknown }).presigned !== undefined) return out;
          this.counts[op] = (this.counts[op] ?? 0) + 1;
          s3RequestsTotal.inc({ store: this.name, operation: op, outcome: 'ok' });
          return out;
        } catch (err) {
          this.counts[op] = (this.counts[op] ?? 0) + 1;
          s3RequestsTotal.inc({ store: this.name, operation: op, outcome: 'error' });
          throw err;
        }
      },
      { step: 'finalizeRequest', name: 'transshipRequestCounter' },
    );
  }

  requestCounts(): Record<string, number> {
    return { ...this.counts };
  }

  /** A store key → its key in the bucket. */
  key(k: string): string {
    return this.prefix + k;
  }

  /** A key in the bucket (from a listing) → the store key. */
  unkey(k: string): string {
    return k.startsWith(this.prefix) ? k.slice(this.prefix.length) : k;
  }

  /** One S3 call through the retry loop, with SDK errors mapped to our codes. `key` is the bucket key (for errors). */
  async call<T>(operation: string, key: string | undefined, signal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>, digest?: string): Promise<T> {
    return observedRetry(
      { store: this.name, operation, digest, signal, budget: this.budget, retry: this.retry, onRetry: () => this.retries++ },
      async (s) => {
        try {
          return await fn(s);
        } catch (err) {
          throw mapS3Error(err, { store: this.name, operation, key, endpoint: this.endpoint }, s);
        }
      },
    );
  }

  destroy(): void {
    this.client.destroy();
  }
}

function normalisePrefix(prefix: string | undefined): string {
  const p = (prefix ?? '').replace(/^\/+|\/+$/g, '');
  if (p.split('/').some((c) => c === '..' || c === '.')) throw new TransshipError('TS_CONFIG_INVALID', `invalid store prefix "${prefix}": no "." or ".." components`);
  return p ? `${p}/` : '';
}
