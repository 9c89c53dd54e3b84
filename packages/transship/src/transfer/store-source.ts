// Reading an image back out of a BlobStore: tag → manifest digest → manifest bytes (verified) → blobs (verified
// while they stream), so a corrupted store is caught on the way out, not by the consumer.
import { pipeline } from 'node:stream';
import type { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import type { BlobStore } from '../store/contract.js';
import type { Signalled } from '@transship/core/signal';
import { TransshipError } from '@transship/core/errors';
import { VerifyingStream, digestMismatch, digestOf, parseDigest } from '@transship/core/digest';
import { validateRepoName } from '@transship/core/names';
import { parseTagOrDigest } from '@transship/core/reference';
import { parseManifest } from './manifest.js';
import type { Descriptor, FetchedManifest, ImageSource } from './types.js';

export class StoreSource implements ImageSource {
  readonly description: string;
  private readonly target: ReturnType<typeof parseTagOrDigest>;

  constructor(
    readonly store: BlobStore,
    readonly repo: string,
    /** A tag or a digest. */
    readonly ref: string,
  ) {
    validateRepoName(repo);
    this.target = parseTagOrDigest(ref);
    this.description = `${store.name}/${repo}${this.target.digest !== undefined ? '@' : ':'}${ref}`;
  }

  async root(opts: Signalled = {}): Promise<FetchedManifest> {
    let digest: string;
    if (this.target.digest !== undefined) digest = this.target.digest;
    else {
      const d = await this.store.getTag(this.repo, this.ref, opts);
      if (!d) throw new TransshipError('TS_TAG_UNKNOWN', `tag "${this.ref}" not found in ${this.store.name}/${this.repo}`, { details: { repo: this.repo, tag: this.ref } });
      digest = d;
    }
    const bytes = await this.readManifest(digest, opts);
    const parsed = parseManifest(bytes);
    return { descriptor: { mediaType: parsed.mediaType, digest, size: bytes.length }, bytes };
  }

  async manifest(desc: Descriptor, opts: Signalled = {}): Promise<FetchedManifest> {
    const bytes = await this.readManifest(desc.digest, opts);
    return { descriptor: desc, bytes };
  }

  private async readManifest(digest: string, opts: Signalled): Promise<Buffer> {
    const bytes = await buffer(await this.store.getBlob(digest, opts));
    const actual = digestOf(bytes, parseDigest(digest).algorithm);
    if (actual !== digest) throw digestMismatch(digest, actual);
    return bytes;
  }

  async blob(desc: Descriptor, opts: Signalled & { callerVerifies?: boolean | undefined } = {}): Promise<Readable> {
    const raw = await this.store.getBlob(desc.digest, opts);
    if (opts.callerVerifies) return raw;
    const verify = new VerifyingStream({ expected: desc.digest, size: desc.size });
    return pipeline(raw, verify, () => undefined);
  }

  async close(): Promise<void> {}
}
