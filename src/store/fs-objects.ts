// The fs store's object driver: keys are files under the root, written through a private temp file.
//
// Why it works this way: every write goes to a temp file under `<root>/.tmp/` that this process created with
// `open(…, 'wx')`, is fsynced, and only then renamed (put) or hard-linked (putIfAbsent) into place. rename(2) and
// link(2) are atomic on one file system, so readers see no object or a whole one, and link(2) fails with EEXIST when
// the key exists: a true put-if-absent, strong enough for a lease. The temp file is closed and unlinked on every
// path, including a cancel between opening it and writing it (the handle is ours, so nothing is still opening the
// file when the cleanup runs). Temp files a killed process left are swept by age (sweepTemp).
//
// Deleting a key removes the directories it leaves empty, so a repository with nothing left has no directory;
// a writer racing that removal re-creates the directory and retries its rename once.
import { link, mkdir, open, readdir, readFile, rename, rm, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import type { Dirent } from 'node:fs';
import { join, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { TransshipError, cancelledError, fromFsError, isAbortError, throwIfAborted } from '../core/errors.js';
import type { DeleteManyResult, ObjectDriver, ObjectInfo, PendingUpload, Signalled } from './contract.js';

export const TEMP_DIR = '.tmp';
export const TEMP_SUFFIX = '.part';

/** Counts operations by kind (what requestCounts reports for a directory store). */
export type Counter = (op: string) => void;

export class FsObjects implements ObjectDriver {
  constructor(
    readonly root: string,
    readonly name: string,
    private readonly count: Counter,
  ) {}

  /** The file of a key; a key with an empty, `.` or `..` component names nothing (it would leave the root). */
  path(key: string): string {
    const parts = key.split('/');
    if (parts.some((c) => c === '' || c === '.' || c === '..') || parts[0] === TEMP_DIR) {
      throw new TransshipError('TS_INVALID_NAME', `invalid store key "${key.slice(0, 200)}"`);
    }
    return join(this.root, ...parts);
  }

  get tempDir(): string {
    return join(this.root, TEMP_DIR);
  }

  async get(key: string, opts: Signalled = {}): Promise<string | undefined> {
    throwIfAborted(opts.signal);
    const p = this.path(key);
    this.count('get');
    try {
      return await readFile(p, 'utf8');
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw fromFsError(err, p);
    }
  }

  async stat(key: string, opts: Signalled = {}): Promise<ObjectInfo | undefined> {
    throwIfAborted(opts.signal);
    const p = this.path(key);
    this.count('stat');
    try {
      const s = await stat(p);
      return s.isFile() ? { key, size: s.size, lastModified: s.mtimeMs } : undefined;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw fromFsError(err, p);
    }
  }

  async put(key: string, body: string, opts: Signalled = {}): Promise<void> {
    this.count('put');
    await this.atomicWrite(this.path(key), (fh) => fh.writeFile(body), 'replace', opts.signal);
  }

  async putIfAbsent(key: string, body: string, opts: Signalled = {}): Promise<boolean> {
    // Most calls find the key (a re-push links what is linked): a stat spares them a temp file and an fsync. The
    // link(2) below is what makes it correct when two writers race.
    if (await this.stat(key, opts)) return false;
    this.count('put');
    return this.atomicWrite(this.path(key), (fh) => fh.writeFile(body), 'ifAbsent', opts.signal);
  }

  async delete(key: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    const p = this.path(key);
    this.count('delete');
    try {
      await rm(p, { force: true });
    } catch (err) {
      throw fromFsError(err, p);
    }
    await this.pruneEmpty(dirname(p));
  }

  async deleteMany(keys: readonly string[], opts: Signalled = {}): Promise<DeleteManyResult> {
    const out: DeleteManyResult = { deleted: 0, errors: [] };
    for (const key of keys) {
      throwIfAborted(opts.signal);
      try {
        await this.delete(key, opts);
        out.deleted++;
      } catch (err) {
        if (isAbortError(err) || opts.signal?.aborted) throw err;
        const e = err instanceof TransshipError ? err : fromFsError(err, key);
        out.errors.push({ key, code: e.code, message: e.message });
      }
    }
    return out;
  }

  /**
   * Walks the directory holding `prefix` depth-first, entries in key order (a directory sorts as `name/`, as its keys
   * do in a bucket), one readdir per directory: only the current path is held in memory.
   */
  async *list(prefix: string, opts: Signalled & { startAfter?: string | undefined } = {}): AsyncIterable<ObjectInfo> {
    const slash = prefix.lastIndexOf('/');
    const dir = prefix.slice(0, slash + 1);
    if (dir && dir.split('/').slice(0, -1).some((c) => c === '' || c === '.' || c === '..')) throw new TransshipError('TS_INVALID_NAME', `invalid store prefix "${prefix.slice(0, 200)}"`);
    yield* this.walk(dir, prefix, opts);
  }

  private async *walk(rel: string, prefix: string, opts: Signalled & { startAfter?: string | undefined }): AsyncIterable<ObjectInfo> {
    throwIfAborted(opts.signal);
    const after = opts.startAfter;
    const named = (await this.readDir(rel))
      .filter((e) => (rel !== '' || e.name !== TEMP_DIR) && (e.isDirectory() || e.isFile()))
      .map((e) => ({ e, sortKey: `${rel}${e.name}${e.isDirectory() ? '/' : ''}` }))
      .filter(({ sortKey }) => sortKey.startsWith(prefix) || prefix.startsWith(sortKey))
      .sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
    for (const { e, sortKey } of named) {
      if (e.isDirectory()) {
        // A whole subtree before `startAfter` is skipped without reading it.
        if (after !== undefined && sortKey < after && !after.startsWith(sortKey)) continue;
        yield* this.walk(sortKey, prefix, opts);
        continue;
      }
      if (after !== undefined && sortKey <= after) continue;
      const s = await stat(join(this.root, ...sortKey.split('/'))).catch(() => undefined);
      if (s?.isFile()) yield { key: sortKey, size: s.size, lastModified: s.mtimeMs };
    }
  }

  /** A directory store holds no pending uploads: its writes are temp files (sweepTemp). */
  // eslint-disable-next-line require-yield
  async *listUploads(_prefix: string, opts: Signalled = {}): AsyncIterable<PendingUpload> {
    throwIfAborted(opts.signal);
  }

  async abortUpload(upload: PendingUpload): Promise<void> {
    throw new TransshipError('TS_INTERNAL', `${this.name} holds no pending uploads (asked to abort ${upload.key})`);
  }

  /** Temp files of writes (live or interrupted), oldest first is not promised: directory order. */
  async *listTemp(opts: Signalled = {}): AsyncIterable<ObjectInfo> {
    let names: string[];
    try {
      names = await readdir(this.tempDir);
    } catch (err) {
      if (isMissing(err)) return;
      throw fromFsError(err, this.tempDir);
    }
    for (const n of names.sort()) {
      throwIfAborted(opts.signal);
      if (!n.endsWith(TEMP_SUFFIX)) continue;
      const s = await stat(join(this.tempDir, n)).catch(() => undefined);
      if (s?.isFile()) yield { key: `${TEMP_DIR}/${n}`, size: s.size, lastModified: s.mtimeMs };
    }
  }

  /**
   * Removes temp files older than `olderThanMs`: what a killed writer left (a live write renames or unlinks its own
   * temp file within the write's duration, far below any sensible limit). Returns how many and their bytes.
   */
  async sweepTemp(olderThanMs: number, opts: Signalled = {}): Promise<{ files: number; bytes: number }> {
    const cutoff = Date.now() - olderThanMs;
    const out = { files: 0, bytes: 0 };
    for await (const t of this.listTemp(opts)) {
      if (t.lastModified >= cutoff) continue;
      await unlink(join(this.root, ...t.key.split('/'))).then(
        () => {
          out.files++;
          out.bytes += t.size;
        },
        (err: unknown) => {
          if (!isMissing(err)) throw fromFsError(err, t.key);
        },
      );
    }
    return out;
  }

  /**
   * Writes `target` through a temp file: `fill` writes the body into the open handle, then fsync, close and rename
   * (replace) or link (ifAbsent; false when the target existed). The temp file is gone on every path out.
   */
  async atomicWrite(target: string, fill: (fh: FileHandle) => Promise<void>, mode: 'replace' | 'ifAbsent', signal: AbortSignal | undefined): Promise<boolean> {
    throwIfAborted(signal);
    const tmp = join(this.tempDir, `${randomBytes(8).toString('hex')}${TEMP_SUFFIX}`);
    let fh: FileHandle | undefined;
    try {
      await mkdir(this.tempDir, { recursive: true });
      fh = await open(tmp, 'wx');
      throwIfAborted(signal);
      await fill(fh);
      throwIfAborted(signal);
      await fh.sync();
      await fh.close();
      fh = undefined;
      return await this.place(tmp, target, mode);
    } catch (err) {
      if (err instanceof TransshipError) throw err;
      if (isAbortError(err) || signal?.aborted) throw cancelledError(signal);
      throw fromFsError(err, target);
    } finally {
      await fh?.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
    }
  }

  /** Moves a finished temp file into place; a directory pruned by a concurrent delete is made again once. */
  private async place(tmp: string, target: string, mode: 'replace' | 'ifAbsent'): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      await mkdir(dirname(target), { recursive: true });
      try {
        if (mode === 'replace') await rename(tmp, target);
        else await link(tmp, target);
        return true;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (mode === 'ifAbsent' && code === 'EEXIST') return false;
        if (code !== 'ENOENT' || attempt >= 2) throw err;
      }
    }
  }

  /** Removes empty directories from `dir` up to (not including) the root; stops at the first one still in use. */
  private async pruneEmpty(dir: string): Promise<void> {
    let d = dir;
    while (d.startsWith(this.root) && d.length > this.root.length) {
      try {
        await rmdir(d);
      } catch {
        return; // not empty (or already gone, or in use): either way the rest of the path stays
      }
      d = dirname(d);
    }
  }

  private async readDir(rel: string): Promise<Dirent[]> {
    const p = rel ? join(this.root, ...rel.split('/').filter(Boolean)) : this.root;
    this.count('list');
    try {
      return await readdir(p, { withFileTypes: true });
    } catch (err) {
      if (isMissing(err)) return [];
      throw fromFsError(err, p);
    }
  }
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR';
}
