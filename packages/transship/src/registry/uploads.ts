// Upload sessions: spooled to local disk, hashed while they arrive, handed to the store only after the digest is
// verified (one store.putBlob). Nothing about a session ever reaches S3 — no upload-state objects, no temporary
// keys — so an abandoned or interrupted push leaves nothing visible and nothing billing.
//
// The sha256 state lives in memory per session (a crypto.Hash), so PATCHes never re-read the spool. A chunk that
// fails halfway (client gone, body too large) is rolled back: the hash is restored from a copy taken before the
// chunk and the spool is truncated to its previous length, so the session stays consistent for a retry.
// Large sessions are also streamed to the store while they arrive (spool-streamer.ts), when the store can stage
// blobs (S3): the spool stays the source of truth, the staged copy only saves time at commit.
// Sessions expire after an idle timeout and are cancelled on shutdown.
//
// Shared sessions (S3 stores, serve.sharedUploads, on by default there): a session can continue on any instance
// sharing the store, so replicas behind a load balancer that spreads requests (or a rolling update) do not break
// pushes. Every PATCH ends with a checkpoint — the stage's parts are awaited and the bytes that do not fill a part
// are written as the session's tail object (store/s3-staging.ts) — and the response's Location carries a signed
// state token (upload-state.ts). The instance that issued the token continues from memory as before; any other
// adopts the session from the token: it reads the tail into a fresh spool and continues the same multipart upload.
// The running hash cannot move between processes (Node's crypto has no saved state), so a session that continued a
// stage another instance started is verified at commit by reading the staged bytes back (measured in
// bench/RESULTS.md); one that never had parts staged elsewhere (the tail held every byte) is hashed locally; and one
// whose every byte the checkpointing instance hashed (one PATCH: what skopeo, docker and podman send) is committed
// on that instance's digest, carried in the token with a digest of its parts' ETags that the commit checks.
import { createHash, randomBytes, randomUUID, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isAbortError } from '@transship/core/errors';
import type { Algorithm } from '@transship/core/digest';
import { fileStream } from '@transship/core/file-stream';
import type { BlobStore, StagedState, StagedTails } from '../store/contract.js';
import type { UploadState, UploadStateCodec } from './upload-state.js';
import { RegistryError } from './errors.js';
import { SpoolStreamer } from './spool-streamer.js';
import { SpoolWriter } from './spool-writer.js';
import { log } from '@transship/core/log';
import { registryUploadBytesTotal, registryUploadContinuedTotal, registryUploadSessions } from '../telemetry/metrics.js';
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
  /** Sessions any instance sharing the store can continue (see the top of this file). */
  shared?: SharedUploadsOptions | undefined;
}

export interface SharedUploadsOptions {
  /** The stage every shared session streams to (also when it is smaller than `stream.afterBytes`). */
  store: Required<Pick<BlobStore, 'stageBlob'>>;
  tails: StagedTails;
  /** Stores verified bytes as a blob (the registry's dedup-aware write): a first checkpoint's bytes (see checkpoint). */
  storeBlob: (digest: string, size: number, open: () => Promise<Readable>, signal: AbortSignal) => Promise<unknown>;
  /** Reads a stored blob: the bytes of a session another instance's checkpoint stored as one. */
  readBlob: (digest: string, signal: AbortSignal) => Promise<Readable>;
  /** Signs and reads state tokens; called once per process (the secret may live in the store). */
  codec: () => Promise<UploadStateCodec>;
}

