// Upload sessions: spooled to local disk, hashed while they arrive, handed to the store only after the digest is
// verified (one store.putBlob). Nothing about a session ever reaches S3 — no upload-state objects, no temporary
// keys — so an abandoned or interrupted push leaves nothing visible and nothing billing.
//
// The sha256 state lives in memory per session (a crypto.Hash), so PATCHes never re-read the spool. A chunk that
// fails halfway (client gone, body too large) is rolled back: the hash is restored from a copy taken before the
// chunk and the spool is truncated to its previous length, so the session stays consistent for a retry.
// Large sessions are also streamed to the store while they arrive (spool-streamer.ts), when the store can stage
// blobs (S3): the spool stays the source of truth, the staged copy only saves time at commit.
// Sessions are local to this process (a client uploads through one instance), expire after an idle timeout, and
// are all cancelled and removed on shutdown.
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isAbortError } from '@transship/core/errors';
import type { Algorithm } from '@transship/core/digest';
import { fileStream } from '@transship/core/file-stream';
import type { BlobStore } from '../store/contract.js';
import { RegistryError } from './errors.js';
import { SpoolStreamer } from './spool-streamer.js';
import { SpoolWriter } from './spool-writer.js';
import { log } from '@transship/core/log';
import { registryUploadBytesTotal, registryUploadSessions } from '../telemetry/metrics.js';
import { registryUploadRefusalsTotal, registryUploadSpoolBytes } from '../telemetry/metrics.js';

export interface UploadSessionsOptions {
  /** Parent directory for spool files; a private subdirectory is created per process. */
  dir: string;
  /** A session untouched for this long is removed (ms). */
  idleMs: number;
  /** Largest blob accepted (bytes); more → 413 SIZE_INVALID. */
  maxBytes: number;
  /** Stream sessions to this store once they pass `afterBytes` (stores with stageBlob only). */
  stream?: { store: Required<Pick<BlobStore, 'stageBlob'>>; afterBytes: number } | undefined;
  /** Open sessions at most (more → 429 TOO_MANY_REQUESTS); default 1000. */
  maxSessions?: number | undefined;
  /** Bytes in all spools together at most (more → 429, the chunk rolled back); default unbounded. */
  maxSpoolBytes?: number | undefined;
}

/** The client may try again once sessions finish or expire. */
const RETRY_AFTER_S = '60';

export class UploadSession {
  size = 0;
  hash: Hash = createHash('sha256');
  lastActive = Date.now();
  busy = false;
  /** Aborted when the session is removed (expiry, DELETE, shutdown): stops an in-flight chunk at once. */
  readonly controller = new AbortController();
  readonly startedAt = new Date();
  /** Set when the store can stage blobs: sends whole parts of the spool while the client is still sending. */
  streamer: SpoolStreamer | undefined;

  constructor(
    readonly id: string,
    readonly repo: string,
    readonly path: string,
  ) {}

  /** `Range` header value: inclusive byte range received so far (`0-0` for none, as Distribution answers). */
  get range(): string {
    return `0-${Math.max(0, this.size - 1)}`;
  }
}

export class UploadSessions {
  private readonly sessions = new Map<string, UploadSession>();
  private spoolDir: string | undefined;
  /** Bytes in open sessions' spools, counting chunks still arriving. */
  private spooled = 0;
  private readonly sweeper: NodeJS.Timeout;

  constructor(readonly opts: UploadSessionsOptions) {
    this.sweeper = setInterval(() => void this.sweep(), Math.max(1000, Math.min(opts.idleMs / 2, 60_000)));
    this.sweeper.unref();
  }

  get count(): number {
    return this.sessions.size;
  }

  private async dir(): Promise<string> {
    if (!this.spoolDir) {
      await mkdir(this.opts.dir, { recursive: true });
      await this.sweepLeftovers();
      this.spoolDir = await mkdtemp(join(this.opts.dir, `transship-uploads-${process.pid}-`));
    }
    return this.spoolDir;
  }

