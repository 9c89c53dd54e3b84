// Blob bytes kept on this instance's local disk, in front of a remote store (S3), so a blob pulled again — or pulled
// right after it was pushed here — is read from the page cache or the local disk instead of from S3: no request, no
// backend CPU, no cross-network bytes. On this project's test bed a single S3 GET stream tops out at ~125 MB/s (RGW
// is CPU-bound), and parallel ranged GETs did not read faster, so the disk is the only way past the store's speed.
//
// Only verified bytes enter:
// - an upload: the spool whose digest the commit just checked is hard-linked in (no copy) once the store has it;
// - a store read: a full GET is hashed while it is served and kept only if it ends with the right digest and size.
// Content-addressed bytes never change, so a cached file is never stale. The cache answers GETs only: whether a
// blob is *present* (HEAD, a push's dedup, a manifest's references) is still asked of the store (with its short
// presence hints), so a cached file can never make a push skip a blob. Should garbage collection ever delete
// blobs from the store, it must purge instance caches too, or a client knowing a digest could still read it here.
//
// Bounded by `maxBytes`, least recently used first out. The directory is private to the process's user (0700, and
// refused when another user owns it): it holds blobs that registry auth guards, and a file planted in it would be
// served as a blob. Several processes of that user may share it — files appear by link or rename (atomic), and
// unlinking a file another process is reading does not disturb that read — but each bounds only what it knows of,
// so N processes on one directory may use up to N × maxBytes.
import { createHash, randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, link, lstat, mkdir, open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import { parseDigest } from '@transship/core/digest';
import { TransshipError } from '@transship/core/errors';
import { fileStream, SERVING_CHUNK_BYTES } from '@transship/core/file-stream';
import type { ByteRange } from '../store/contract.js';
import { log } from '@transship/core/log';
import { registryBlobCacheBytes, registryBlobCacheFillsTotal, registryBlobCacheRequestsTotal } from '../telemetry/metrics.js';
import { SpoolWriter } from './spool-writer.js';

export interface BlobCacheOptions {
  dir: string;
  /** Upper bound of the bytes kept; a single blob may use at most a quarter of it. */
  maxBytes: number;
}

/** Name prefix of a fill in progress (renamed to the blob's name once verified). */
const FILL_PREFIX = '.fill-';
/** A fill left by a crashed process is removed at start once it is this old (a live one is being written to). */
const STALE_FILL_MS = 3600_000;
/**
 * A fill whose disk writes fall this far behind the client holds the client back until the disk catches up; one
 * that stays behind for FILL_STALL_MS is dropped: serving the client comes first. Dropping at once (as this did
 * before) lost every fill of a large blob pulled at full speed: S3 delivers in bursts faster than the page cache
 * takes them for a moment, though the disk is faster on average (pullperf measurement: 0 of 3 256 MiB fills kept).
 */
const FILL_BACKLOG_BYTES = 8 * 1024 * 1024;
const FILL_STALL_MS = 1000;

export class BlobCache {
  /** digest → size, least recently used first (a Map keeps insertion order). */
  private readonly entries = new Map<string, number>();
  private bytes = 0;
  private readonly filling = new Set<string>();
  private ready: Promise<void> | undefined;
  private warnedCrossDevice = false;
  /** Set by close(): fills that finish afterwards are thrown away instead of entering the directory. */
  private closed = false;

  constructor(readonly opts: BlobCacheOptions) {}

  /**
   * Creates the directory and takes over what an earlier run left there (oldest first). `serve` awaits it at start,
   * so a directory it cannot use stops the start with a message instead of failing every GET later.
   */
  init(): Promise<void> {
    this.ready ??= this.load().catch((err: unknown) => {
      if (err instanceof TransshipError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      throw new TransshipError(code === 'EACCES' || code === 'EPERM' ? 'TS_PERMISSION_DENIED' : 'TS_CONFIG_INVALID',
        `blob cache directory ${this.opts.dir} is not usable (${(err as Error).message}): set serve.blobCache.dir to a writable directory, or serve.blobCache.maxBytes to 0 to turn the cache off`, { cause: err });
    });
    return this.ready;
  }

  private async load(): Promise<void> {
    const { dir } = this.opts;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await this.checkPrivate(dir);
    const found: Array<{ digest: string; size: number; at: number }> = [];
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      const st = await lstat(path).catch(() => undefined); // a symlink is never a cached blob
      if (!st?.isFile()) continue;
      if (name.startsWith(FILL_PREFIX)) {
        if (Date.now() - st.mtimeMs > STALE_FILL_MS) await unlink(path).catch(() => undefined);
        continue;
      }
      const digest = digestOfName(name);
      if (digest && st.size > 0) found.push({ digest, size: st.size, at: st.mtimeMs }); // empty blobs are never cached
    }
    found.sort((a, b) => a.at - b.at);
    for (const f of found) this.add(f.digest, f.size);
  }

  /** The directory must be ours and closed to others; a loose mode on our own directory is tightened. */
  private async checkPrivate(dir: string): Promise<void> {
    const st = await lstat(dir);
    if (!st.isDirectory()) throw new TransshipError('TS_CONFIG_INVALID', `blob cache directory ${dir} is not a directory (a symlink or a file): set serve.blobCache.dir to a directory of its own`);
    const uid = process.getuid?.();
    if (uid !== undefined && st.uid !== uid) {
      throw new TransshipError('TS_PERMISSION_DENIED', `blob cache directory ${dir} belongs to uid ${st.uid}, not to this process (uid ${uid}): another user could read cached blobs or plant files in it; set serve.blobCache.dir to a directory of this user`);
    }
    if (st.mode & 0o077) await chmod(dir, 0o700);
  }

  get size(): number {
    return this.bytes;
  }

  /** Size of `digest` when it is cached (without marking it used or counting a lookup). */
  has(digest: string): number | undefined {
    return this.entries.get(digest);
  }

  /** A GET's lookup: the size when cached (open() follows), else undefined, counted as a miss. */
  lookup(digest: string): number | undefined {
    const size = this.entries.get(digest);
    if (size === undefined) registryBlobCacheRequestsTotal.inc({ result: 'miss' });
    return size;
  }

  /**
   * The cached bytes of `digest` (a range of them, else the entry's `size` bytes), or undefined on a miss. A file
   * removed meanwhile (evicted by another process sharing the directory) is a miss, and so is a file whose length
   * is not the blob's: it is removed rather than served under a wrong Content-Length.
   */
  async open(digest: string, range?: ByteRange): Promise<Readable | undefined> {
    await this.init();
    const size = this.entries.get(digest);
    let handle: FileHandle | undefined;
    if (size !== undefined) {
      handle = await open(this.path(digest), constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => undefined);
      if (handle && (await handle.stat()).size !== size) {
        log.warn({ digest, dir: this.opts.dir }, 'blob cache: a cached file does not have its blob\'s size; removed');
        await handle.close();
        handle = undefined;
        await unlink(this.path(digest)).catch(() => undefined);
      }
    }
    if (!handle || size === undefined) {
      if (size !== undefined) this.forget(digest);
      registryBlobCacheRequestsTotal.inc({ result: 'miss' });
      return undefined;
    }
    this.entries.delete(digest);
    this.entries.set(digest, size);
    registryBlobCacheRequestsTotal.inc({ result: 'hit' });
    return fileStream(handle, range ?? { start: 0, end: size - 1 }, undefined, SERVING_CHUNK_BYTES);
  }

  /** Fills that finish from now on are discarded (the server is shutting down). */
  close(): void {
    this.closed = true;
  }

  /**
   * Takes a verified upload spool in by hard link, so it costs no copy (the session removes its own name for the
   * file afterwards). Needs the spool on the same filesystem; otherwise uploads are not cached (reads still are).
   */
  async adopt(digest: string, size: number, spoolPath: string): Promise<void> {
    await this.init();
    if (!this.accepts(digest, size)) return;
    // The commit verified `size` bytes; a spool of any other length is not that blob (belt and braces: a session
    // refuses to commit while a chunk is still being written to it).
    if ((await stat(spoolPath).catch(() => undefined))?.size !== size) {
      registryBlobCacheFillsTotal.inc({ source: 'upload', outcome: 'skipped' });
      return;
    }
    try {
      await link(spoolPath, this.path(digest));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Another process sharing the directory cached it first: the same bytes, since the name is their digest.
      if (code === 'EEXIST' && (await stat(this.path(digest)).catch(() => undefined))?.size === size) {
        this.add(digest, size);
        registryBlobCacheFillsTotal.inc({ source: 'upload', outcome: 'ok' });
        return;
      }
      registryBlobCacheFillsTotal.inc({ source: 'upload', outcome: 'failed' });
      if (code === 'EXDEV' && this.warnedCrossDevice) return;
      this.warnedCrossDevice ||= code === 'EXDEV';
      log.warn({ err, dir: this.opts.dir, digest }, code === 'EXDEV'
        ? 'blob cache: the upload dir is on another filesystem, so uploads are not cached (reads still are); put serve.blobCache.dir next to serve.uploadDir'
        : 'blob cache: could not keep an uploaded blob');
      return;
    }
    this.add(digest, size);
    registryBlobCacheFillsTotal.inc({ source: 'upload', outcome: 'ok' });
  }

  /**
   * `source` (all of blob `digest`, `size` bytes, as read from the store) passed through unchanged, and also written
   * here; the copy is kept only if the stream ends whole and hashes to `digest`. A client that goes away, a disk
   * that cannot keep up, or a write error drops the copy and never the response.
   */
  tee(digest: string, size: number, source: Readable): Readable {
    if (!this.ready || !this.accepts(digest, size)) return source;
    this.filling.add(digest);
    const tmp = join(this.opts.dir, `${FILL_PREFIX}${process.pid}-${randomUUID()}`);
    const writer = new SpoolWriter(tmp);
    const hash = createHash(parseDigest(digest).algorithm);
    let seen = 0;
    let state: 'filling' | 'ended' | 'dropped' = 'filling';
    const finish = (outcome: 'ok' | 'skipped' | 'failed'): void => {
      this.filling.delete(digest);
      registryBlobCacheFillsTotal.inc({ source: 'read', outcome });
    };
    /** The chunk held back while the disk catches up, released on drain, on drop, or after FILL_STALL_MS. */
    let held: (() => void) | undefined;
    const drop = (outcome: 'skipped' | 'failed'): void => {
      if (state === 'dropped') return;
      state = 'dropped';
      held?.();
      writer.destroy();
      writer.once('close', () => void unlink(tmp).catch(() => undefined));
      finish(outcome);
    };
    writer.on('error', (err) => {
      if (state !== 'dropped') log.warn({ err, digest, dir: this.opts.dir }, 'blob cache: could not write a blob read from the store');
      drop('failed');
    });
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        seen += chunk.length;
        if (state !== 'filling') {
          cb(null, chunk);
          return;
        }
        hash.update(chunk);
        writer.write(chunk);
        if (writer.writableLength <= FILL_BACKLOG_BYTES) {
          cb(null, chunk);
          return;
        }
        const timer = setTimeout(() => drop('skipped'), FILL_STALL_MS);
        const release = (): void => {
          held = undefined;
          clearTimeout(timer);
          writer.off('drain', release);
          cb(null, chunk);
        };
        held = release;
        writer.once('drain', release);
      },
      flush(cb: TransformCallback) {
        cb(); // the client's response does not wait for the disk
        if (state !== 'filling') return;
        state = 'ended';
        writer.end();
      },
    });
    writer.once('finish', () => {
      if (state !== 'ended') return;
      void this.keep(digest, size, tmp, seen, hash.digest('hex')).then(finish, (err: unknown) => {
        log.warn({ err, digest, dir: this.opts.dir }, 'blob cache: could not keep a blob read from the store');
        void unlink(tmp).catch(() => undefined);
        finish('failed');
      });
    });
    // Errors reach the consumer through `tap`; a consumer that goes away destroys `source` through the pipeline.
    return pipeline(source, tap, (err) => {
      if (err && state === 'filling') drop('skipped');
    });
  }

  private async keep(digest: string, size: number, tmp: string, seen: number, hex: string): Promise<'ok' | 'skipped' | 'failed'> {
    if (this.closed) {
      await unlink(tmp).catch(() => undefined);
      return 'skipped';
    }
    if (seen !== size || hex !== parseDigest(digest).hex) {
      log.warn({ digest, expectedSize: size, size: seen }, 'blob cache: a blob read from the store did not match its digest; not cached');
      await unlink(tmp).catch(() => undefined);
      return 'failed';
    }
    await rename(tmp, this.path(digest));
    this.add(digest, size);
    return 'ok';
  }

  private accepts(digest: string, size: number): boolean {
    // Empty blobs are not worth a file (and a fill of nothing writes none to rename).
    return !this.closed && size > 0 && size <= this.opts.maxBytes / 4 && !this.entries.has(digest) && !this.filling.has(digest);
  }

  private path(digest: string): string {
    const d = parseDigest(digest);
    return join(this.opts.dir, `${d.algorithm}-${d.hex}`);
  }

  private add(digest: string, size: number): void {
    if (this.entries.has(digest)) return;
    this.entries.set(digest, size);
    this.bytes += size;
    for (const oldest of this.entries.keys()) {
      if (this.bytes <= this.opts.maxBytes) break;
      this.forget(oldest);
      void unlink(this.path(oldest)).catch(() => undefined);
    }
    registryBlobCacheBytes.set(this.bytes);
  }

  private forget(digest: string): void {
    const size = this.entries.get(digest);
    if (size === undefined) return;
    this.entries.delete(digest);
    this.bytes -= size;
    registryBlobCacheBytes.set(this.bytes);
  }
}

/** `sha256-<hex>` → `sha256:<hex>`; anything else (foreign files) → undefined. */
function digestOfName(name: string): string | undefined {
  const m = /^(sha256|sha512)-([0-9a-f]+)$/.exec(name);
  if (!m) return undefined;
  try {
    return parseDigest(`${m[1]}:${m[2]}`).value;
  } catch {
    return undefined;
  }
}
