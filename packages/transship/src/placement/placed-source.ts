// An image source over all regions (home first, lazy fetch elsewhere): what `copy store:REPO:TAG …` reads from when
// regions are configured, so copying out of the home store works even for images pushed in another region.
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { TransshipError } from '@transship/core/errors';
import { VerifyingStream, digestMismatch, digestOf, parseDigest } from '@transship/core/digest';
import { validateRepoName } from '@transship/core/names';
import { parseTagOrDigest } from '@transship/core/reference';
import type { Signalled } from '@transship/core/signal';
import { parseManifest } from '../transfer/manifest.js';
import type { Descriptor, FetchedManifest, ImageSource } from '../transfer/types.js';
import type { PlacedReader } from './read-path.js';

export class PlacedSource implements ImageSource {
  readonly description: string;
  private readonly target: ReturnType<typeof parseTagOrDigest>;

  constructor(
    private readonly reader: PlacedReader,
    readonly repo: string,
    readonly ref: string,
  ) {
    validateRepoName(repo);
    this.target = parseTagOrDigest(ref);
    this.description = `store@${reader.regions.home}:${repo}${this.target.digest !== undefined ? '@' : ':'}${ref}`;
  }

  async root(opts: Signalled = {}): Promise<FetchedManifest> {
    let digest: string;
    if (this.target.digest !== undefined) digest = this.target.digest;
    else {
      const found = await this.reader.getTag(this.repo, this.ref, opts);
      if (!found) throw new TransshipError('TS_TAG_UNKNOWN', `tag "${this.ref}" of ${this.repo} is in no region (${this.reader.regions.names.join(', ')})`, { details: { repo: this.repo, tag: this.ref } });
      digest = found.digest;
    }
    const bytes = await this.read(digest, opts);
    const parsed = parseManifest(bytes);
    return { descriptor: { mediaType: parsed.mediaType, digest, size: bytes.length }, bytes };
  }

  async manifest(desc: Descriptor, opts: Signalled = {}): Promise<FetchedManifest> {
    return { descriptor: desc, bytes: await this.read(desc.digest, opts) };
  }

  private async read(digest: string, opts: Signalled): Promise<Buffer> {
    const bytes = await buffer((await this.reader.open(digest, { ...opts, repo: this.repo })).stream);
    const actual = digestOf(bytes, parseDigest(digest).algorithm);
    if (actual !== digest) throw digestMismatch(digest, actual);
    return bytes;
  }

  async blob(desc: Descriptor, opts: Signalled & { callerVerifies?: boolean | undefined } = {}): Promise<Readable> {
    const placed = await this.reader.open(desc.digest, { ...opts, repo: this.repo });
    if (opts.callerVerifies) return placed.stream;
    return pipeline(placed.stream, new VerifyingStream({ expected: desc.digest, size: desc.size }), () => undefined);
  }

  async close(): Promise<void> {}
}
