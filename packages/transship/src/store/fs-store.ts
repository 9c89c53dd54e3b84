// The embedded default store: a local directory with the same layout as a bucket.
//
// Why it works this way: every write goes to a private temp file under `<root>/.tmp/`, is fsynced, and only then
// renamed into place. rename(2) is atomic on one file system, so readers see either no blob or the whole verified
// blob — the same guarantee a single S3 PutObject gives. Blobs are written only after their bytes hashed to the
// digest (VerifyingStream fails the pipeline before the rename). Two writers of the same digest both succeed and
// leave identical bytes; the second one notices the existing file and reports `exists`.
import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { TransshipError, fromFsError, throwIfAborted } from '@transship/core/errors';
import { VerifyingStream, parseDigest } from '@transship/core/digest';
import { fileStream, SERVING_CHUNK_BYTES } from '@transship/core/file-stream';
import { validateRepoName } from '@transship/core/names';
import type { BlobInfo, BlobStore, ByteRange, PutBlobOptions, PutOutcome, Signalled } from './contract.js';
import { blobKey, checkMetaKey, digestFromBlobKey, manifestLinkKey, manifestLinksPrefix, tagKey, tagsPrefix } from './keys.js';
import { blobUploadBytesTotal } from '../telemetry/metrics.js';

export class FsStore implements BlobStore {
  readonly name: string;
  private readonly counts: Record<string, number> = {};

  constructor(
    readonly root: string,
    readonly region = 'local',
  ) {
    this.name = `dir:${root}`;
  }

  private count(op: string): void {
    this.counts[op] = (this.counts[op] ?? 0) + 1;
  }

  requestCounts(): Record<string, number> {
    return { ...this.counts };
  }

  private path(key: string): string {
    return join(this.root, ...key.split('/'));
  }

  async statBlob(digest: string, opts: Signalled = {}): Promise<BlobInfo | undefined> {
    throwIfAborted(opts.signal);
    const p = this.path(blobKey(digest));
    this.count('stat');
    try {
      const s = await stat(p);
      return { digest: parseDigest(digest).value, size: s.size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fromFsError(err, p);
    }
  }

  async statBlobs(digests: readonly string[], opts: Signalled = {}): Promise<Map<string, BlobInfo>> {
    const out = new Map<string, BlobInfo>();
    for (const d of digests) {
      const info = await this.statBlob(d, opts);
      if (info) out.set(info.digest, info);
    }
    return out;
  }

  async getBlob(digest: string, opts: Signalled & { range?: ByteRange | undefined } = {}): Promise<Readable> {
    throwIfAborted(opts.signal);
    const p = this.path(blobKey(digest));
    this.count('get');
    // Open first so a missing blob is a clean error here, not an 'error' event later on the stream.
    let fh;
    try {
      fh = await open(p, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new TransshipError('TS_BLOB_UNKNOWN', `blob ${digest} is not in ${this.name}`, { details: { digest } });
      throw fromFsError(err, p);
    }
    // Large reads: a registry GET sends this to a socket (half the CPU of 64 KiB reads, see file-stream.ts).
    return fileStream(fh, opts.range, opts.signal, SERVING_CHUNK_BYTES);
  }

  async putBlob(digest: string, source: () => Readable | Promise<Readable>, opts: PutBlobOptions = {}): Promise<PutOutcome> {
    throwIfAborted(opts.signal);
    const d = parseDigest(digest);
    const existing = await this.statBlob(d.value, opts);
    if (existing) return { status: 'exists', size: existing.size };
    const target = this.path(blobKey(d.value));
    const verify = new VerifyingStream({ expected: d, ...(opts.size !== undefined ? { size: opts.size } : {}) });
    if (opts.onProgress) {
      const cb = opts.onProgress;
      verify.on('data', () => cb(verify.bytes));
    }
    const input = await source();
    await this.atomicWrite(target, async (tmpPath) => {
      await pipeline(input, verify, createWriteStream(tmpPath, { flags: 'wx' }), opts.signal ? { signal: opts.signal } : {});
    });
    this.count('put');
    blobUploadBytesTotal.inc({ store: this.name }, verify.bytes);
    return { status: 'written', size: verify.bytes };
  }

  async deleteBlob(digest: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    await this.removeKey(blobKey(digest));
  }

  async *listBlobs(opts: Signalled = {}): AsyncIterable<BlobInfo> {
    for (const alg of ['sha256', 'sha512']) {
      const dir = this.path(`blobs/${alg}`);
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw fromFsError(err, dir);
      }
      for (const n of names.sort()) {
        throwIfAborted(opts.signal);
        const digest = digestFromBlobKey(`blobs/${alg}/${n}`);
        if (!digest) continue;
        const s = await stat(join(dir, n)).catch(() => undefined);
        if (s?.isFile()) yield { digest, size: s.size };
      }
    }
  }

  async getTag(repo: string, tag: string, opts: Signalled = {}): Promise<string | undefined> {
    throwIfAborted(opts.signal);
    const body = await this.readSmall(tagKey(repo, tag));
    return body === undefined ? undefined : parseDigest(body.trim()).value;
  }

  async putTag(repo: string, tag: string, digest: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    await this.writeSmall(tagKey(repo, tag), parseDigest(digest).value);
  }

  async deleteTag(repo: string, tag: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    await this.removeKey(tagKey(repo, tag));
  }

  async listTags(repo: string, opts: Signalled = {}): Promise<string[]> {
    throwIfAborted(opts.signal);
    return (await this.listDir(tagsPrefix(repo))).sort();
  }

  async linkManifest(repo: string, digest: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    const key = manifestLinkKey(repo, digest);
    if ((await this.readSmall(key)) === undefined) await this.writeSmall(key, parseDigest(digest).value);
  }

  async unlinkManifest(repo: string, digest: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    await this.removeKey(manifestLinkKey(repo, digest));
  }

  async hasManifestLink(repo: string, digest: string, opts: Signalled = {}): Promise<boolean> {
    throwIfAborted(opts.signal);
    return (await this.readSmall(manifestLinkKey(repo, digest))) !== undefined;
  }

  async listManifestLinks(repo: string, opts: Signalled = {}): Promise<string[]> {
    throwIfAborted(opts.signal);
    const out: string[] = [];
    for (const alg of await this.listDir(manifestLinksPrefix(repo))) {
      for (const hex of await this.listDir(`${manifestLinksPrefix(repo)}${alg}/`)) {
        const d = digestFromBlobKey(`blobs/${alg}/${hex}`);
        if (d) out.push(d);
      }
    }
    return out.sort();
  }

  async repoState(repo: string, opts: Signalled = {}): Promise<{ tags: Map<string, string | undefined>; manifests: Set<string> }> {
    const tags = new Map<string, string | undefined>();
    for (const t of await this.listTags(repo, opts)) tags.set(t, await this.getTag(repo, t, opts));
    return { tags, manifests: new Set(await this.listManifestLinks(repo, opts)) };
  }

  async listRepos(opts: Signalled = {}): Promise<string[]> {
    throwIfAborted(opts.signal);
    // A repository is any directory under repos/ that has a tags/ or manifests/ child; names nest (a/b/c).
    const out: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      const names = await this.listDir(`repos/${rel}`);
      if (rel && (names.includes('tags') || names.includes('manifests'))) out.push(rel.replace(/\/$/, ''));
      for (const n of names) {
        if (n === 'tags' || n === 'manifests') continue;
        const s = await stat(this.path(`repos/${rel}${n}`)).catch(() => undefined);
        if (s?.isDirectory()) await walk(`${rel}${n}/`);
      }
    };
    await walk('');
    return out.filter((r) => {
      try {
        return validateRepoName(r) === r;
      } catch {
        return false;
      }
    }).sort();
  }