/** A local copy of an expired shared session is only cleaned from the store this much after its token expired. */
const SHARED_EXPIRY_MARGIN_MS = 60_000;

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
  /**
   * Shared sessions: bytes of the blob before the spool's first byte, staged by another instance. While it is 0
   * the running hash covers the whole blob; otherwise the digest is checked by the store at commit.
   */
  base = 0;
  /** Shared sessions: the version of the last checkpoint (or of the token this session was adopted from). */
  version = '';
  /** Shared sessions: the state token of the last checkpoint, for the Location header. */
  token: string | undefined;
  /** Shared sessions: what the last checkpoint staged (for cleaning up an abandoned session). */
  staged: StagedState | undefined;
  /** Shared sessions: a chunk failed after the last checkpoint; the next request continues from the checkpoint. */
  stale = false;
  /** Shared sessions: the store holds a tail object of this session (written by a checkpoint). */
  hasTail = false;
  /**
   * Shared sessions: the bytes so far (all `size` of them) are this blob, already in the store — the first
   * checkpoint stores a session's bytes as the blob they are (see checkpoint). Cleared when more bytes arrive.
   */
  stored: string | undefined;
  /** Shared sessions adopted from a `stored` state: the spool is empty until bytes arrive or the digest differs. */
  lazy = false;
  /** Shared sessions: a checkpoint already stored this session's first bytes as a blob (only the first one does). */
  speculated = false;
  /** Shared sessions: the client sends Content-Range chunks (so the first PATCH is not the whole blob). */
  chunked = false;
  /**
   * Shared sessions adopted from an instance that hashed every byte so far: that digest and the ETags of its parts
   * (upload-state.ts `hashed`). A PUT of this digest with no more bytes commits without reading the blob back.
   */
  vouched: { digest: string; size: number; etags: string } | undefined;
  started = Date.now();

  constructor(
    readonly id: string,
    readonly repo: string,
    readonly path: string,
  ) {}

  /** `Range` header value: inclusive byte range received so far (`0-0` for none, as Distribution answers). */
  get range(): string {
    return rangeOf(this.size);
  }

  /** The running hash covers every byte of the blob (false once the session continued another instance's stage). */
  get wholeHash(): boolean {
    return this.base === 0;
  }
}

export function rangeOf(size: number): string {
  return `0-${Math.max(0, size - 1)}`;
}

export class UploadSessions {
  private readonly sessions = new Map<string, UploadSession>();
  private spoolDir: string | undefined;
  /** Bytes in open sessions' spools, counting chunks still arriving. */
  private spooled = 0;
  private readonly sweeper: NodeJS.Timeout;
  private codecLoad: Promise<UploadStateCodec> | undefined;
  /** Adoptions in progress by session id: two requests for one session must not both read its tail. */
  private readonly adopting = new Map<string, Promise<UploadSession>>();

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

  get shared(): boolean {
    return this.opts.shared !== undefined;
  }

  private codec(): Promise<UploadStateCodec> {
    const shared = this.opts.shared;
    if (!shared) throw new Error('upload sessions are not shared');
    this.codecLoad ??= shared.codec().catch((err: unknown) => {
      this.codecLoad = undefined; // the next request tries again
      log.error({ err }, 'cannot load the secret that signs upload session tokens');
      throw new RegistryError('UNAVAILABLE', `upload sessions are unavailable: the secret that signs their state could not be read or created in the store (${(err as Error).message}); set serve.sharedUploads.secret (or TRANSSHIP_UPLOAD_SECRET), or let the server read and write _keys/upload-state`, {}, 503);
    });
    return this.codecLoad;
  }

  async create(repo: string): Promise<UploadSession> {
    const codec = this.opts.shared ? await this.codec() : undefined; // first: a failure leaves no session behind
    const s = await this.newSession(randomUUID(), repo);
    if (codec) {
      s.version = newVersion();
      s.token = codec.encode(this.stateOf(s, undefined));
    }
    return s;
  }

