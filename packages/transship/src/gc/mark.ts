// Mark: everything reachable from the roots, read after the pass started (docs/gc.md "What is garbage"). One streamed
// listing of `repos/` gives every repository's tags, manifest links and referrer links with their modification
// times; each tag is resolved (from its ETag when it is the MD5 of a linked digest, else one GET), each manifest read
// once and parsed; the retention rule of the repository (retention.ts) decides which tags and links stay roots; what
// they reach is marked: the manifest's bytes, config, layers, children (recursively) and referrers. Placement's
// promoted copies (`_placement/` markers) are roots as well — eviction owns their life. Pull markers
// (`repos/<name>/_pulled/…`, registry/pulls.ts) come with the same listing, at no extra request: they date the tags'
// last pulls for retention's pulledWithin and are never roots; those whose manifest is no root of their repository
// any more are handed to the sweep to remove.
// A store not yet migrated may still hold old-layout keys: they are read as roots too and never deleted here.
// Anything that could not be read (other than a blob that is simply gone or unparseable) fails the pass: an
// incomplete mark must never reach the sweep.
import { createHash } from 'node:crypto';
import { buffer } from 'node:stream/consumers';
import { isTransshipError, throwIfAborted } from '@transship/core/errors';
import { forEachLimit } from '@transship/core/limit';
import type { BlobStore, Signalled } from '../store/contract.js';
import { PLACEMENT_PREFIX, REPOS_PREFIX, legacyToCurrent, parseLegacyRepoKey, parsePlacementKey, parsePulledKey, parseRepoKey } from '../store/keys.js';
import { parseManifest, references } from '../transfer/manifest.js';
import { MarkSet } from './mark-set.js';
import { decide, type ManifestState, type TagState } from './retention.js';
import type { GcSettings } from './settings.js';

export interface TagRemoval extends TagState {
  repo: string;
  key: string;
  /** The rule has pulledWithin: a pull marker of the tag's manifest newer than `pulledAt` keeps it (sweep.ts). */
  pullsCount: boolean;
}

/** A pull marker whose manifest is no root of its repository any more (a tag removed or deleted, a link gone). */
export interface StalePull {
  repo: string;
  digest: string;
  key: string;
}

export interface LinkExpiry {
  repo: string;
  digest: string;
  key: string;
  /** Referrer links naming the expired manifest (removed with it). */
  referrerKeys: string[];
}

export interface MarkResult {
  /** Local clock when the mark started: every root visible before it was seen. */
  startedAt: number;
  set: MarkSet;
  repositories: number;
  tags: number;
  manifests: number;
  /** Linked manifests whose bytes are gone (already broken before this pass; reported, nothing to mark). */
  missingManifests: string[];
  /** Retention's decisions, acted on by the sweep after a re-check. */
  removeTags: TagRemoval[];
  expireLinks: LinkExpiry[];
  /** Pull markers to remove once the policy deletions are done (sweep.ts sweepPolicy). */
  stalePulls: StalePull[];
}

interface RepoKeys {
  tags: Map<string, { key: string; lastModified: number; etag: string | undefined; legacy: boolean }>;
  manifests: Map<string, { key: string; lastModified: number; legacy: boolean }>;
  referrers: Array<{ subject: string; digest: string; key: string }>;
  /** Pull markers (registry/pulls.ts) by manifest digest: key and when the pull was recorded. */
  pulled: Map<string, { key: string; lastModified: number }>;
}

interface ManifestInfo {
  refs: string[];
  children: string[];
  subject: string | undefined;
}

const READ_CONCURRENCY = 16;

export class Marker {
  private readonly info = new Map<string, ManifestInfo | null>();
  private readonly visited = new Set<string>();
  readonly set = new MarkSet();
  readonly missing: string[] = [];

  constructor(
    private readonly store: BlobStore,
    private readonly settings: GcSettings,
    private readonly now: () => number,
  ) {}

  /** A manifest's references, read once per pass; null when its bytes are gone or are not a manifest. */
  private async manifest(digest: string, signal: AbortSignal | undefined): Promise<ManifestInfo | null> {
    const hit = this.info.get(digest);
    if (hit !== undefined) return hit;
    let out: ManifestInfo | null;
    try {
      const parsed = parseManifest(await buffer(await this.store.getBlob(digest, { signal })));
      out = {
        refs: references(parsed).map((r) => r.digest),
        children: parsed.kind === 'index' ? parsed.manifests.map((m) => m.digest) : [],
        subject: parsed.subject?.digest,
      };
    } catch (err) {
      if (!isTransshipError(err, 'TS_BLOB_UNKNOWN') && !isTransshipError(err, 'TS_MANIFEST_INVALID')) throw err;
      if (isTransshipError(err, 'TS_BLOB_UNKNOWN')) this.missing.push(digest);
      out = null;
    }
    // Bounded: a pass over a huge store re-reads rather than holding every manifest's references.
    if (this.info.size >= 20_000) this.info.clear();
    this.info.set(digest, out);
    return out;
  }

  /** Marks `digest` and everything it reaches (children are read too; a blob that is no manifest ends the walk). */
  async markManifest(digest: string, signal: AbortSignal | undefined): Promise<void> {
    const stack = [digest];
    for (let d = stack.pop(); d !== undefined; d = stack.pop()) {
      if (this.visited.has(d)) continue;
      this.visited.add(d);
      this.set.add(d);
      const m = await this.manifest(d, signal);
      if (!m) continue;
      for (const r of m.refs) this.set.add(r);
      stack.push(...m.children);
    }
  }

