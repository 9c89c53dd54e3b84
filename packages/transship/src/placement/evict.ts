// Eviction of promoted copies: replication-on-demand's copies are a bounded cache. A pass removes, from the home
// region, promoted copies (promoted.ts markers) idle for longer than `promote.evictAfterIdle`; a later read is a
// lazy fetch again (and may promote again). This is what makes promoting on the first remote read the cheap choice:
// a copy nobody reads costs at most T of storage (cost.ts promotionThreshold).
//
// Safety — what a pass may delete, and why no data is lost:
// 1. Only blobs with a promotion marker in the home region. Blobs written by pushes, `copy` or the replicator have
//    none and are never touched.
// 2. Never a blob a local repository needs on its own: a manifest linked to a repository in the home region is, or
//    references, the blob (a local push that deduplicated against the promoted copy links its manifest — the write
//    order is blobs → manifest → manifest link → tag, so a pushed image is visible only through such a link); or a
//    blob link (repos/<name>/_layers/…, written on upload/mount when blob links are on) that was born here, i.e. no
//    other region has the same link (a read with auth on copies links from the region it found them in; those prove
//    nothing about local pushes). Such a copy is adopted: its markers are dropped and it is a normal local blob.
// 3. Never unless another region holds the blob as an original — present there with the same size and without a
//    promotion marker there — so a later read can fetch it again. Two regions' promoted copies never vouch for each
//    other (both could be evicted at once); an original is never deleted by eviction.
// 4. The race with a concurrent local push. A push asks "is blob X here?" (HEAD or a 412 on upload) and links its
//    manifest later; the registry re-checks every referenced blob at the manifest PUT, through its presence cache
//    (src/registry/context.ts, 30 s by default). So once X is deleted, a manifest PUT either sees X missing and is
//    refused (MANIFEST_BLOB_UNKNOWN: the client still has the bytes and re-uploads them on retry — nothing is lost,
//    nothing broken becomes visible), or it ran on a "present" answer cached before the delete, which no instance
//    keeps longer than the presence TTL. Therefore: the pass writes an eviction record (the digests it is about to
//    delete) *before* the deletes (so a crash right after them still leaves the check to do), and a pass at least
//    `grace` (> the presence TTL) later re-checks the links. Every manifest that could have been accepted on a stale answer is linked by then;
//    if one references X, X is copied back from the original (verified, like any promotion) — until then a read of
//    X in this region is a lazy fetch from that original, so it is served throughout. Only then are the markers
//    removed. A conditional delete would not help here: the push never writes X when it dedups, there is nothing to
//    condition on.
// Every request goes through the stores (the one retry function), with the caller's AbortSignal; a pass handles at
// most `maxPerPass` digests and the next pass continues.
import { buffer } from 'node:stream/consumers';
import { digestOf, parseDigest } from '@transship/core/digest';
import { TransshipError, errorSummary, isTransshipError, throwIfAborted } from '@transship/core/errors';
import type { BlobStore } from '../store/contract.js';
import type { Signalled } from '@transship/core/signal';
import { parseManifest, references } from '../transfer/manifest.js';
import { crossRegionUploadBytesTotal, promotedBlobEvictionsTotal, promotedBlobEvictedBytesTotal } from '../telemetry/metrics.js';
import { withSpan } from '@transship/core/tracing';
import { log } from '@transship/core/log';
import type { Config } from '../config/config.js';
import { Periodic } from '@transship/core/periodic';
import type { Regions } from './regions.js';
import type { Rules } from './rules.js';
import type { PlacedReader } from './read-path.js';
import { REPOS_PREFIX, parseRepoKey } from '../store/keys.js';
import { PROMOTED_PREFIX, evictionRecordKey, parseMarkers, type PromotedEntry, type PromotionLedger } from './promoted.js';

/**
 * The grace must outlast a "blob present" answer that a manifest write can still act on. In the registry that is its
 * presence cache (30 s, src/registry/context.ts) plus the manifest's own write and link, retried for up to 120 s
 * (DEFAULT_RETRY.maxElapsedMs): 3 minutes at least. But `transship copy` keeps presence hints on disk for
 * `cache.ttlSeconds` (6 h by default, src/index/presence-cache.ts) and skips blobs it believes present, so a copy
 * into this region hours after an eviction can still link a manifest to an evicted blob. The default grace
 * therefore outlasts the default CLI cache: the check after grace then sees that manifest and copies the blob back.
 * A deployment whose copy clients use a longer TTL must raise graceSeconds above it. The longest hint a config
 * allows is maxPresenceHintMs (src/index/presence-cache.ts, the one presence-hint implementation).
 */
