// Small registry-owned keys next to the store layout: blob→repository links and subject→referrer links.
//
// Why this exists: the BlobStore contract covers blobs, tags and manifest links, but has no generic "small key"
// operation, and the registry needs two more kinds of link (`repos/<name>/blobs/<alg>/<hex>` and
// `repos/<name>/referrers/<alg>/<subject-hex>/<alg>/<hex>`). Until the contract grows `putMeta/getMeta/listMeta/
// deleteMeta`, this helper writes them itself, in the same directory or bucket prefix, with the same key grammar
// (keys are built only by links.ts from validated names and digests). On S3 it opens its own client from the same
// configuration the store was opened with, and sends every request through observedRetry like the store does.
import { randomBytes, createHash } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, rm, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Agent as HttpAgent } from 'node:http';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, type ListObjectsV2CommandOutput } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { Signalled, BlobStore } from '../store/contract.js';
import type { Config } from '../core/config.js';
import { FsStore } from '../store/fs-store.js';
import type { Location } from '../store/open.js';
import { fromFsError, throwIfAborted } from '../core/errors.js';
import { observedRetry } from '../telemetry/observed-retry.js';
import { isPreconditionFailed, isS3NotFound, mapS3Error } from '../store/s3-errors.js';
import { RetryBudget } from '../core/retry.js';
import { log } from '../telemetry/log.js';
import { s3RequestsTotal } from '../telemetry/metrics.js';

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

/** Same directory as an FsStore: temp file + rename, like the store's own small writes. */
export class FsMetaStore implements MetaStore {
  readonly name: string;
  private readonly counts: Record<string, number> = {};
  constructor(readonly root: string) {
    this.name = `dir:${root}`;
  }

  private path(key: string): string {
    return join(this.root, ...key.split('/'));
  }

  private count(op: string): void {
    this.counts[op] = (this.counts[op] ?? 0) + 1;
  }

  requestCounts(): Record<string, number> {
    return { ...this.counts };
  }

  async putIfAbsent(key: string, body: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    if (await this.has(key)) return;
    const target = this.path(key);
    const tmp = join(this.root, '.tmp', `${randomBytes(8).toString('hex')}.meta`);
    this.count('put');
    try {
      await mkdir(dirname(tmp), { recursive: true });
      await mkdir(dirname(target), { recursive: true });
      const fh = await open(tmp, 'wx');
      try {
        await fh.writeFile(body);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, target);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw fromFsError(err, target);
    }
  }

  async get(key: string, opts: Signalled = {}): Promise<string | undefined> {
    throwIfAborted(opts.signal);
    this.count('get');
    try {
      return await readFile(this.path(key), 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return undefined;
      throw fromFsError(err, this.path(key));
    }
  }

  async has(key: string, opts: Signalled = {}): Promise<boolean> {
    return (await this.get(key, opts)) !== undefined;
  }

  async list(prefix: string, opts: Signalled = {}): Promise<string[]> {
    throwIfAborted(opts.signal);
    this.count('list');
    const out: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(this.path(rel.replace(/\/$/, '')), { withFileTypes: true });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return;
        throw fromFsError(err, this.path(rel));
      }
      for (const e of entries) {
        if (e.isDirectory()) await walk(`${rel}${e.name}/`);
        else if (e.isFile()) out.push(`${rel}${e.name}`);
      }
    };
    await walk(prefix);
    return out.sort();
  }

  async delete(key: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    this.count('delete');
    await rm(this.path(key), { force: true });
  }

  async close(): Promise<void> {}
}

export interface S3MetaOptions {
  bucket: string;
  prefix: string;
  endpoint?: string | undefined;
  s3Region?: string | undefined;
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  sessionToken?: string | undefined;
}

export class S3MetaStore implements MetaStore {
  readonly name: string;
  private readonly client: S3Client;
  private readonly prefix: string;
  private readonly budget = new RetryBudget(100, 5, 1);
  private readonly counts: Record<string, number> = {};

