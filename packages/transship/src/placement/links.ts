// The registry's per-repository small keys, copied between regions by the replicator. With auth on, the registry
// answers a blob read only when the blob is linked to the repository (`repos/<name>/blobs/<alg>/<hex>`), and the
// referrers API lists `repos/<name>/referrers/<alg>/<subject-hex>/<alg>/<hex>` (body: the referrer's descriptor).
// Both are facts about the repository, not about a region, so a replica must carry them or the replicated
// repository answers 404/empty in the target region (src/registry/links.ts writes them; the key shapes here must
// match it).
//
// Idempotent and cheap when there is nothing to do: one listing per prefix in the source; the target is listed only
// when the source has keys, and only missing keys are written (conditional writes, so a racing writer is harmless).
import type { BlobStore } from '../store/contract.js';
import type { Signalled } from '@transship/core/signal';
import { validateRepoName } from '@transship/core/names';
import { throwIfAborted } from '@transship/core/errors';
import { withSpan } from '@transship/core/tracing';

const DIGEST = '(?:sha256|sha512)/[a-f0-9]{64,128}';
/** Relative key shapes under `repos/<name>/`; anything else (a nested repository's keys) is not this repository's. */
const SHAPES: ReadonlyArray<{ dir: string; rest: RegExp }> = [
  { dir: 'blobs/', rest: new RegExp(`^${DIGEST}$`) },
  { dir: 'referrers/', rest: new RegExp(`^${DIGEST}/${DIGEST}$`) },
];

export interface LinkCopyResult {
  copied: number;
  bytes: number;
}

export async function copyRepoLinks(from: BlobStore, to: BlobStore, repo: string, opts: Signalled = {}): Promise<LinkCopyResult> {
  const base = `repos/${validateRepoName(repo)}/`;
  return withSpan('placement.copy_links', { 'transship.repo': repo, 'transship.from': from.name, 'transship.to': to.name }, async () => {
    const result: LinkCopyResult = { copied: 0, bytes: 0 };
    for (const { dir, rest } of SHAPES) {
      const prefix = base + dir;
      const wanted = (await from.listMeta(prefix, opts)).filter((k) => rest.test(k.slice(prefix.length)));
      if (wanted.length === 0) continue;
      const there = new Set(await to.listMeta(prefix, opts));
      for (const key of wanted) {
        throwIfAborted(opts.signal);
        if (there.has(key)) continue;
        const body = await from.getMeta(key, opts);
        // Deleted in the source since the listing: nothing to carry over.
        if (body === undefined) continue;
        await to.putMetaIfAbsent(key, body, opts);
        result.copied++;
        result.bytes += Buffer.byteLength(body);
      }
    }
    return result;
  });
}