export const MIN_GRACE_MS = 3 * 60_000;
export const DEFAULT_GRACE_MS = 6 * 3600_000 + 10 * 60_000;
export const DEFAULT_MAX_PER_PASS = 1000;

export interface EvictOptions {
  /** Evict copies idle for longer than this (ms); Infinity turns eviction off. */
  idleMs: number;
  /** Wait between a delete and the check that confirms it (ms, ≥ MIN_GRACE_MS). */
  graceMs?: number | undefined;
  /** Digests acted on per pass (deletions, checks after grace, adoptions). */
  maxPerPass?: number | undefined;
  /** Clock (tests and the benchmark simulate a later time). */
  now?: (() => number) | undefined;
}

export type KeepReason = 'needed-locally' | 'no-original-elsewhere' | 'needs-unknown';

export interface EvictedBlob {
  digest: string;
  size: number;
  /** How long it had not been read (ms, from the last stamped period's end). */
  idleMs: number;
}

export interface EvictReport {
  region: string;
  dryRun: boolean;
  /** null = eviction is off (`evictAfterIdle: never`). */
  evictAfterIdleSeconds: number | null;
  /** Promoted copies with markers in the home region when the pass started. */
  promoted: number;
  /** Not idle long enough yet. */
  warm: number;
  /** Deleted in this pass (dry run: would be). */
  evicted: EvictedBlob[];
  bytesEvicted: number;
  /** Idle but kept; `needed-locally` copies are adopted (markers dropped). */
  kept: Array<EvictedBlob & { reason: KeepReason }>;
  /** Deleted earlier, check after grace still to come. */
  pending: number;
  /** Deleted earlier and confirmed: markers removed. */
  confirmed: number;
  /** Deleted earlier, then needed by a local repository: copied back. */
  restored: EvictedBlob[];
  /** Markers whose blob was already gone from the home region (dropped). */
  stale: number;
  /** maxPerPass was reached: the next pass continues. */
  truncated: boolean;
}

/** What the home region's repositories need: manifests linked here, what they reference, and blob links. */
interface Needs {
  digests: Set<string>;
  /** digest → blob-link keys in the home region. */
  blobLinks: Map<string, string[]>;
  /** A linked manifest could not be read anywhere reachable: nothing may be evicted this pass. */
  incomplete: boolean;
}

export class Evictor {
  readonly idleMs: number;
  readonly graceMs: number;
  readonly maxPerPass: number;
  private readonly now: () => number;
  /** Manifest digest → referenced digests (manifests are immutable, so this never goes stale). */
  private readonly refs = new Map<string, string[]>();

  constructor(
    readonly regions: Regions,
    readonly ledger: PromotionLedger,
    opts: EvictOptions,
  ) {
    if (!(opts.idleMs >= 0)) throw new TransshipError('TS_CONFIG_INVALID', `evictAfterIdle must be ≥ 0 ms, got ${opts.idleMs}`);
    this.idleMs = opts.idleMs;
    this.graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
    if (!(this.graceMs >= MIN_GRACE_MS)) {
      throw new TransshipError('TS_CONFIG_INVALID', `placement.evict.graceSeconds must be at least ${MIN_GRACE_MS / 1000} (the registry's 30 s presence cache plus a manifest write retried for up to 120 s), got ${this.graceMs / 1000}`);
    }
    this.maxPerPass = opts.maxPerPass ?? DEFAULT_MAX_PER_PASS;
    this.now = opts.now ?? ledger.now;
  }

  get home(): BlobStore {
    return this.regions.homeStore;
  }

