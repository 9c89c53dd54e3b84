// The registry's per-repository small keys, copied between regions by the replicator. With auth on, the registry
// answers a blob read only when the blob is linked to the repository (`repos/<name>/_layers/<alg>/<hex>`), and the
// referrers API lists `repos/<name>/_referrers/<alg>/<subject-hex>/<alg>/<hex>` (body: the referrer's descriptor).
// Both are facts about the repository, not about a region, so a replica must carry them or the replicated
// repository answers 404/empty in the target region (src/registry/links.ts writes them; store/keys.ts builds and
// parses both).
//
// Idempotent and cheap when there is nothing to do: one listing per prefix in the source; the target is listed only
// when the source has keys, and only missing keys are written (conditional writes, so a racing writer is harmless).
import type { BlobStore, Signalled } from '../store/contract.js';
import { throwIfAborted } from '../core/errors.js';
import { layerLinksPrefix, parseRepoKey, referrersRootPrefix, type RepoKey } from '../store/keys.js';
import { withSpan } from '../telemetry/tracing.js';

/** The two kinds copied, each with its prefix; a key of another kind or repository under it is not copied. */
const KINDS: ReadonlyArray<{ kind: RepoKey['kind']; prefix: (repo: string) => string }> = [
  { kind: 'layer', prefix: layerLinksPrefix },
  { kind: 'referrer', prefix: referrersRootPrefix },
];

export interface LinkCopyResult {
  copied: number;
  bytes: number;
}

export async function copyRepoLinks(from: BlobStore, to: BlobStore, repo: string, opts: Signalled = {}): Promise<LinkCopyResult> {
  return withSpan('placement.copy_links', { 'transship.repo': repo, 'transship.from': from.name, 'transship.to': to.name }, async () => {
    const result: LinkCopyResult = { copied: 0, bytes: 0 };
    for (const { kind, prefix: prefixOf } of KINDS) {
      const prefix = prefixOf(repo);
      const wanted = (await from.listMeta(prefix, opts)).filter((key) => {
        const k = parseRepoKey(key);
        return k?.kind === kind && k.repo === repo;
      });
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
