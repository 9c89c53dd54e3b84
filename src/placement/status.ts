// What lives where, what the rules want, and what is pending: the data behind `transship placement status`.
import type { Signalled } from '../store/contract.js';
import type { Regions } from './regions.js';
import type { Rules } from './rules.js';
import type { Replicator } from './replicator.js';

export interface RepoPlacement {
  repository: string;
  rule: { reason: string; regions?: string[] | undefined };
  /** tag → region → digest (absent region = tag not there). */
  tags: Record<string, Record<string, string>>;
}

export interface PlacementStatus {
  home: string;
  /** When a remote read is promoted into the home region (`reads` derived from prices unless configured). */
  promote: { policy: string; reads: number | null; windowSeconds: number };
  regions: Array<{ name: string; store: string; blobs: number; bytes: number; error?: string }>;
  repositories: RepoPlacement[];
  pending: Array<{ repo: string; tag: string; from: string; to: string; digest: string }>;
}

export async function placementStatus(regions: Regions, rules: Rules, replicator: Replicator, opts: Signalled = {}): Promise<PlacementStatus> {
  const p = rules.promote;
  // JSON has no Infinity: null = never reached (promotion is off).
  const promote = { policy: p.policy, reads: Number.isFinite(p.reads) ? p.reads : null, windowSeconds: p.windowMs / 1000 };
  const out: PlacementStatus = { home: regions.home, promote, regions: [], repositories: [], pending: [] };
  const repos = new Map<string, RepoPlacement>();
  for (const name of regions.names) {
    const store = regions.store(name);
    const entry: PlacementStatus['regions'][number] = { name, store: store.name, blobs: 0, bytes: 0 };
    try {
      for await (const b of store.listBlobs(opts)) {
        entry.blobs++;
        entry.bytes += b.size;
      }
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