  /**
   * One pass (see the top of this file). A dry run writes and deletes nothing, not even read stamps. Requests are
   * batched: one listing of the markers, one presence check of every candidate in the home region and in each other
   * region (statBlobs: a LIST page per 1000 when many, HEADs when few), one listing of each other region's markers,
   * one listing of the home region's repository keys, one eviction record, then the DELETEs (free on S3).
   */
  async pass(opts: Signalled & { dryRun?: boolean | undefined } = {}): Promise<EvictReport> {
    return withSpan('placement.evict', { 'transship.region': this.regions.home, 'transship.dry_run': Boolean(opts.dryRun) }, async () => {
      const dryRun = Boolean(opts.dryRun);
      const report: EvictReport = {
        region: this.regions.home,
        dryRun,
        evictAfterIdleSeconds: Number.isFinite(this.idleMs) ? this.idleMs / 1000 : null,
        promoted: 0,
        warm: 0,
        evicted: [],
        bytesEvicted: 0,
        kept: [],
        pending: 0,
        confirmed: 0,
        restored: [],
        stale: 0,
        truncated: false,
      };
      if (!dryRun) await this.ledger.flush(opts);
      const { entries, records } = await this.ledger.listWithEvictions(opts);
      const now = this.now();
      const toConfirm: PromotedEntry[] = [];
      const candidates: Array<{ entry: PromotedEntry; idleMs: number }> = [];
      for (const entry of entries.values()) {
        if (entry.keys.length) report.promoted++;
        const evictedAt = entry.evicted.at(-1);
        if (evictedAt !== undefined && now - evictedAt < this.graceMs) {
          report.pending++;
          continue;
        }
        const lastRead = (entry.reads.at(-1) ?? 0) + this.ledger.stampMs;
        if (evictedAt === undefined && !(now - lastRead > this.idleMs)) {
          report.warm++;
          continue;
        }
        if (toConfirm.length + candidates.length >= this.maxPerPass) {
          report.truncated = true;
          break;
        }
        if (evictedAt !== undefined) toConfirm.push(entry);
        else candidates.push({ entry, idleMs: Math.max(0, now - lastRead) });
      }
      if (toConfirm.length === 0 && candidates.length === 0) return report;
      const here = await this.home.statBlobs([...toConfirm, ...candidates.map((c) => c.entry)].map((e) => e.digest), opts);
      const needs = await this.needs(opts);

      // Deleted earlier: restore what a local repository came to need, then forget the eviction.
      const handled = new Set<string>();
      for (const entry of toConfirm) {
        throwIfAborted(opts.signal);
        if (needs.incomplete) {
          report.pending++;
          continue;
        }
        await this.confirm(entry, here.has(entry.digest), needs, report, dryRun, opts);
        handled.add(entry.digest);
      }
      if (!dryRun) for (const r of records) if (now - r.at >= this.graceMs && r.digests.every((d) => handled.has(d))) await this.home.deleteMeta(r.key, opts);

      // Idle copies: adopt what a local repository needs, keep what has no original elsewhere, evict the rest.
      const unneeded: Array<{ entry: PromotedEntry; item: EvictedBlob }> = [];
      for (const { entry, idleMs } of candidates) {
        throwIfAborted(opts.signal);
        const info = here.get(entry.digest);
        if (!info) {
          // Deleted by someone else, or the promotion crashed before its copy: nothing to evict, forget the markers.
          report.stale++;
          if (!dryRun) await this.dropMarkers(entry, opts);
          continue;
        }
        const item = { digest: entry.digest, size: info.size, idleMs };
        if (needs.incomplete) report.kept.push({ ...item, reason: 'needs-unknown' });
        else if (await this.neededLocally(entry.digest, needs, opts)) {
          report.kept.push({ ...item, reason: 'needed-locally' });
          if (dryRun) continue;
          await this.dropMarkers(entry, opts);
          promotedBlobEvictionsTotal.inc({ result: 'adopted' });
        } else unneeded.push({ entry, item });
      }
      const originals = await this.originals(new Map(unneeded.map((u) => [u.item.digest, u.item.size])), opts);
      const evict = unneeded.filter((u) => originals.has(u.item.digest));
      for (const u of unneeded) if (!originals.has(u.item.digest)) report.kept.push({ ...u.item, reason: 'no-original-elsewhere' });
      for (const u of evict) {
        report.evicted.push(u.item);
        report.bytesEvicted += u.item.size;
      }
      if (dryRun || evict.length === 0) return report;
      // The record first: a crash after the deletes must still leave the after-grace check to do.
      await this.home.putMetaIfAbsent(evictionRecordKey(now), JSON.stringify(evict.map((u) => u.item.digest)), opts);
      for (const u of evict) {
        throwIfAborted(opts.signal);
        await this.home.deleteBlob(u.item.digest, opts);
        promotedBlobEvictionsTotal.inc({ result: 'evicted' });
        promotedBlobEvictedBytesTotal.inc(u.item.size);
      }
      log.info({ region: report.region, evicted: evict.length, bytes: report.bytesEvicted, kept: report.kept.length, restored: report.restored.length }, 'eviction pass');
      return report;
    });
  }