  private async newSession(id: string, repo: string, resume?: StagedState): Promise<UploadSession> {
    const max = this.opts.maxSessions ?? 1000;
    if (this.sessions.size >= max) {
      registryUploadRefusalsTotal.inc({ reason: 'sessions' });
      log.warn({ repo, sessions: this.sessions.size, limit: max }, 'upload refused: too many open upload sessions');
      throw new RegistryError('TOO_MANY_REQUESTS', `this registry has ${this.sessions.size} open upload sessions, the limit (serve.maxUploadSessions); try again later`, { limit: max }, 429, { 'retry-after': RETRY_AFTER_S });
    }
    const path = join(await this.dir(), `${id}.spool`);
    await writeFile(path, '', { flag: 'wx' });
    const s = new UploadSession(id, repo, path);
    const { stream, shared } = this.opts;
    if (shared) {
      // Shared sessions always have a streamer: it names the stage after the session and can continue another's.
      const after = resume ? 0 : (stream?.afterBytes ?? Infinity);
      s.streamer = new SpoolStreamer(shared.store, path, after, s.controller.signal, { id, resume });
    } else if (stream) {
      s.streamer = new SpoolStreamer(stream.store, path, stream.afterBytes, s.controller.signal);
    }
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

  /** This instance's copy of a session, if it has one. */
  local(id: string, repo: string): UploadSession | undefined {
    const s = this.sessions.get(id);
    return s && s.repo === repo ? s : undefined;
  }

  /**
   * The session a request names: `token` is its `_state` query parameter. Without one (or without sharing) only
   * this instance's sessions are known. With one, this instance's copy is used when it is the latest; otherwise the
   * session is adopted from the store (its copy here, if any, was overtaken by another instance and is let go).
   */
  async open(id: string, repo: string, token: string | null): Promise<UploadSession> {
    if (!this.opts.shared || token === null) return this.get(id, repo);
    const state = (await this.codec()).decode(token, repo, id);
    const local = this.sessions.get(id);
    if (local && local.repo === repo && local.version === state.version && !local.stale) {
      local.lastActive = Date.now();
      return local;
    }
    if (local?.busy) throw new RegistryError('BLOB_UPLOAD_INVALID', 'another request is writing to this upload session', { id }, 416, { range: local.range });
    const pending = this.adopting.get(id);
    if (pending) return pending;
    const adoption = (async () => {
      if (local) await this.drop(local);
      return this.adopt(state, token);
    })().finally(() => this.adopting.delete(id));
    this.adopting.set(id, adoption);
    return adoption;
  }

  /** What a state token says, for requests that need no bytes (GET status, DELETE) on an instance without the session. */
  async state(id: string, repo: string, token: string): Promise<UploadState> {
    return (await this.codec()).decode(token, repo, id);
  }

  /** Continues a session another instance checkpointed: its tail becomes this spool, its stage this streamer's. */
  private async adopt(state: UploadState, token: string): Promise<UploadSession> {
    const shared = this.opts.shared as SharedUploadsOptions;
    if (state.stored !== undefined && state.staged === undefined) {
      // The bytes so far are a stored blob: most likely the PUT of its digest comes next, which needs none of them.
      const s = await this.newSession(state.id, state.repo);
      Object.assign(s, { base: state.size, size: state.size, version: state.version, token, started: state.started, stored: state.stored, lazy: true, speculated: true });
      registryUploadContinuedTotal.inc({ event: 'adopted' });
      log.info({ upload: s.id, repo: s.repo, bytes: s.size, stored: s.stored }, 'upload session continued from another instance');
      return s;
    }
    const base = state.staged?.bytes ?? 0;
    const need = state.size - base;
    let tail: Buffer = Buffer.alloc(0);
    if (need > 0) {
      const t = await shared.tails.get(state.id);
      if (!t || t.version !== state.version || t.body.length !== need) {
        throw new RegistryError('BLOB_UPLOAD_UNKNOWN', `upload ${state.id} cannot be continued from this state: the session moved on (or ended) after it; use the Location of the last response, or start the upload again`, { id: state.id });
      }
      tail = t.body;
    }
    const s = await this.newSession(state.id, state.repo, state.staged);
    try {
      await writeFile(s.path, tail);
      s.base = base;
      if (base === 0) s.hash.update(tail);
      s.size = state.size;
      s.version = state.version;
      s.token = token;
      s.staged = state.staged;
      s.started = state.started;
      s.hasTail = state.size > 0 || state.staged !== undefined;
      if (state.hashed !== undefined && state.staged?.etags !== undefined) s.vouched = { digest: state.hashed, size: state.size, etags: state.staged.etags };
      this.addSpooled(tail.length);
      s.streamer?.notify(tail.length);
    } catch (err) {
      await this.drop(s);
      throw err;
    }
    registryUploadContinuedTotal.inc({ event: 'adopted' });
    log.info({ upload: s.id, repo: s.repo, bytes: s.size, staged: base }, 'upload session continued from another instance');
    return s;
  }

  private stateOf(s: UploadSession, staged: StagedState | undefined): UploadState {
    return { repo: s.repo, id: s.id, size: s.size, version: s.version, started: s.started, expires: Date.now() + this.opts.idleMs, staged };
  }

  /**
   * A session adopted lazily from a stored blob gets that blob's bytes into its spool (more bytes arrive, or the
   * PUT names another digest): from then on it is an ordinary session hashed from its first byte.
   */
  async materialize(s: UploadSession, signal: AbortSignal): Promise<void> {
    if (!s.lazy || s.stored === undefined) return;
    const shared = this.opts.shared as SharedUploadsOptions;
    // Only a session's first checkpoint stores a blob, and every later one writes a tail: a tail means the state
    // this session was adopted from is outdated (a client reusing an old Location). Committing that state's blob
    // as-is is harmless (the PUT names the bytes it meant), continuing it would fork the session.
    if ((await shared.tails.version(s.id, { signal })) !== undefined) {
      throw new RegistryError('BLOB_UPLOAD_UNKNOWN', `upload ${s.id} cannot be continued from this state: the session moved on after it; use the Location of the last response, or start the upload again`, { id: s.id });
    }
    const source = await shared.readBlob(s.stored, signal);
    const hash = createHash('sha256');
    let bytes = 0;
    await pipeline(source, new Transform({
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        hash.update(chunk);
        bytes += chunk.length;
        cb(null, chunk);
      },
    }), new SpoolWriter(s.path), { signal });
    if (bytes !== s.size) throw new RegistryError('BLOB_UPLOAD_INVALID', `upload ${s.id}: its stored bytes are ${bytes} long, its state says ${s.size}; start the upload again`, { id: s.id });
    s.hash = hash;
    s.base = 0;
    s.lazy = false;
    this.addSpooled(bytes);
    s.streamer?.notify(bytes);
  }

