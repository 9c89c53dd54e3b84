// One entry point per direction for the image transports, so the CLI and the engine never switch on transport
// names themselves. Store transports (dir:, s3://, store:) are opened by the store layer, not here.
import { TransshipError } from '@transship/core/errors';
import { formatReference, parseImageReference, type ImageReference } from '../reference.js';
import { RegistryDestination } from '../registry-destination.js';
import { lookupCredentials } from './registry-credentials.js';
import type { ImageDestination, ImageSource } from '../types.js';
import { DockerArchiveSource } from './docker-archive.js';
import { DockerRegistrySource, type DockerRegistryOptions } from './docker-registry.js';
import { OciArchiveDestination, openOciArchiveSource } from './oci-archive.js';
import { OciLayoutDestination, openOciLayoutSource } from './oci-layout.js';

export interface OpenOptions {
  signal?: AbortSignal | undefined;
  /** docker:// only. Credentials not given here are looked up (registry-credentials.ts: auth files, helpers). */
  registry?: Omit<DockerRegistryOptions, 'signal'> | undefined;
  /** docker:// destinations only: a repository on the same registry to mount blobs from. */
  mountFrom?: string | undefined;
}

/** docker:// options with the credentials resolved the way skopeo/podman/docker resolve them. */
async function registryOptions(r: ImageReference & { transport: 'docker' }, opts: OpenOptions): Promise<DockerRegistryOptions> {
  const credentials = await lookupCredentials(r.registry, r.repo, { explicit: opts.registry?.credentials, signal: opts.signal });
  return { ...(opts.registry ?? {}), credentials, signal: opts.signal };
}

function toRef(ref: ImageReference | string): ImageReference {
  return typeof ref === 'string' ? parseImageReference(ref) : ref;
}

/** Opens an image source; the root manifest is resolved (a missing tag fails here, not mid-copy). */
export async function openSource(ref: ImageReference | string, opts: OpenOptions = {}): Promise<ImageSource> {
  const r = toRef(ref);
  const signalled = { signal: opts.signal };
  switch (r.transport) {
    case 'oci':
      return openOciLayoutSource(r.path, r, signalled);
    case 'oci-archive':
      return openOciArchiveSource(r.path, r, signalled);
    case 'docker-archive':
      return DockerArchiveSource.open(r.path, { name: r.name, index: r.index }, signalled);
    case 'docker':
      return DockerRegistrySource.open(r, await registryOptions(r, opts));
  }
}

/** Opens an image destination (oci:, oci-archive:, docker://); docker-archive: is a source only. */
export async function openDestination(ref: ImageReference | string, opts: OpenOptions = {}): Promise<ImageDestination> {
  const r = toRef(ref);
  const signalled = { signal: opts.signal };
  switch (r.transport) {
    case 'oci':
      return OciLayoutDestination.open(r.path, r, signalled);
    case 'oci-archive':
      return OciArchiveDestination.open(r.path, r, signalled);
    case 'docker':
      return new RegistryDestination(r, { ...(await registryOptions(r, opts)), mountFrom: opts.mountFrom });
    case 'docker-archive':
      throw new TransshipError('TS_USAGE', `${formatReference(r)}: docker-archive: can only be read from (copy to oci:, oci-archive:, docker://, dir: or s3:// instead)`, {
        details: { transport: r.transport },
      });
  }
}

export { DockerArchiveSource, DockerRegistrySource, RegistryDestination, OciArchiveDestination, OciLayoutDestination, openOciArchiveSource, openOciLayoutSource };
export type { DockerRegistryOptions };
