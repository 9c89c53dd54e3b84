// GcObjects over a `dir:` store: keys are paths under the root (the same layout as a bucket). Listing walks the tree
// in key order (sorted names, depth first — `a/b` sorts before `a0` exactly as the keys do when no name contains a
// character below '/', which the layout's grammar guarantees), a page of 1000 entries at a time, stat()ing each file
// for its size and mtime. put-if-absent is link(2) of a fully written temp file: atomic, and EEXIST is the 412.
import { link, mkdir, open, readdir, readFile, rm, stat, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fromFsError, throwIfAborted } from '../core/errors.js';
import type { Signalled } from '../store/contract.js';
import type { GcObjects, ObjectEntry, ObjectPage } from './objects.js';

const PAGE = 1000;

export class FsObjects implements GcObjects {
  readonly name: string;
  private readonly counts: Record<string, number> = {};

  constructor(readonly root: string) {
    this.name = `dir:${root}`;
  }

  private count(op: string, n = 1): void {
    this.counts[op] = (this.counts[op] ?? 0) + n;
  }

  requestCounts(): Record<string, number> {
    return { ...this.counts };
  }

  private path(key: string): string {
    return join(this.root, ...key.split('/'));
  }

  async *pages(prefix: string, opts: Signalled & { startAfter?: string | undefined } = {}): AsyncIterable<ObjectPage> {
    // The walk itself is the "request": a page's sentAt is taken before the first stat() of its entries.
    let page: ObjectEntry[] = [];
    let sentAt = Date.now();
    const slash = prefix.lastIndexOf('/');
    const dirKey = slash === -1 ? '' : prefix.slice(0, slash + 1);
    for await (const key of this.walk(dirKey, opts.signal)) {
      if (!key.startsWith(prefix) || (opts.startAfter !== undefined && key <= opts.startAfter)) continue;
      let s;
      try {
        s = await stat(this.path(key));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // deleted while listing, like S3
        throw fromFsError(err, this.path(key));
      }
      page.push({ key, size: s.size, lastModified: s.mtimeMs });
      if (page.length === PAGE) {
        this.count('list');
        yield { sentAt, entries: page };
        page = [];
        sentAt = Date.now();
      }
    }
    this.count('list');
    if (page.length) yield { sentAt, entries: page };
  }

  /** Keys of files under `dirKey` (ends with '/' or is ''), in key order; `.tmp/` (the store's staging) excluded. */
  private async *walk(dirKey: string, signal: AbortSignal | undefined): AsyncIterable<string> {
    throwIfAborted(signal);
    let names;
    try {
      names = await readdir(this.path(dirKey || '.'), { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return;
      throw fromFsError(err, this.path(dirKey));
    }
    // Key order: a directory `a` sorts as `a/`, so compare with the separator appended.
    const items = names.filter((n) => !(dirKey === '' && n.name === '.tmp')).map((n) => ({ n, sortKey: n.isDirectory() ? `${n.name}/` : n.name }));
    items.sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
    for (const { n } of items) {
      const key = `${dirKey}${n.name}`;
      if (n.isDirectory()) yield* this.walk(`${key}/`, signal);
      else if (n.isFile()) yield key;
    }
  }

  async read(key: string, opts: Signalled = {}): Promise<{ body: Buffer; lastModified: number } | undefined> {
    throwIfAborted(opts.signal);
    this.count('get');
    try {
      const [body, s] = await Promise.all([readFile(this.path(key)), stat(this.path(key))]);
      return { body, lastModified: s.mtimeMs };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fromFsError(err, this.path(key));
    }
  }

  async putIfAbsent(key: string, body: string, opts: Signalled = {}): Promise<boolean> {
    throwIfAborted(opts.signal);
    this.count('put');
    const target = this.path(key);
    const tmpDir = join(this.root, '.tmp');
    const tmp = join(tmpDir, `${randomBytes(8).toString('hex')}.part`);
    try {
      await mkdir(tmpDir, { recursive: true });
      await mkdir(dirname(target), { recursive: true });
      const fh = await open(tmp, 'wx');
      try {
        await fh.writeFile(body);
        await fh.sync();
      } finally {
        await fh.close();
      }
      try {
        await link(tmp, target);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw err;
      }
    } catch (err) {
      throw fromFsError(err, target);
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }

  async deleteMany(keys: readonly string[], opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    this.count('delete', keys.length ? 1 : 0);
    for (const key of keys) await rm(this.path(key), { force: true });
  }

  /** The directory store's staging files (`.tmp/*.part`) older than `olderThanMs`, removed; returns how many. */
  async removeTemp(olderThanMs: number, now = Date.now()): Promise<number> {
    const dir = join(this.root, '.tmp');
    let removed = 0;
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return 0;
    }
    for (const name of names) {
      const p = join(dir, name);
      const s = await stat(p).catch(() => undefined);
      if (!s || now - s.mtimeMs < olderThanMs) continue;
      await rm(p, { force: true, recursive: true });
      removed++;
    }
    return removed;
  }
}
