// Sweep: delete what the mark did not reach, under the rule of docs/gc.md "The protocol". For each page of the blob
// listing (asked for at `sentAt`): a blob goes only if it is unmarked, its own modification time AND every touch
// marker a writer left for it are older than sentAt − grace − skew, the page was asked for within maxPass of the
// mark's start, and the DeleteObjects is answered within settle/3 of sentAt (aborted otherwise, and the pass stops).
// Policy deletions (retention's tags and untagged links) are re-checked right before they happen (pulledWithin: a pull
// marker written since the mark keeps its tag or link). Links and touch markers follow the same age rule; they
// protect nothing once their blob is gone. Pull markers go with their manifest's last root in the repository.
import { TransshipError, throwIfAborted } from '@transship/core/errors';
import type { BlobStore, ObjectInfo } from '../store/contract.js';
import { BLOBS_PREFIX, GC_TOUCH_PREFIX, REPOS_PREFIX, digestFromBlobKey, digestFromTouchKey, parsePulledKey, parseRepoKey, pulledKey, repoPrefix } from '../store/keys.js';
import { gcDeletedObjectsTotal, gcReclaimedBytesTotal } from '../telemetry/metrics.js';
import type { GcLease } from './lease.js';
import type { MarkResult, Marker } from './mark.js';
import { PAGE_KEYS, pages } from './pages.js';
import type { ReportBuilder, RemovedKind } from './report.js';
import type { GcSettings } from './settings.js';

export interface SweepContext {
  store: BlobStore;
  settings: GcSettings;
  mark: MarkResult;
  /** To mark what a skipped policy deletion keeps alive. */
  marker: Marker;
  report: ReportBuilder;
  dryRun: boolean;
  now: () => number;
  /** Held by a real pass; checked before every delete. */
  lease?: GcLease | undefined;
  signal?: AbortSignal | undefined;
}

/** The pass must stop: a page came too late after the mark, the delete budget ran out, or the lease was lost. */
export class SweepStopped extends TransshipError {
  constructor(message: string) {
    super('TS_PRECONDITION_CHANGED', message);
  }
}

async function remove(ctx: SweepContext, kind: RemovedKind, items: ReadonlyArray<{ key: string; size: number }>, deadline?: number): Promise<void> {
  if (items.length === 0) return;
  if (ctx.dryRun) {
    for (const i of items) ctx.report.removed(kind, i.key, i.size);
    return;
  }
  let signal = ctx.signal;
  if (deadline !== undefined) {
    const left = deadline - ctx.now();
    if (left <= 0) throw new SweepStopped(`the delete of ${items.length} ${kind}s would start ${-left} ms past its budget (settleSeconds/3 after the page was listed): stopping; the next pass continues`);
    // The lease only saves duplicate work (docs/gc.md): held is enough, no margin — safety is the budget's job.
    if (ctx.lease && !ctx.lease.valid()) throw new SweepStopped('the gc lease expired or was lost: stopping before deleting');
    signal = AbortSignal.any([...(ctx.signal ? [ctx.signal] : []), AbortSignal.timeout(left)]);
  } else if (ctx.lease && !ctx.lease.valid()) throw new SweepStopped('the gc lease expired or was lost: stopping before deleting');
  let result;
  try {
    result = await ctx.store.objects.deleteMany(items.map((i) => i.key), { signal });
  } catch (err) {
    if (deadline !== undefined && !ctx.signal?.aborted && ctx.now() >= deadline) throw new SweepStopped(`a delete of ${items.length} ${kind}s was not answered within its budget: stopping`);
    throw err;
  }
  const failed = new Set(result.errors.map((e) => e.key));
  ctx.report.report.kept.failed += failed.size;
  for (const i of items) {
    if (failed.has(i.key)) continue;
    ctx.report.removed(kind, i.key, i.size);
    gcDeletedObjectsTotal.inc({ kind });
    if (kind === 'blob') gcReclaimedBytesTotal.inc(i.size);
  }
}

/**
 * Whole seconds of a store time. A re-check reads one key with HEAD, whose Last-Modified is an HTTP date (seconds),
 * while the mark's times come from ListObjectsV2 (milliseconds, on RGW and AWS): compared as they are, every tag
 * looked rewritten and retention never removed one on S3. A rewrite that matters is seconds or more after the write
 * the mark saw, so seconds tell it.
 */
function sec(ms: number): number {
  return Math.floor(ms / 1000);
}

/**
 * Tags and untagged links retention expires, each re-checked right before it goes (docs/gc.md "Policy deletions"),
 * then the pull markers of manifests that are no root of their repository any more.
 */