  async run(opts: Signalled = {}): Promise<MarkResult> {
    const startedAt = this.now();
    const signal = opts.signal;
    const repos = new Map<string, RepoKeys>();
    const repoOf = (name: string): RepoKeys => {
      let r = repos.get(name);
      if (!r) repos.set(name, (r = { tags: new Map(), manifests: new Map(), referrers: [], pulled: new Map() }));
      return r;
    };
    for await (const o of this.store.objects.list(REPOS_PREFIX, { signal })) {
      const pull = parsePulledKey(o.key);
      if (pull) {
        // Not a root: it only dates a pull, and it goes with its manifest (stalePulls below).
        repoOf(pull.repo).pulled.set(pull.digest, { key: o.key, lastModified: o.lastModified });
        continue;
      }
      const current = parseRepoKey(o.key);
      const k = current ?? parseLegacyRepoKey(o.key);
      if (!k) {
        // Placement's markers of the old layout (`repos/_placement/…`) are roots like the current ones.
        const moved = legacyToCurrent(o.key);
        const p = moved ? parsePlacementKey(moved) : undefined;
        if (p?.kind === 'read') this.set.add(p.digest);
        continue;
      }
      const legacy = current === undefined;
      const r = repoOf(k.repo);
      if (k.kind === 'tag') {
        // Where both layouts hold the tag, the current key wins (repository.ts).
        if (!legacy || !r.tags.has(k.tag)) r.tags.set(k.tag, { key: o.key, lastModified: o.lastModified, etag: o.etag, legacy });
      } else if (k.kind === 'manifest') {
        const prev = r.manifests.get(k.digest);
        if (!prev || prev.legacy) r.manifests.set(k.digest, { key: o.key, lastModified: Math.max(o.lastModified, prev?.lastModified ?? 0), legacy: legacy && (prev?.legacy ?? true) });
      } else if (k.kind === 'referrer') {
        r.referrers.push({ subject: k.subject, digest: k.digest, key: o.key });
      }
    }
    for await (const o of this.store.objects.list(PLACEMENT_PREFIX, { signal })) {
      const p = parsePlacementKey(o.key);
      if (p?.kind === 'read') this.set.add(p.digest);
    }

    const result: MarkResult = { startedAt, set: this.set, repositories: repos.size, tags: 0, manifests: 0, missingManifests: this.missing, removeTags: [], expireLinks: [], stalePulls: [] };
    for (const [repo, keys] of repos) {
      throwIfAborted(signal);
      result.tags += keys.tags.size;
      result.manifests += keys.manifests.size;
      const byMd5 = new Map([...keys.manifests.keys()].map((d) => [createHash('md5').update(d).digest('hex'), d] as const));
      const tags: Array<TagState & { key: string; legacy: boolean }> = [];
      await forEachLimit(
        [...keys.tags],
        READ_CONCURRENCY,
        async ([tag, t], s) => {
          let digest = t.etag !== undefined ? byMd5.get(t.etag) : undefined;
          if (digest === undefined) {
            const body = await this.store.objects.get(t.key, { signal: s });
            if (body === undefined) return; // deleted since the listing: not a root any more
            digest = body.trim();
          }
          tags.push({ tag, digest, pushedAt: t.lastModified, key: t.key, legacy: t.legacy });
        },
        signal,
      );
      const manifests: ManifestState[] = [];
      await forEachLimit(
        [...keys.manifests],
        READ_CONCURRENCY,
        async ([digest, l], s) => {
          const m = await this.manifest(digest, s);
          manifests.push({ digest, linkedAt: l.lastModified, pulledAt: keys.pulled.get(digest)?.lastModified, children: m?.children ?? [], subject: m?.subject });
        },
        signal,
      );
      // A tag was pulled when its manifest was, or (an index) one of its children: containerd GETs the index and
      // then its platform's manifest, and a client may pull a platform by digest.
      const childrenOf = new Map(manifests.map((m) => [m.digest, m.children] as const));
      for (const t of tags) {
        let at: number | undefined;
        for (const d of [t.digest, ...(childrenOf.get(t.digest) ?? [])]) {
          const p = keys.pulled.get(d);
          if (p) at = Math.max(at ?? 0, p.lastModified);
        }
        t.pulledAt = at;
      }
      const rule = this.settings.retention.ruleFor(repo);
      const decision = decide(rule, tags, manifests, startedAt);
      const removed = new Set<string>();
      for (const t of decision.removeTags) {
        const full = tags.find((x) => x.tag === t.tag);
        if (!full || full.legacy) continue;
        removed.add(t.tag);
        result.removeTags.push({ ...t, repo, key: full.key, pullsCount: rule !== undefined && Number.isFinite(rule.pulledWithinMs) });
      }
      const roots = new Set(decision.keep);
      // Tags that stay are roots even when their manifest is not linked (a root is a root).
      for (const t of tags) if (!removed.has(t.tag)) roots.add(t.digest);
      for (const digest of decision.expire) {
        const l = keys.manifests.get(digest);
        if (!l || l.legacy) {
          roots.add(digest);
          continue;
        }
        result.expireLinks.push({ repo, digest, key: l.key, referrerKeys: keys.referrers.filter((r) => r.digest === digest).map((r) => r.key) });
      }
      // Referrers of kept subjects follow them, linked here or not.
      for (const r of keys.referrers) if (roots.has(r.subject)) roots.add(r.digest);
      // A pull marker lives as long as its manifest is a root here (linked, or reached from a kept tag).
      for (const [digest, p] of keys.pulled) if (!roots.has(digest)) result.stalePulls.push({ repo, digest, key: p.key });
      await forEachLimit([...roots], READ_CONCURRENCY, (d, s) => this.markManifest(d, s), signal);
    }
    return result;
  }
}
