// Resolves a parsed reference to an ImageSource or ImageDestination: stores (dir:, s3://, store:) here, image
// transports (oci:, oci-archive:, docker-archive:, docker://) in transfer/sources/. Command wiring, so it lives in
// cli/: it is the one place that picks between a plain store and the placement read path, and transfer/ (below
// placement in the layer map) must not know placement exists.
import { TransshipError } from '@transship/core/errors';
import type { Config } from '../config/config.js';
import { openConfiguredStore, openStore } from '../store/open.js';
import type { BlobStore } from '../store/contract.js';
import type { PresenceCache } from '../index/presence-cache.js';
import { isStoreReference, type Reference, type StoreReference } from '../transfer/reference.js';
import { openSource, openDestination } from '../transfer/sources/index.js';
import { StoreDestination } from '../transfer/store-destination.js';
import { StoreSource } from '../transfer/store-source.js';
import type { RegistryAccess } from './args.js';
import type { ImageDestination, ImageSource } from '../transfer/types.js';
import { Regions } from '../placement/regions.js';
import { Rules } from '../placement/rules.js';
import { PlacedReader } from '../placement/read-path.js';
import { PlacedSource } from '../placement/placed-source.js';

export function storeFor(ref: StoreReference, config: Config): BlobStore {
  const loc = ref.location;
  if (loc.kind === 'configured') return openConfiguredStore(config, loc.region ?? ref.region);
  return openStore(loc, { config, region: ref.region });
}

export async function resolveSource(ref: Reference, config: Config, signal?: AbortSignal, registry: RegistryAccess = {}): Promise<ImageSource> {
  if (isStoreReference(ref) && ref.location.kind === 'configured' && !ref.location.region && !ref.region && config.regions) {
    // The home store with regions configured: read through the placement read path (lazy fetch elsewhere).
    const regions = Regions.fromConfig(config);
    const source = new PlacedSource(new PlacedReader(regions, Rules.fromConfig(config)), ref.repo, ref.digest ?? ref.tag ?? 'latest');
    source.close = () => regions.close();
    return source;
  }
  if (isStoreReference(ref)) {
    const store = storeFor(ref, config);
    const source = new StoreSource(store, ref.repo, ref.digest ?? ref.tag ?? 'latest');
    const close = source.close.bind(source);
    source.close = async () => {
      await close();
      await store.close();
    };
    return source;
  }
  return openSource(ref, { signal, registry });
}

/**
 * `from` is the copy's source: when both are repositories of the same registry, the destination mounts blobs from
 * the source repository instead of uploading them.
 */
export async function resolveDestination(ref: Reference, config: Config, cache: PresenceCache | undefined, signal?: AbortSignal, registry: RegistryAccess = {}, from?: Reference): Promise<{ dest: ImageDestination; store?: BlobStore }> {
  if (isStoreReference(ref)) {
    if (ref.digest) throw new TransshipError('TS_INVALID_REFERENCE', 'a copy destination takes a tag, not a digest: the digest is whatever the source image has');
    const store = storeFor(ref, config);
    return { dest: new StoreDestination(store, ref.repo, ref.tag ?? 'latest', cache), store };
  }
  const mountFrom = ref.transport === 'docker' && from?.transport === 'docker' && from.endpoint === ref.endpoint ? from.repo : undefined;
  return { dest: await openDestination(ref, { signal, registry, mountFrom }) };
}