export async function sweepPolicy(ctx: SweepContext): Promise<void> {
  const { store, mark, signal } = ctx;
  /** `repo@digest` whose pull marker must stay: a removal the re-check skipped keeps its manifest a root. */
  const rooted = new Set<string>();
  /** Repositories where a tag removal was skipped: their link expiries wait for the next pass (the tag's index may
   * have children among them). */
  const keptTags = new Set<string>();
  const skipped = async (t: (typeof mark.removeTags)[number], body: string | undefined): Promise<void> => {
    keptTags.add(t.repo);
    rooted.add(`${t.repo}@${t.digest}`);
    if (body === undefined) return;
    rooted.add(`${t.repo}@${body.trim()}`);
    await ctx.marker.markManifest(body.trim(), signal);
  };
  for (const t of mark.removeTags) {
    throwIfAborted(signal);
    // Pulled since the mark (pulledWithin): in use, whatever the listing said. Checked before the tag, so a tag
    // rewritten meanwhile is seen by the second look.
    if (t.pullsCount) {
      const pulled = await store.objects.stat(pulledKey(t.repo, t.digest), { signal });
      if (pulled && (t.pulledAt === undefined || sec(pulled.lastModified) > sec(t.pulledAt) || sec(pulled.lastModified) >= sec(mark.startedAt - ctx.settings.skewMs))) {
        await skipped(t, await store.objects.get(t.key, { signal }));
        continue;
      }
    }
    // Rewritten since the mark (re-pushed, refetched by a mirror): its new push time decides next pass.
    const now = await store.objects.stat(t.key, { signal });
    if (now && sec(now.lastModified) !== sec(t.pushedAt)) {
      // Kept after all: whatever it points at now is a root again, or the blob sweep would strand it.
      await skipped(t, await store.objects.get(t.key, { signal }));
      continue;
    }
    if (now) await remove(ctx, 'tag', [{ key: t.key, size: 0 }]);
  }
  const byRepo = new Map<string, typeof mark.expireLinks>();
  for (const l of mark.expireLinks) byRepo.set(l.repo, [...(byRepo.get(l.repo) ?? []), l]);
  for (const [repo, links] of byRepo) {
    throwIfAborted(signal);
    // A tag or a manifest (an index over them) written since the mark may reference one of them: leave the
    // repository's expiries to the next pass, and keep what they hold marked.
    // The same listing holds the pull markers: a manifest pulled by digest since the mark stays (pulledWithin).
    let retagged = false;
    const pulledNow = new Set<string>();
    for await (const o of store.objects.list(repoPrefix(repo), { signal })) {
      const fresh = o.lastModified >= mark.startedAt - ctx.settings.skewMs;
      const k = parseRepoKey(o.key);
      if ((k?.kind === 'tag' || k?.kind === 'manifest') && fresh) retagged = true;
      const p = fresh ? parsePulledKey(o.key) : undefined;
      if (p?.repo === repo) pulledNow.add(p.digest);
    }
    if (retagged || keptTags.has(repo)) {
      rooted.add(`${repo}@*`);
      for (const l of links) await ctx.marker.markManifest(l.digest, signal);
      continue;
    }
    for (const l of links) {
      if (pulledNow.has(l.digest)) {
        rooted.add(`${repo}@${l.digest}`);
        await ctx.marker.markManifest(l.digest, signal);
        continue;
      }
      await remove(ctx, 'manifest_link', [{ key: l.key, size: 0 }, ...l.referrerKeys.map((key) => ({ key, size: 0 }))]);
    }
  }
  // Pull markers only date pulls: losing one costs at most an early removal of a tag nobody holds any more, so
  // they go without a re-check, except where this pass kept a root after all (a repository written since the mark
  // keeps them all until the next pass).
  const stale = mark.stalePulls.filter((p) => !rooted.has(`${p.repo}@${p.digest}`) && !rooted.has(`${p.repo}@*`));
  for (let i = 0; i < stale.length; i += 1000) {
    throwIfAborted(signal);
    await remove(ctx, 'pulled_marker', stale.slice(i, i + 1000).map((p) => ({ key: p.key, size: 0 })));
  }
}

/** The newest touch marker time per digest among `digests` (sorted hex of one algorithm), one listing per range. */
async function touches(ctx: SweepContext, algorithm: string, hexes: readonly string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const first = hexes[0];
  const last = hexes.at(-1);
  if (first === undefined || last === undefined) return out;
  let common = 0;
  while (common < first.length && first[common] === last[common]) common++;
  const base = `${GC_TOUCH_PREFIX}${algorithm}/`;
  for await (const o of ctx.store.objects.list(`${base}${first.slice(0, common)}`, { signal: ctx.signal, startAfter: `${base}${first}` })) {
    if (o.key > `${base}${last}/~`) break;
    const d = digestFromTouchKey(o.key);
    if (d) out.set(d, Math.max(out.get(d) ?? 0, o.lastModified));
  }
  return out;
}

/** Unreachable blobs older than the grace, page by page. Returns false when the pass stopped early (maxPass). */
/**
 * Keys per blob page, per store, kept across passes of a process: halved when a batch delete used more than half its
 * budget, doubled (up to 1000) when it used less than an eighth — so a slow backend gets smaller deletes instead of
 * passes that stop at their first page.
 */