  constructor(private readonly opts: S3MetaOptions) {
    this.prefix = opts.prefix ? `${opts.prefix.replace(/^\/+|\/+$/g, '')}/` : '';
    this.name = `s3://${opts.bucket}${this.prefix ? '/' + this.prefix.replace(/\/$/, '') : ''}`;
    this.client = new S3Client({
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      region: opts.s3Region ?? 'us-east-1',
      forcePathStyle: true,
      maxAttempts: 1,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      ...(opts.accessKeyId && opts.secretAccessKey
        ? { credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey, ...(opts.sessionToken ? { sessionToken: opts.sessionToken } : {}) } }
        : {}),
      requestHandler: new NodeHttpHandler({ httpAgent: new HttpAgent({ keepAlive: true, maxSockets: 32 }), connectionTimeout: 5_000, requestTimeout: 30_000 }),
    });
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        const op = (context.commandName ?? 'Unknown').replace(/Command$/, '');
        this.counts[op] = (this.counts[op] ?? 0) + 1;
        try {
          const out = await next(args);
          s3RequestsTotal.inc({ store: this.name, operation: op, outcome: 'ok' });
          return out;
        } catch (err) {
          s3RequestsTotal.inc({ store: this.name, operation: op, outcome: 'error' });
          throw err;
        }
      },
      { step: 'finalizeRequest', name: 'transshipMetaRequestCounter' },
    );
  }

  requestCounts(): Record<string, number> {
    return { ...this.counts };
  }

  private call<T>(operation: string, key: string, signal: AbortSignal | undefined, fn: (s: AbortSignal) => Promise<T>): Promise<T> {
    return observedRetry({ store: this.name, operation, signal, budget: this.budget }, async (s) => {
      try {
        return await fn(s);
      } catch (err) {
        throw mapS3Error(err, { store: this.name, operation, key, endpoint: this.opts.endpoint }, s);
      }
    });
  }

  async putIfAbsent(key: string, body: string, opts: Signalled = {}): Promise<void> {
    const k = this.prefix + key;
    const md5 = createHash('md5').update(body).digest('base64');
    await this.call('PutObject', k, opts.signal, async (s) => {
      try {
        // If-None-Match: * makes the link write one request whether or not it existed (412 = already linked).
        await this.client.send(new PutObjectCommand({ Bucket: this.opts.bucket, Key: k, Body: body, ContentMD5: md5, IfNoneMatch: '*', ContentType: 'text/plain' }), { abortSignal: s });
      } catch (err) {
        if (!isPreconditionFailed(err)) throw err;
      }
    });
  }

  async get(key: string, opts: Signalled = {}): Promise<string | undefined> {
    const k = this.prefix + key;
    return this.call('GetObject', k, opts.signal, async (s) => {
      try {
        const out = await this.client.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: k }), { abortSignal: s });
        return await (out.Body as { transformToString(): Promise<string> }).transformToString();
      } catch (err) {
        if (isS3NotFound(err)) return undefined;
        throw err;
      }
    });
  }

  async has(key: string, opts: Signalled = {}): Promise<boolean> {
    const k = this.prefix + key;
    return this.call('HeadObject', k, opts.signal, async (s) => {
      try {
        await this.client.send(new HeadObjectCommand({ Bucket: this.opts.bucket, Key: k }), { abortSignal: s });
        return true;
      } catch (err) {
        if (isS3NotFound(err)) return false;
        throw err;
      }
    });
  }

  async list(prefix: string, opts: Signalled = {}): Promise<string[]> {
    const p = this.prefix + prefix;
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await this.call('ListObjectsV2', p, opts.signal, (s) =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: p, ContinuationToken: token, MaxKeys: 1000 }), { abortSignal: s }));
      for (const o of page.Contents ?? []) if (o.Key) out.push(o.Key.slice(this.prefix.length));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out.sort();
  }

  async delete(key: string, opts: Signalled = {}): Promise<void> {
    const k = this.prefix + key;
    await this.call('DeleteObject', k, opts.signal, (s) => this.client.send(new DeleteObjectCommand({ Bucket: this.opts.bucket, Key: k }), { abortSignal: s }));
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

/** Process-local links for stores we cannot reach directly (test doubles). Not shared between instances. */
export class MemoryMetaStore implements MetaStore {
  readonly name = 'memory';
  private readonly keys = new Map<string, string>();
  async putIfAbsent(key: string, body: string): Promise<void> {
    if (!this.keys.has(key)) this.keys.set(key, body);
  }
  async get(key: string): Promise<string | undefined> {
    return this.keys.get(key);
  }
  async has(key: string): Promise<boolean> {
    return this.keys.has(key);
  }
  async list(prefix: string): Promise<string[]> {
    return [...this.keys.keys()].filter((k) => k.startsWith(prefix)).sort();
  }
  async delete(key: string): Promise<void> {
    this.keys.delete(key);
  }
  requestCounts(): Record<string, number> {
    return {};
  }
  async close(): Promise<void> {}
}

/** The meta store living next to a store opened from `location` with `config` (mirrors store/open.ts). */
export function openMetaStore(location: Location, config: Config, region?: string): MetaStore {
  if (location.kind === 'dir') return new FsMetaStore(location.path);
  const s3 = { ...config.s3, ...(region ? config.regions?.[region]?.s3 : undefined) };
  return new S3MetaStore({
    bucket: location.bucket,
    prefix: location.prefix,
    endpoint: s3.endpoint,
    s3Region: s3.region,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    sessionToken: s3.sessionToken,
  });
}

/** For callers that only hold a store: direct for FsStore, process-local (with a warning) otherwise. */
export function metaStoreFor(store: BlobStore): MetaStore {
  if (store instanceof FsStore) return new FsMetaStore(store.root);
  log.warn({ store: store.name }, 'registry links kept in memory only: open the registry with openMetaStore() to share them between instances');
  return new MemoryMetaStore();
}