  /**
   * Shared sessions, after a chunk: makes everything received so far durable in the store — the stage's parts
   * awaited, the rest written as the tail — and issues the token any instance continues from.
   *
   * The first checkpoint of a session that is not staged stores its bytes as the blob they are (their sha256 is
   * known: the running hash) instead of as a tail: skopeo, docker, podman and buildah send a whole blob in one PATCH
   * and then PUT its digest, so this is the write the commit would make, made earlier — and the PUT, on any
   * instance, only links it. A session that goes on (more chunks, or another digest) leaves that blob unreferenced
   * for gc; later checkpoints write tails.
   */
  private async checkpoint(s: UploadSession, signal: AbortSignal): Promise<void> {
    const shared = this.opts.shared as SharedUploadsOptions;
    const cp = await s.streamer?.checkpoint();
    if (!cp && s.base === 0 && !s.hasTail && !s.speculated && !s.chunked && s.size > 0) {
      const digest = `sha256:${s.hash.copy().digest('hex')}`;
      await shared.storeBlob(digest, s.size, () => this.openSpool(s), signal);
      s.stored = digest;
      s.speculated = true;
      s.version = newVersion();
      s.token = (await this.codec()).encode({ ...this.stateOf(s, undefined), stored: digest });
      return;
    }
    const spoolStart = cp?.spoolBytes ?? 0;
    const tail = await readSpool(s.path, spoolStart, s.size - s.base - spoolStart);
    const version = newVersion();
    await shared.tails.put(s.id, version, tail, { signal });
    s.version = version;
    s.hasTail = true;
    s.staged = cp?.staged;
    // This instance saw every byte: whoever commits can rely on this hash (with the parts' ETags) instead of re-reading.
    const hashed = s.wholeHash && cp?.staged.etags !== undefined ? `sha256:${s.hash.copy().digest('hex')}` : undefined;
    s.token = (await this.codec()).encode({ ...this.stateOf(s, cp?.staged), hashed });
  }