  /**
   * The check `grace` after a delete. Needed by a local repository now: copy it back if it is gone, and it is the
   * repository's (markers dropped). Not needed and gone: the eviction is done (markers dropped). Not needed and back
   * (promoted again by a read, or the delete never happened — a crash between the record and the delete): still a
   * cache entry, its read stamps stay and the idle rule applies again.
   */
  private async confirm(entry: PromotedEntry, present: boolean, needs: Needs, report: EvictReport, dryRun: boolean, opts: Signalled): Promise<void> {
    const d = entry.digest;
    if (await this.neededLocally(d, needs, opts)) {
      if (!present) {
        const size = dryRun ? 0 : await this.restore(d, opts);
        report.restored.push({ digest: d, size, idleMs: 0 });
      }
      if (!dryRun) await this.dropMarkers(entry, opts);
      return;
    }
    if (present) return;
    report.confirmed++;
    if (!dryRun) await this.dropMarkers(entry, opts);
  }

  /** Copies `digest` back into the home region from any region that has it (verified by putBlob). */
  private async restore(digest: string, opts: Signalled): Promise<number> {
    for (const region of this.regions.others) {
      const store = this.regions.store(region);
      const info = await store.statBlob(digest, opts).catch((err: unknown) => {
        if (isTransshipError(err, 'TS_CANCELLED')) throw err;
        return undefined;
      });
      if (!info) continue;
      const r = await this.home.putBlob(digest, () => store.getBlob(digest, opts), { size: info.size, signal: opts.signal });
      if (r.status === 'written') crossRegionUploadBytesTotal.inc({ from: region, to: this.regions.home }, r.size);
      promotedBlobEvictionsTotal.inc({ result: 'restored' });
      log.warn({ digest, from: region, region: this.regions.home }, 'an evicted copy is needed by a local repository (a push raced the eviction): copied back');
      return info.size;
    }
    // Reads still lazy-fetch it wherever it is; the next pass tries again (the markers stay).
    throw new TransshipError('TS_BACKEND_UNAVAILABLE', `evicted blob ${digest} is needed by a local repository and no other region answered with it; the next pass retries`, { details: { digest } });
  }

  /** Deletes the digest's read stamps (its eviction record, if any, goes once every digest in it was checked). */
  private async dropMarkers(entry: PromotedEntry, opts: Signalled): Promise<void> {
    for (const key of entry.keys) await this.home.deleteMeta(key, opts);
  }

  private async neededLocally(digest: string, needs: Needs, opts: Signalled): Promise<boolean> {
    if (needs.digests.has(digest)) return true;
    // A blob link born here (no other region has the same key) records an upload or mount in this region.
    for (const key of needs.blobLinks.get(digest) ?? []) {
      let mirrored = false;
      for (const region of this.regions.others) {
        try {
          if (await this.regions.store(region).hasMeta(key, opts)) {
            mirrored = true;
            break;
          }
        } catch (err) {
          if (isTransshipError(err, 'TS_CANCELLED')) throw err;
          // An unreachable region cannot vouch for the link: count it as born here.
        }
      }
      if (!mirrored) return true;
    }
    return false;
  }

  /**
   * The digests (of `sizes`) that a region other than home holds as an original: present there with the same size
   * and without a promotion marker there. An unreachable region vouches for nothing.
   */
  private async originals(sizes: ReadonlyMap<string, number>, opts: Signalled): Promise<Set<string>> {
    const found = new Set<string>();
    for (const region of this.regions.others) {
      const open = [...sizes.keys()].filter((d) => !found.has(d));
      if (open.length === 0) break;
      const store = this.regions.store(region);
      try {
        const present = await store.statBlobs(open, opts);
        if (present.size === 0) continue;
        const promotedThere = parseMarkers(await store.listMeta(PROMOTED_PREFIX, opts));
        for (const [d, info] of present) if (info.size === sizes.get(d) && !promotedThere.has(d)) found.add(d);
      } catch (err) {
        if (isTransshipError(err, 'TS_CANCELLED')) throw err;
        log.warn({ region, err: errorSummary(err) }, 'region unreachable while looking for originals; not evicting on its word');
      }
    }
    return found;
  }