const pageKeys = new Map<string, number>();

export async function sweepBlobs(ctx: SweepContext): Promise<void> {
  const { settings, mark } = ctx;
  const budget = settings.settleMs / 3;
  const name = ctx.store.name;
  const limit = () => pageKeys.get(name) ?? PAGE_KEYS;
  for await (const page of pages(ctx.store.objects, BLOBS_PREFIX, { signal: ctx.signal, now: ctx.now, limit })) {
    if (page.sentAt - mark.startedAt > settings.maxPassMs) throw new SweepStopped(`the sweep reached a page ${Math.round((page.sentAt - mark.startedAt) / 1000)} s after the mark started (gc.maxPassSeconds ${settings.maxPassMs / 1000}): stopping; the next pass marks again`);
    const cutoff = page.sentAt - settings.graceMs - settings.skewMs;
    const byAlg = new Map<string, Array<{ entry: ObjectInfo; digest: string; hex: string }>>();
    for (const entry of page.entries) {
      const digest = digestFromBlobKey(entry.key);
      if (!digest || mark.set.has(digest)) continue;
      if (entry.lastModified >= cutoff) {
        ctx.report.report.kept.fresh++;
        continue;
      }
      const [alg, hex] = digest.split(':') as [string, string];
      byAlg.set(alg, [...(byAlg.get(alg) ?? []), { entry, digest, hex }]);
    }
    const doomed: Array<{ key: string; size: number }> = [];
    for (const [alg, cands] of byAlg) {
      const touched = await touches(ctx, alg, cands.map((c) => c.hex));
      for (const c of cands) {
        if ((touched.get(c.digest) ?? 0) >= cutoff) ctx.report.report.kept.touched++;
        else doomed.push({ key: c.entry.key, size: c.entry.size });
      }
    }
    try {
      await remove(ctx, 'blob', doomed, page.sentAt + budget);
    } catch (err) {
      if (err instanceof SweepStopped) pageKeys.set(name, Math.max(50, Math.floor(limit() / 2)));
      throw err;
    }
    const used = ctx.now() - page.sentAt;
    if (doomed.length && used > budget / 2) pageKeys.set(name, Math.max(50, Math.floor(limit() / 2)));
    else if (used < budget / 8) pageKeys.set(name, Math.min(PAGE_KEYS, limit() * 2));
  }
}

/**
 * Registry blob links whose blob is unreachable and gone, and referrer links whose referrer is unreachable, once
 * older than the grace (a link younger than that may be an upload or mount whose manifest is still to come).
 */
export async function sweepLinks(ctx: SweepContext): Promise<void> {
  const { settings, mark } = ctx;
  for await (const page of pages(ctx.store.objects, REPOS_PREFIX, { signal: ctx.signal, now: ctx.now })) {
    const cutoff = page.sentAt - settings.graceMs - settings.skewMs;
    const layers: Array<{ key: string; digest: string }> = [];
    const referrers: Array<{ key: string; size: number }> = [];
    for (const o of page.entries) {
      if (o.lastModified >= cutoff) continue;
      const k = parseRepoKey(o.key);
      if (k?.kind === 'layer' && !mark.set.has(k.digest)) layers.push({ key: o.key, digest: k.digest });
      else if (k?.kind === 'referrer' && !mark.set.has(k.digest)) referrers.push({ key: o.key, size: 0 });
    }
    // A link goes with its blob: one the sweep kept (fresh, or touched by a writer who may be mounting it) keeps its
    // link too. Dry run: the blobs it would delete are still there, so its plan names them by the plan.
    if (layers.length) {
      const still = await ctx.store.statBlobs([...new Set(layers.map((l) => l.digest))], { signal: ctx.signal });
      const planned = ctx.dryRun ? new Set(ctx.report.report.plan.filter((p) => p.kind === 'blob').map((p) => p.key)) : undefined;
      const gone = layers.filter((l) => !still.has(l.digest) || planned?.has(`${BLOBS_PREFIX}${l.digest.replace(':', '/')}`));
      await remove(ctx, 'layer_link', gone.map((l) => ({ key: l.key, size: 0 })));
    }
    await remove(ctx, 'referrer_link', referrers);
  }
}

/** Touch markers older than the grace protect nothing any more (docs/gc.md). */
export async function sweepTouches(ctx: SweepContext): Promise<void> {
  for await (const page of pages(ctx.store.objects, GC_TOUCH_PREFIX, { signal: ctx.signal, now: ctx.now })) {
    const cutoff = page.sentAt - ctx.settings.graceMs - ctx.settings.skewMs;
    await remove(ctx, 'touch', page.entries.filter((o) => o.lastModified < cutoff).map((o) => ({ key: o.key, size: 0 })));
  }
}
