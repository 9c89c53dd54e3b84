// What lives where, what the rules want, and what is pending: the data behind `transship placement status`.
import type { Signalled } from '@transship/core/signal';
import type { Regions } from './regions.js';
import type { Rules } from './rules.js';
import type { Replicator } from './replicator.js';
import type { BlobStore } from '../store/contract.js';
import { PROMOTED_PREFIX, parseMarkers, stampPeriodMs } from './promoted.js';

/** Promoted copies (cache entries, src/placement/evict.ts) in one region, and how many are idle past the limit. */
export interface PromotedUsage {
  blobs: number;
  bytes: number;
  /** Idle longer than `evictAfterIdle`: the next eviction pass removes them unless a local repository needs them. */
  idleBlobs: number;
  idleBytes: number;
}

/** Promoted usage of `store`, given the sizes of its blobs (one LIST of the markers). */
export async function promotedUsage(store: BlobStore, sizes: ReadonlyMap<string, number>, evictAfterIdleMs: number, opts: Signalled & { now?: number } = {}): Promise<PromotedUsage> {
  const out: PromotedUsage = { blobs: 0, bytes: 0, idleBlobs: 0, idleBytes: 0 };
  const now = opts.now ?? Date.now();
  const stamp = stampPeriodMs(evictAfterIdleMs);
  for (const e of parseMarkers(await store.listMeta(PROMOTED_PREFIX, opts)).values()) {
    const size = sizes.get(e.digest);
    if (size === undefined) continue;
    out.blobs++;
    out.bytes += size;
    if (now - ((e.reads.at(-1) ?? 0) + stamp) > evictAfterIdleMs) {
      out.idleBlobs++;
      out.idleBytes += size;
    }
  }
  return out;
}

export interface RepoPlacement {
  repository: string;
  rule: { reason: string; regions?: string[] | undefined };
  /** tag → region → digest (absent region = tag not there). */
  tags: Record<string, Record<string, string>>;
}

export interface PlacementStatus {
  home: string;
  /** When a remote read is promoted into the home region (`reads` derived from prices unless configured). */
  promote: { policy: string; reads: number | null; windowSeconds: number; evictAfterIdleSeconds: number | null };
  regions: Array<{ name: string; store: string; blobs: number; bytes: number; promoted?: PromotedUsage; error?: string }>;
  repositories: RepoPlacement[];
  pending: Array<{ repo: string; tag: string; from: string; to: string; digest: string }>;
}

export async function placementStatus(regions: Regions, rules: Rules, replicator: Replicator, opts: Signalled = {}): Promise<PlacementStatus> {
  const p = rules.promote;
  // JSON has no Infinity: null = never reached (promotion is off).
  const promote = { policy: p.policy, reads: Number.isFinite(p.reads) ? p.reads : null, windowSeconds: p.windowMs / 1000, evictAfterIdleSeconds: Number.isFinite(p.evictAfterIdleMs) ? p.evictAfterIdleMs / 1000 : null };
  const out: PlacementStatus = { home: regions.home, promote, regions: [], repositories: [], pending: [] };
  const repos = new Map<string, RepoPlacement>();
  for (const name of regions.names) {
    const store = regions.store(name);
    const entry: PlacementStatus['regions'][number] = { name, store: store.name, blobs: 0, bytes: 0 };
    try {
      const sizes = new Map<string, number>();
      for await (const b of store.listBlobs(opts)) {
        entry.blobs++;
        entry.bytes += b.size;
        sizes.set(b.digest, b.size);
      }
      if (regions.others.length) entry.promoted = await promotedUsage(store, sizes, p.evictAfterIdleMs, opts);
      for (const repo of await store.listRepos(opts)) {
        const rule = rules.ruleFor(repo);
        const r = repos.get(repo) ?? { repository: repo, rule: { reason: rule.reason, ...(rule.regions ? { regions: rule.regions } : {}) }, tags: {} };
        repos.set(repo, r);
        for (const tag of await store.listTags(repo, opts)) {
          const digest = await store.getTag(repo, tag, opts);
          if (digest) (r.tags[tag] ??= {})[name] = digest;
        }
      }
    } catch (err) {
      entry.error = (err as Error).message;
    }
    out.regions.push(entry);
  }
  out.repositories = [...repos.values()].sort((a, b) => a.repository.localeCompare(b.repository));
  try {
    out.pending = (await replicator.pending(opts)).tasks;
  } catch {
    // A region that is down makes "pending" unknowable; the per-region error above says why.
  }
  return out;
}