  async putMetaIfAbsent(key: string, body: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    if ((await this.readSmall(checkMetaKey(key))) === undefined) await this.writeSmall(key, body);
  }

  async getMeta(key: string, opts: Signalled = {}): Promise<string | undefined> {
    throwIfAborted(opts.signal);
    return this.readSmall(checkMetaKey(key));
  }

  async hasMeta(key: string, opts: Signalled = {}): Promise<boolean> {
    return (await this.getMeta(key, opts)) !== undefined;
  }

  async listMeta(prefix: string, opts: Signalled = {}): Promise<string[]> {
    checkMetaKey(prefix, true);
    const out: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      for (const n of await this.listDir(rel)) {
        throwIfAborted(opts.signal);
        const s = await stat(this.path(`${rel}${n}`)).catch(() => undefined);
        if (s?.isDirectory()) await walk(`${rel}${n}/`);
        else if (s?.isFile()) out.push(`${rel}${n}`);
      }
    };
    await walk(prefix);
    return out.sort();
  }

  async deleteMeta(key: string, opts: Signalled = {}): Promise<void> {
    throwIfAborted(opts.signal);
    await this.removeKey(checkMetaKey(key));
  }

  async close(): Promise<void> {}

  // --- helpers ---

  private async atomicWrite(target: string, write: (tmpPath: string) => Promise<void>): Promise<void> {
    const tmpDir = join(this.root, '.tmp');
    const tmp = join(tmpDir, `${randomBytes(8).toString('hex')}.part`);
    try {
      await mkdir(tmpDir, { recursive: true });
      await mkdir(dirname(target), { recursive: true });
      await write(tmp);
      const fh = await open(tmp, 'r+');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, target);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      if (err instanceof TransshipError) throw err;
      if ((err as Error).name === 'AbortError') throw new TransshipError('TS_CANCELLED', 'cancelled while writing', { cause: err });
      throw fromFsError(err, target);
    }
  }

  private async writeSmall(key: string, body: string): Promise<void> {
    this.count('put');
    await this.atomicWrite(this.path(key), async (tmp) => {
      const fh = await open(tmp, 'wx');
      try {
        await fh.writeFile(body);
      } finally {
        await fh.close();
      }
    });
  }

  private async readSmall(key: string): Promise<string | undefined> {
    const p = this.path(key);
    this.count('get');
    try {
      return await readFile(p, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fromFsError(err, p);
    }
  }

  private async removeKey(key: string): Promise<void> {
    const p = this.path(key);
    this.count('delete');
    await rm(p, { force: true }).catch((err: unknown) => {
      throw fromFsError(err, p);
    });
  }

  private async listDir(prefix: string): Promise<string[]> {
    const p = this.path(prefix.replace(/\/$/, ''));
    this.count('list');
    try {
      return await readdir(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
      throw fromFsError(err, p);
    }
  }
}