  /** One listing of the home region's repository keys, plus each linked manifest's references (cached). */
  private async needs(opts: Signalled): Promise<Needs> {
    const out: Needs = { digests: new Set(), blobLinks: new Map(), incomplete: false };
    const manifests = new Set<string>();
    for (const key of await this.home.listMeta(REPOS_PREFIX, opts)) {
      const k = parseRepoKey(key);
      if (k?.kind === 'manifest') manifests.add(k.digest);
      else if (k?.kind === 'layer') {
        const list = out.blobLinks.get(k.digest) ?? [];
        list.push(key);
        out.blobLinks.set(k.digest, list);
      }
    }
    for (const m of manifests) {
      throwIfAborted(opts.signal);
      out.digests.add(m);
      const refs = await this.references(m, opts);
      if (refs === undefined) out.incomplete = true;
      else for (const r of refs) out.digests.add(r);
    }
    return out;
  }

  /** What manifest `digest` references, from the first region that has it; undefined when unknowable. */
  private async references(digest: string, opts: Signalled): Promise<string[] | undefined> {
    const hit = this.refs.get(digest);
    if (hit) return hit;
    let unreachable = false;
    for (const region of this.regions.names) {
      try {
        const bytes = await buffer(await this.regions.store(region).getBlob(digest, opts));
        if (digestOf(bytes, parseDigest(digest).algorithm) !== digest) continue;
        const parsed = parseManifest(bytes);
        const refs = references(parsed).map((r) => r.digest);
        if (this.refs.size >= 50_000) this.refs.clear();
        this.refs.set(digest, refs);
        return refs;
      } catch (err) {
        if (isTransshipError(err, 'TS_CANCELLED')) throw err;
        if (isTransshipError(err, 'TS_BLOB_UNKNOWN')) continue;
        // Unparseable bytes reference nothing we could serve; an unreachable region leaves the answer unknown.
        if (isTransshipError(err, 'TS_MANIFEST_INVALID')) return [];
        unreachable = true;
      }
    }
    // Gone everywhere: nothing can be pulled through it, so it keeps nothing alive. Unreachable: unknown.
    return unreachable ? undefined : [];
  }
}

/** A pass every `intervalMs` in a long-running process (`serve`, the shared Periodic runner); close() also flushes. */
export class EvictionLoop {
  private readonly periodic: Periodic;

  constructor(
    private readonly evictor: Evictor,
    intervalMs: number,
    onPass?: (report: EvictReport) => void,
  ) {
    this.periodic = new Periodic('eviction pass', async (signal) => {
      const r = await this.evictor.pass({ signal });
      onPass?.(r);
    }, intervalMs);
  }

  async close(): Promise<void> {
    await this.periodic.close();
    // Reads noted since the last pass: stamp them now (bounded), so the next process does not see them as idle.
    await this.evictor.ledger.flush({ signal: AbortSignal.timeout(5000) }).catch(() => undefined);
  }
}

/** The evictor `placement.promote.evictAfterIdle` and `placement.evict` describe, over `ledger`'s home region. */
export function evictorFromConfig(config: Config, regions: Regions, rules: Rules, ledger: PromotionLedger, now?: () => number): Evictor {
  const e = config.placement?.evict;
  return new Evictor(regions, ledger, {
    idleMs: rules.promote.evictAfterIdleMs,
    graceMs: e?.graceSeconds !== undefined ? e.graceSeconds * 1000 : undefined,
    maxPerPass: e?.maxPerPass,
    now,
  });
}

/** `serve`: passes every `placement.evict.intervalSeconds` (default 1 h) when other regions exist. */
export function startEviction(config: Config, placed: PlacedReader): EvictionLoop | undefined {
  if (placed.regions.others.length === 0) return undefined;
  const evictor = evictorFromConfig(config, placed.regions, placed.rules, placed.ledger);
  return new EvictionLoop(evictor, (config.placement?.evict?.intervalSeconds ?? 3600) * 1000);
}
