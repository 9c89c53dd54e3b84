// One entry point per direction for the image transports, so the CLI and the engine never switch on transport
// names themselves. Store transports (dir:, s3://, store:) are opened by the store layer, not here.
import { TransshipError } from '@transship/core/errors';
import { formatReference, parseImageReference, type ImageReference } from '../reference.js';
import type { ImageDestination, ImageSource } from '../types.js';
import { DockerArchiveSource } from './docker-archive.js';
import { DockerRegistrySource, type DockerRegistryOptions } from './docker-registry.js';
import { OciArchiveDestination, openOciArchiveSource } from './oci-archive.js';
import { OciLayoutDestination, openOciLayoutSource } from './oci-layout.js';

export interface OpenOptions {
  signal?: AbortSignal | undefined;
  /** docker:// only. */
  registry?: Omit<DockerRegistryOptions, 'signal'> | undefined;
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
      return DockerRegistrySource.open(r, { ...(opts.registry ?? {}), signal: opts.signal });
  }
}

/** Opens an image destination (oci:, oci-archive:); docker-archive: and docker:// are sources only for now. */
export async function openDestination(ref: ImageReference | string, opts: OpenOptions = {}): Promise<ImageDestination> {
  const r = toRef(ref);
  const signalled = { signal: opts.signal };
  switch (r.transport) {
    case 'oci':
      return OciLayoutDestination.open(r.path, r, signalled);
    case 'oci-archive':
      return OciArchiveDestination.open(r.path, r, signalled);
    case 'docker-archive':
    case 'docker':
      throw new TransshipError('TS_USAGE', `${formatReference(r)}: ${r.transport === 'docker' ? 'docker://' : 'docker-archive:'} can only be read from (copy to oci:, oci-archive:, dir: or s3:// instead)`, {
        details: { transport: r.transport },
      });
  }
}

export { DockerArchiveSource, DockerRegistrySource, OciArchiveDestination, OciLayoutDestination, openOciArchiveSource, openOciLayoutSource };
export type { DockerRegistryOptions };
