// The shapes the copy engine moves: sources yield manifests and blobs; destinations accept them. Keeping both
// sides this small lets every transport (oci:, oci-archive:, docker-archive:, docker://, stores) plug into one
// engine with one dedup, retry and progress path.
import type { Readable } from 'node:stream';
import type { Signalled } from '@transship/core/signal';

export const MediaTypes = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
} as const;

export const MANIFEST_MEDIA_TYPES: readonly string[] = [MediaTypes.ociManifest, MediaTypes.dockerManifest];
export const INDEX_MEDIA_TYPES: readonly string[] = [MediaTypes.ociIndex, MediaTypes.dockerManifestList];

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string> | undefined;
  platform?: Record<string, unknown> | undefined;
  artifactType?: string | undefined;
}

/** A manifest or index as fetched: its exact bytes (digests are over bytes, never over re-serialized JSON). */
export interface FetchedManifest {
  descriptor: Descriptor;
  bytes: Buffer;
}

export interface ImageSource {
  /** Human-readable origin for messages, e.g. `oci:/tmp/layout:latest`. */
  readonly description: string;
  /** The root manifest or index the reference names (tag resolved). */
  root(opts?: Signalled): Promise<FetchedManifest>;
  /** A child manifest of an index, by digest. */
  manifest(desc: Descriptor, opts?: Signalled): Promise<FetchedManifest>;
  /**
   * Opens a fresh stream of a blob (may be called again on retry). Sources verify digest and size while the bytes
   * stream, unless `callerVerifies` says the consumer does it anyway (every ImageDestination.putBlob does): hashing
   * each byte once instead of twice is most of a copy's CPU.
   */
  blob(desc: Descriptor, opts?: Signalled & { callerVerifies?: boolean | undefined }): Promise<Readable>;
  close(): Promise<void>;
}

export interface DestinationPutResult {
  /** `mounted`: a registry linked a blob it already had in another repository (cross-repository mount). */
  status: 'written' | 'exists' | 'mounted';
}

export interface ImageDestination {
  readonly description: string;
  /** Which of these digests the destination already holds (batch: the "before any byte moves" check). */
  present(descs: readonly Descriptor[], opts?: Signalled): Promise<Map<string, 'cache' | 'exists'>>;
  /** Must verify the bytes against `desc.digest` and `desc.size` before anything becomes visible. */
  putBlob(desc: Descriptor, open: () => Promise<Readable>, opts?: Signalled & { onProgress?: (bytes: number) => void }): Promise<DestinationPutResult>;
  /** Manifests are blobs too; written after every blob they reference. */
  putManifest(m: FetchedManifest, opts?: Signalled): Promise<DestinationPutResult>;
  /** Optional: told which digests were already present (lets commit() skip writes that are already true). */
  notePresent?(rootDigest: string, present: ReadonlyMap<string, unknown>): void;
  /** Optional: requests sent so far, by operation (S3 operation or HTTP method), for summaries. */
  requestCounts?(): Record<string, number>;
  /** Makes the root visible under the destination's tag: the last write. */
  commit(root: FetchedManifest, opts?: Signalled): Promise<void>;
  close(): Promise<void>;
}