  /**
   * Spools no live session owns: directories of instances that are gone (see removeLeftoverSpools) and files in our
   * own directory without a session (a removal that failed). Runs with every expiry sweep, not only once at start:
   * an instance killed while this one runs leaves its spools behind at any time.
   */
  private async sweepLeftovers(): Promise<void> {
    const removed = await removeLeftoverSpools(this.opts.dir, this.opts.idleMs).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err, dir: this.opts.dir }, 'could not look for spools left by crashed instances');
      return 0;
    });
    if (removed > 0) log.info({ dir: this.opts.dir, removed }, 'removed upload spools left by instances that are gone');
    if (!this.spoolDir) return;
    const owned = new Set([...this.sessions.values()].map((s) => s.path));
    const cutoff = Date.now() - this.opts.idleMs;
    for (const f of await readdir(this.spoolDir).catch(() => [])) {
      const path = join(this.spoolDir, f);
      if (owned.has(path)) continue;
      const st = await stat(path).catch(() => undefined);
      if (st && st.mtimeMs < cutoff) await rm(path, { force: true }).catch(() => undefined);
    }
  }

  get spooledBytes(): number {
    return this.spooled;
  }

  private addSpooled(bytes: number): void {
    this.spooled += bytes;
    registryUploadSpoolBytes.set(this.spooled);
  }

  async create(repo: string): Promise<UploadSession> {
    const max = this.opts.maxSessions ?? 1000;
    if (this.sessions.size >= max) {
      registryUploadRefusalsTotal.inc({ reason: 'sessions' });
      log.warn({ repo, sessions: this.sessions.size, limit: max }, 'upload refused: too many open upload sessions');
      throw new RegistryError('TOO_MANY_REQUESTS', `this registry has ${this.sessions.size} open upload sessions, the limit (serve.maxUploadSessions); try again later`, { limit: max }, 429, { 'retry-after': RETRY_AFTER_S });
    }
    const id = randomUUID();
    const path = join(await this.dir(), `${id}.spool`);
    await writeFile(path, '', { flag: 'wx' });
    const s = new UploadSession(id, repo, path);
    const stream = this.opts.stream;
    if (stream) s.streamer = new SpoolStreamer(stream.store, path, stream.afterBytes, s.controller.signal);
    this.sessions.set(id, s);
    registryUploadSessions.set(this.sessions.size);
    return s;
  }

  /** The session `id` of repository `repo`; an id from another repository is as unknown as a made-up one. */
  get(id: string, repo: string): UploadSession {
    const s = this.sessions.get(id);
    if (!s || s.repo !== repo) throw new RegistryError('BLOB_UPLOAD_UNKNOWN', `upload ${id.slice(0, 64)} is unknown (finished, cancelled, expired, or never started here)`, { id: id.slice(0, 64) });
    s.lastActive = Date.now();
    return s;
  }

  /**
   * Appends a chunk. `start` (from Content-Range) must equal the bytes received so far, otherwise 416 with the
   * current Range, as the spec requires. `expectedLength` (from Content-Range/Content-Length) is checked after.
   */
  async append(s: UploadSession, body: Readable, opts: { start?: number | undefined; expectedLength?: number | undefined; signal?: AbortSignal | undefined }): Promise<void> {
    if (s.busy) throw new RegistryError('BLOB_UPLOAD_INVALID', 'another request is writing to this upload session', { id: s.id }, 416, { range: s.range });
    if (opts.start !== undefined && opts.start !== s.size) {
      throw new RegistryError('BLOB_UPLOAD_INVALID', `chunk starts at byte ${opts.start}, but ${s.size} bytes were received so far`, { received: s.size, start: opts.start }, 416, { range: s.range });
    }
    s.busy = true;
    const before = s.size;
    const hashBefore = s.hash.copy();
    const max = this.opts.maxBytes;
    const maxSpool = this.opts.maxSpoolBytes ?? Infinity;
    let counted = 0; // bytes of this chunk added to the spool total (the refused part of a chunk never is)
    const addSpooled = (n: number): void => {
      counted += n;
      this.addSpooled(n);
    };
    const spooledNow = (): number => this.spooled;
    const signal = opts.signal ? AbortSignal.any([opts.signal, s.controller.signal]) : s.controller.signal;
    let bytes = 0;
    const spool = new SpoolWriter(s.path);
    const streamer = s.streamer;
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        bytes += chunk.length;
        if (before + bytes > max) {
          cb(new RegistryError('SIZE_INVALID', `upload exceeds the size limit of ${max} bytes`, { limit: max }, 413));
          return;
        }
        if (spooledNow() + chunk.length > maxSpool) {
          registryUploadRefusalsTotal.inc({ reason: 'spool_bytes' });
          cb(new RegistryError('TOO_MANY_REQUESTS', `upload spools hold ${spooledNow()} bytes, the limit (serve.maxSpoolBytes); try again later`, { limit: maxSpool }, 429, { 'retry-after': RETRY_AFTER_S }));
          return;
        }
        addSpooled(chunk.length);
        s.hash.update(chunk);
        streamer?.notify(before + spool.bytesWritten);
        cb(null, chunk);
      },
    });
    try {
      await pipeInto(body, tap, spool, signal);
      if (opts.expectedLength !== undefined && bytes !== opts.expectedLength) {
        throw new RegistryError('SIZE_INVALID', `chunk has ${bytes} bytes but its headers announced ${opts.expectedLength}`, { received: bytes, announced: opts.expectedLength });
      }
      s.size = before + bytes;
      // Removed while the last bytes landed (a DELETE racing the chunk): its removal counted only `before`.
      if (this.sessions.get(s.id) !== s) this.addSpooled(-counted);
      streamer?.notify(s.size);
      registryUploadBytesTotal.inc(bytes);
    } catch (err) {
      // Roll back to the state before this chunk so the client can retry it from `before` — once the spool's
      // last write has landed (SpoolWriter closes only after it), or it could land after the truncation.
      if (!spool.closed) await new Promise((resolve) => spool.once('close', resolve));
      s.hash = hashBefore;
      this.addSpooled(-counted);
      s.size = before;
      await truncate(s.path, before).catch(() => undefined);
      await streamer?.rollback(before);
      if (err instanceof RegistryError) throw err;
      if (isAbortError(err) || signal.aborted) throw new RegistryError('BLOB_UPLOAD_INVALID', 'upload chunk interrupted', { id: s.id });
      throw err;
    } finally {
      s.busy = false;
      s.lastActive = Date.now();
    }
  }

  /** Digest of what was received so far. sha256 comes from the running hash; sha512 re-reads the spool (rare). */
  async digest(s: UploadSession, algorithm: Algorithm): Promise<string> {
    if (algorithm === 'sha256') return `sha256:${s.hash.copy().digest('hex')}`;
    const h = createHash(algorithm);
    await pipeline(createReadStream(s.path), async (src: AsyncIterable<Buffer>) => {
      for await (const c of src) h.update(c);
    });
    return `${algorithm}:${h.digest('hex')}`;
  }

  /** The spool as a stream that S3 multipart can also read straight into its part buffers (file-stream.ts). */
  async openSpool(s: UploadSession): Promise<Readable> {
    return fileStream(await open(s.path, 'r'));
  }

  async remove(s: UploadSession): Promise<void> {
    // Counted once: an expiry can race a DELETE or a commit's own removal.
    if (this.sessions.get(s.id) === s) {
      this.sessions.delete(s.id);
      this.addSpooled(-s.size);
    }
    s.controller.abort(new Error('upload session closed'));
    registryUploadSessions.set(this.sessions.size);
    await s.streamer?.abandon();
    await rm(s.path, { force: true }).catch((err: unknown) => log.warn({ err, path: s.path }, 'could not remove upload spool'));
  }

  private async sweep(): Promise<void> {
    const cutoff = Date.now() - this.opts.idleMs;
    for (const s of [...this.sessions.values()]) {
      if (!s.busy && s.lastActive < cutoff) {
        log.info({ upload: s.id, repo: s.repo, bytes: s.size }, 'upload session expired');
        await this.remove(s);
      }
    }
    await this.sweepLeftovers();
  }

  /** Shutdown: cancels every in-flight chunk and removes every spool. */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
    await Promise.all([...this.sessions.values()].map((s) => this.remove(s)));
    if (this.spoolDir) await rm(this.spoolDir, { recursive: true, force: true });
    this.spoolDir = undefined;
  }
}