  /**
   * Appends a chunk. `start` (from Content-Range) must equal the bytes received so far, otherwise 416 with the
   * current Range, as the spec requires. `expectedLength` (from Content-Range/Content-Length) is checked after.
   */
  async append(s: UploadSession, body: Readable, opts: { start?: number | undefined; expectedLength?: number | undefined; signal?: AbortSignal | undefined; checkpoint?: boolean | undefined; chunked?: boolean | undefined }): Promise<void> {
    if (s.busy) throw new RegistryError('BLOB_UPLOAD_INVALID', 'another request is writing to this upload session', { id: s.id }, 416, { range: s.range });
    if (s.lazy) await this.materialize(s, opts.signal ?? s.controller.signal);
    if (opts.chunked && this.opts.shared && !s.chunked) {
      // A client that sends Content-Range chunks sends more of them: stage whole parts from the first one, so each
      // checkpoint's tail stays under a part, and never store a first chunk as if it were the whole blob.
      s.chunked = true;
      s.streamer?.stageFromFirstPart();
    }
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
        if (s.wholeHash) s.hash.update(chunk);
        streamer?.notify(before - s.base + spool.bytesWritten);
        cb(null, chunk);
      },
    });
    try {
      await pipeInto(body, tap, spool, signal);
      if (opts.expectedLength !== undefined && bytes !== opts.expectedLength) {
        throw new RegistryError('SIZE_INVALID', `chunk has ${bytes} bytes but its headers announced ${opts.expectedLength}`, { received: bytes, announced: opts.expectedLength });
      }
      s.size = before + bytes;
      if (bytes > 0) {
        s.stored = undefined;
        s.vouched = undefined;
      }
      // Removed while the last bytes landed (a DELETE racing the chunk): its removal counted only `before`.
      if (this.sessions.get(s.id) !== s) this.addSpooled(-counted);
      streamer?.notify(s.size - s.base);
      registryUploadBytesTotal.inc(bytes);
      if (opts.checkpoint && this.opts.shared) await this.checkpoint(s, signal);
    } catch (err) {
      // Roll back to the state before this chunk so the client can retry it from `before` — once the spool's
      // last write has landed (SpoolWriter closes only after it), or it could land after the truncation.
      if (!spool.closed) await new Promise((resolve) => spool.once('close', resolve));
      s.hash = hashBefore;
      this.addSpooled(-counted);
      s.size = before;
      await truncate(s.path, before - s.base).catch(() => undefined);
      if (this.opts.shared) {
        // The stage may hold parts of this chunk, and other instances may continue from the last checkpoint: a stage
        // the checkpoint names is kept (the next request continues from the checkpoint); one started since is
        // referenced by nothing and is aborted.
        s.stale = true;
        const uploadId = await streamer?.uploadId();
        if (uploadId !== undefined && uploadId !== s.staged?.uploadId) await streamer?.abandon();
        else await streamer?.release();
      } else {
        await streamer?.rollback(before);
      }
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

  /** The session ended here (committed, cancelled, failed for good): its stage and, when shared, its tail go too. */
  async remove(s: UploadSession): Promise<void> {
    await this.forget(s, () => s.streamer?.abandon());
    if (this.opts.shared && s.hasTail) await this.opts.shared.tails.delete(s.id).catch((err: unknown) => log.warn({ err, upload: s.id }, 'could not delete an upload tail; gc leftovers removes it later'));
  }

  /** Lets go of this instance's copy of a shared session; what it checkpointed stays for whoever continues it. */
  release(s: UploadSession): Promise<void> {
    return this.drop(s);
  }

  private async drop(s: UploadSession): Promise<void> {
    await this.forget(s, () => s.streamer?.release());
  }

  private async forget(s: UploadSession, stage: () => Promise<void> | undefined): Promise<void> {
    // Counted once: an expiry can race a DELETE or a commit's own removal.
    if (this.sessions.get(s.id) === s) {
      this.sessions.delete(s.id);
      this.addSpooled(-(s.size - s.base));
    }
    s.controller.abort(new Error('upload session closed'));
    registryUploadSessions.set(this.sessions.size);
    await stage();
    await rm(s.path, { force: true }).catch((err: unknown) => log.warn({ err, path: s.path }, 'could not remove upload spool'));
  }

  /**
   * Cancels a shared session this instance does not hold (DELETE with a state token): its stage is aborted and its
   * tail deleted, unless the session moved on since that token (then the newer state is left alone).
   */
  async cancelShared(state: UploadState): Promise<void> {
    const shared = this.opts.shared as SharedUploadsOptions;
    const current = await shared.tails.version(state.id);
    if (current !== undefined && current !== state.version) return;
    if (state.staged) await shared.tails.abortStage(state.id, state.staged.uploadId);
    await shared.tails.delete(state.id);
  }

  /**
   * An idle shared session is cleaned from the store only when this instance wrote its last checkpoint (the tail
   * still has our version): if another instance continued it, that instance's expiry cleans it.
   */
  private async expireShared(s: UploadSession): Promise<void> {
    await this.drop(s);
    const shared = this.opts.shared as SharedUploadsOptions;
    const current = await shared.tails.version(s.id).catch(() => undefined);
    if (current === undefined || current !== s.version) return;
    if (s.staged) await shared.tails.abortStage(s.id, s.staged.uploadId);
    await shared.tails.delete(s.id).catch(() => undefined);
  }

  private async sweep(): Promise<void> {
    const now = Date.now();
    for (const s of [...this.sessions.values()]) {
      if (s.busy) continue;
      if (this.opts.shared) {
        if (s.lastActive < now - this.opts.idleMs - Math.min(SHARED_EXPIRY_MARGIN_MS, this.opts.idleMs)) {
          log.info({ upload: s.id, repo: s.repo, bytes: s.size }, 'upload session expired');
          await this.expireShared(s).catch((err: unknown) => log.warn({ err, upload: s.id }, 'could not clean up an expired upload session; gc leftovers removes it later'));
        }
      } else if (s.lastActive < now - this.opts.idleMs) {
        log.info({ upload: s.id, repo: s.repo, bytes: s.size }, 'upload session expired');
        await this.remove(s);
      }
    }
    await this.sweepLeftovers();
  }

  /**
   * Shutdown: cancels every in-flight chunk and removes every spool. Shared sessions are only let go of — another
   * instance continues them (a rolling update); gc leftovers removes the ones nobody does.
   */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
    await Promise.all([...this.sessions.values()].map((s) => (this.opts.shared ? this.drop(s) : this.remove(s))));
    if (this.spoolDir) await rm(this.spoolDir, { recursive: true, force: true });
    this.spoolDir = undefined;
  }
}

/** A fresh checkpoint version: random, short (it rides in the token and the tail's metadata). */
function newVersion(): string {
  return randomBytes(9).toString('base64url');
}

/** `length` bytes of a spool from `start` (a checkpoint's tail: less than a part, or a session too small to stage). */
async function readSpool(path: string, start: number, length: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(length);
  if (length === 0) return out;
  const file = await open(path, 'r');
  try {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await file.read(out, done, length - done, start + done);
      if (bytesRead === 0) throw new Error(`spool ${path} ends at ${start + done}, expected ${start + length} bytes`);
      done += bytesRead;
    }
    return out;
  } finally {
    await file.close();
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

