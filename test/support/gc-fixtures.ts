// Small images written straight into a store, for the GC tests: blobs, manifests (image, index, referrer), links and
// tags in the write order the invariants demand (blobs → manifest → link → tag).
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { readdir, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlobStore } from '../../packages/transship/src/store/contract.js';

export const MT_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MT_INDEX = 'application/vnd.oci.image.index.v1+json';

export interface Desc {
  mediaType: string;
  digest: string;
  size: number;
}

export function sha(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export async function putBytes(store: BlobStore, bytes: Buffer, mediaType = 'application/octet-stream'): Promise<Desc> {
  const digest = sha(bytes);
  await store.putBlob(digest, () => Readable.from([bytes]), { size: bytes.length });
  return { mediaType, digest, size: bytes.length };
}

/** An image manifest over fresh random layers (or the given ones); returns its descriptor and its blobs. */
export async function putImage(store: BlobStore, opts: { layers?: Desc[]; layerCount?: number; subject?: Desc; seed?: string } = {}): Promise<{ manifest: Desc; blobs: Desc[] }> {
  const seed = opts.seed ?? Math.random().toString(36);
  const config = await putBytes(store, Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed })), 'application/vnd.oci.image.config.v1+json');
  const layers = opts.layers ?? [];
  for (let i = 0; i < (opts.layerCount ?? (opts.layers ? 0 : 2)); i++) layers.push(await putBytes(store, Buffer.from(`layer ${seed} ${i} ${'x'.repeat(100 + i)}`), 'application/vnd.oci.image.layer.v1.tar'));
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT_MANIFEST, config, layers, ...(opts.subject ? { subject: opts.subject } : {}) }));
  const manifest = await putBytes(store, body, MT_MANIFEST);
  return { manifest, blobs: [config, ...layers, manifest] };
}

export async function putIndex(store: BlobStore, children: Desc[]): Promise<Desc> {
  return putBytes(store, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT_INDEX, manifests: children.map((c) => ({ ...c, platform: { os: 'linux', architecture: 'amd64' } })) })), MT_INDEX);
}

/** Links `manifest` to `repo` and points `tag` at it (when given). */
export async function publish(store: BlobStore, repo: string, manifest: Desc, tag?: string): Promise<void> {
  await store.linkManifest(repo, manifest.digest);
  if (tag) await store.putTag(repo, tag, manifest.digest);
}

/** Moves every file of a directory store `ms` into the past (ages without faking clocks). */
export async function ageFiles(root: string, ms: number): Promise<void> {
  const t = new Date(Date.now() - ms);
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else await utimes(p, t, t);
    }
  };
  await walk(root);
}
