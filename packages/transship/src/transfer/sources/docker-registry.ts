// `docker://HOST/REPO[:TAG|@DIGEST]`: pulling from a registry over the OCI distribution API. The HTTP side (auth
// handshake, timeouts, error mapping, the one observed retry) is registry-client.ts, shared with the docker://
// destination and `ls`.
//
// What is served is verified: a manifest's bytes must hash to the digest it was asked by and to the
// Docker-Content-Digest the registry claims; blob streams are checked against their descriptor while they flow.
// Blob GETs follow redirects (registries hand out storage URLs); fetch drops Authorization on cross-origin hops,
// which is what presigned S3 URLs need.
import type { Readable } from 'node:stream';
import { digestOf, parseDigest, digestMismatch } from '@transship/core/digest';
import { TransshipError } from '@transship/core/errors';
import { isDigestReference } from '@transship/core/reference';
import type { Signalled } from '@transship/core/signal';
import type { DockerReference } from '../reference.js';
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, MediaTypes, type Descriptor, type FetchedManifest, type ImageSource } from '../types.js';
import { parseManifest } from '../manifest.js';
import { discard, RegistryClient, type RegistryClientOptions } from './registry-client.js';
import { checkBytes, MAX_MANIFEST_BYTES, verifiedStream } from './verify.js';

export { DEFAULT_REGISTRY_TIMEOUTS, type RegistryTimeouts } from './registry-client.js';

export const MANIFEST_ACCEPT = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerManifestList, MediaTypes.dockerManifest].join(', ');

export type DockerRegistryOptions = RegistryClientOptions;

/** A blob response opened for a caller that verifies it (a mirror hashes it into its spool). */
export interface OpenedBlob {
  stream: Readable;
  /** From Content-Length, when the registry sent one. */
  size: number | undefined;
}

export class DockerRegistrySource implements ImageSource {
  readonly description: string;
  readonly client: RegistryClient;
  private rootManifest: FetchedManifest | undefined;

  constructor(
    readonly ref: DockerReference,
    opts: DockerRegistryOptions = {},
  ) {
    this.client = new RegistryClient(ref.registry, ref.endpoint, opts);
    this.client.want(`repository:${ref.repo}:pull`);
    this.description = `docker://${ref.registry}/${ref.repo}${ref.digest ? `@${ref.digest}` : `:${ref.tag ?? 'latest'}`}`;
  }

  /** Creates the source and resolves the root manifest (so a missing tag or bad credentials fail at open). */
  static async open(ref: DockerReference, opts: DockerRegistryOptions = {}): Promise<DockerRegistrySource> {
    const src = new DockerRegistrySource(ref, opts);
    await src.root(opts);
    return src;
  }

  async root(opts: Signalled = {}): Promise<FetchedManifest> {
    if (!this.rootManifest) this.rootManifest = await this.fetchManifest(this.ref.digest ?? this.ref.tag ?? 'latest', undefined, opts.signal);
    return this.rootManifest;
  }

  async manifest(desc: Descriptor, opts: Signalled = {}): Promise<FetchedManifest> {
    return this.fetchManifest(parseDigest(desc.digest).value, desc, opts.signal);
  }

  async blob(desc: Descriptor, opts: Signalled & { callerVerifies?: boolean | undefined } = {}): Promise<Readable> {
    const digest = parseDigest(desc.digest).value;
    const what = `${this.description}: blob ${digest}`;
    const res = await this.client.request({ url: `${this.ref.repo}/blobs/${digest}`, kind: 'blob', what }, opts.signal);
    // Bounded while it flows: the verifier (ours or the caller's) fails on the first byte past the descriptor's size.
    return verifiedStream(this.client.bodyStream(res, what), { ...desc, digest }, opts.signal, opts.callerVerifies);
  }

  /**
   * A manifest by tag or digest, verified (against the digest asked for and the registry's Docker-Content-Digest).
   * Unlike root(), nothing is cached: a mirror asks again when a tag may have moved.
   */
  async fetchReference(reference: string, opts: Signalled = {}): Promise<FetchedManifest> {
    return this.fetchManifest(reference, undefined, opts.signal);
  }

  /**
   * HEAD of a manifest: the digest the registry says the reference names now (Docker-Content-Digest), undefined
   * when it did not say. A HEAD does not count against Docker Hub's pull rate limit, so a mirror revalidates tags
   * with it.
   */
  async headManifest(reference: string, opts: Signalled = {}): Promise<string | undefined> {
    const claimed = await this.client.tagDigest(this.ref.repo, reference, MANIFEST_ACCEPT, opts.signal);
    return claimed ? parseDigest(claimed).value : undefined;
  }

  /**
   * A blob's response with its declared size and the body unread and unverified (bounded by the idle timeout): for a
   * caller that hashes the bytes itself before anything becomes visible. blob() is the verified form.
   */
  async openBlob(digest: string, opts: Signalled = {}): Promise<OpenedBlob> {
    const d = parseDigest(digest).value;
    const what = `${this.description}: blob ${d}`;
    const res = await this.client.request({ url: `${this.ref.repo}/blobs/${d}`, kind: 'blob', what }, opts.signal);
    if (!res.body) throw new TransshipError('TS_BACKEND_REJECTED', `${what}: empty response body`);
    const length = res.headers.get('content-length');
    const size = length !== null && /^\d+$/.test(length) ? Number(length) : undefined;
    return { stream: this.client.bodyStream(res, what), size };
  }

  async close(): Promise<void> {}

  private async fetchManifest(reference: string, expected: Descriptor | undefined, signal?: AbortSignal): Promise<FetchedManifest> {
    const what = `${this.description}: manifest ${reference}`;
    return this.client.retry('manifest', signal, async (s) => {
      const res = await this.client.send({ url: `${this.ref.repo}/manifests/${reference}`, headers: { accept: MANIFEST_ACCEPT }, kind: 'manifest', what }, s);
      const length = Number(res.headers.get('content-length') ?? '0');
      if (length > MAX_MANIFEST_BYTES) {
        await discard(res);
        throw new TransshipError('TS_MANIFEST_INVALID', `${what} is ${length} bytes; the limit is ${MAX_MANIFEST_BYTES}`);
      }
      // Read with the limit enforced chunk by chunk: a registry streaming without end is cut off at the limit,
      // never buffered first (Content-Length may be absent or lie).
      const bytes = await this.client.readBody(res, MAX_MANIFEST_BYTES, what, s);
      // The registry's claim and our request must both agree with the bytes.
      const claimed = res.headers.get('docker-content-digest');
      if (claimed) {
        const d = parseDigest(claimed);
        const actual = digestOf(bytes, d.algorithm);
        if (actual !== d.value) throw digestMismatch(d.value, actual);
      }
      const byDigest = isDigestReference(reference) ? parseDigest(reference) : undefined;
      const digest = byDigest ? digestOf(bytes, byDigest.algorithm) : digestOf(bytes);
      if (byDigest && digest !== byDigest.value) throw digestMismatch(byDigest.value, digest);
      const contentType = (res.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
      // A Content-Type that is not a manifest type (application/json, octet-stream) says nothing about the document.
      const said = expected?.mediaType ?? (INDEX_MEDIA_TYPES.includes(contentType) || MANIFEST_MEDIA_TYPES.includes(contentType) ? contentType : undefined);
      const declared = parseManifest(bytes, said, what).mediaType;
      const descriptor: Descriptor = expected ? { ...expected } : { mediaType: declared, digest, size: bytes.length };
      if (expected) checkBytes(bytes, expected);
      return { descriptor, bytes };
    }, isDigestReference(reference) ? reference : undefined);
  }
}