/**
 * Removes the spool directories of instances that crashed (a clean shutdown removes its own): those whose process
 * is gone and in which nothing was written for longer than the idle limit. Both, because a directory shared across
 * pid namespaces (containers) may hold a live instance whose pid means nothing here — its spools are written to,
 * or its sessions expire and are removed by itself. Returns how many directories were removed.
 */
export async function removeLeftoverSpools(parent: string, idleMs: number): Promise<number> {
  let removed = 0;
  for (const name of await readdir(parent)) {
    const pid = Number(/^transship-uploads-(\d+)-/.exec(name)?.[1]);
    if (!pid || pid === process.pid || processExists(pid)) continue;
    const dir = join(parent, name);
    let newest = (await stat(dir)).mtimeMs;
    for (const f of await readdir(dir)) newest = Math.max(newest, (await stat(join(dir, f)).catch(() => undefined))?.mtimeMs ?? 0);
    if (Date.now() - newest < idleMs) continue;
    await rm(dir, { recursive: true, force: true });
    removed++;
  }
  return removed;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, someone else's
  }
}

/**
 * `body → tap → spool`, where the request body is piped but not owned: on a failure (a chunk over the size limit,
 * a cancelled session) the body is only unpiped, never destroyed, so the route can still answer on the same
 * connection and decide what happens to the rest of the body. Handing the body to pipeline() made pipeline wait for
 * its 'close' — which Node 24 does for every stream it destroys — and a request whose payload was already fully
 * buffered (fastify's inject) never emits one: the 413 hung for ever.
 */
async function pipeInto(body: Readable, tap: Transform, spool: Writable, signal: AbortSignal): Promise<void> {
  const fail = (err: Error): void => {
    tap.destroy(err);
  };
  const closedEarly = (): void => {
    if (!body.readableEnded) fail(new Error('the request closed before its body ended'));
  };
  body.once('error', fail);
  body.once('close', closedEarly);
  body.pipe(tap);
  try {
    await pipeline(tap, spool, { signal });
  } finally {
    body.unpipe(tap);
    body.off('error', fail);
    body.off('close', closedEarly);
  }
}

