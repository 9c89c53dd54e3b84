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
//    blob link (repos/<name>/blobs/…, written on upload/mount when blob links are on) that was born here, i.e. no
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
//    keeps longer than the presence TTL. Therefore: the pass writes an `evicted/<t>` marker *before* the delete (so a
//    crash right after the delete still leaves the check to do), and a pass at least `grace` (> the presence TTL)
//    later re-checks the links. Every manifest that could have been accepted on a stale answer is linked by then;
//    if one references X, X is copied back from the original (verified, like any promotion) — until then a read of
//    X in this region is a lazy fetch from that original, so it is served throughout. Only then are the markers
//    removed. A conditional delete would not help here: the push never writes X when it dedups, there is nothing to
//    condition on.
// Every request goes through the stores (the one retry function), with the caller's AbortSignal; a pass handles at
// most `maxPerPass` digests and the next pass continues.
import { buffer } from 'node:stream/consumers';
import { digestOf, parseDigest } from '../core/digest.js';
import { TransshipError, errorSummary, isTransshipError, throwIfAborted } from '../core/errors.js';
import type { BlobStore, Signalled } from '../store/contract.js';
import { parseManifest, references } from '../transfer/manifest.js';
import { crossRegionUploadBytesTotal, promotedBlobEvictionsTotal, promotedBlobEvictedBytesTotal } from '../telemetry/metrics.js';
import { withSpan } from '../telemetry/tracing.js';
import { log } from '../telemetry/log.js';
import type { Config } from '../core/config.js';
import type { Regions } from './regions.js';
import type { Rules } from './rules.js';
import type { PlacedReader } from './read-path.js';
import { PROMOTED_PREFIX, evictedKey, promotedPrefix, type PromotedEntry, type PromotionLedger } from './promoted.js';

/**
 * The grace must outlast a "blob present" answer that a manifest PUT can still act on: the registry's presence
 * cache (30 s, src/registry/context.ts) plus the manifest's own write and link, retried for up to 120 s
 * (DEFAULT_RETRY.maxElapsedMs) — 3 minutes at least, 10 by default.
 */
export const MIN_GRACE_MS = 3 * 60_000;
export const DEFAULT_GRACE_MS = 10 * 60_000;
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

const MANIFEST_LINK = /^repos\/(.+)\/manifests\/(sha256|sha512)\/([a-f0-9]{64,128})$/;
const BLOB_LINK = /^repos\/(.+)\/blobs\/(sha256|sha512)\/([a-f0-9]{64,128})$/;

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

  /** One pass (see the top of this file). A dry run writes and deletes nothing, not even read stamps. */
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
      const markers = await this.ledger.list(opts);
      report.promoted = markers.size;
      const now = this.now();
      let needs: Needs | undefined;
      const needsNow = async (): Promise<Needs> => (needs ??= await this.needs(opts));
      let acted = 0;
      for (const entry of markers.values()) {
        throwIfAborted(opts.signal);
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
        if (acted >= this.maxPerPass) {
          report.truncated = true;
          break;
        }
        acted++;
        if (evictedAt !== undefined) await this.confirm(entry, evictedAt, await needsNow(), report, dryRun, opts);
        else await this.consider(entry, Math.max(0, now - lastRead), needsNow, report, dryRun, now, opts);
      }
      if (!dryRun && (report.evicted.length || report.restored.length || report.kept.length)) {
        log.info({ region: report.region, evicted: report.evicted.length, bytes: report.bytesEvicted, kept: report.kept.length, restored: report.restored.length }, 'eviction pass');
      }
      return report;
    });
  }

  /** An idle promoted copy: evict it, adopt it, or keep it for now. */
  private async consider(entry: PromotedEntry, idleMs: number, needsNow: () => Promise<Needs>, report: EvictReport, dryRun: boolean, now: number, opts: Signalled): Promise<void> {
    const d = entry.digest;
    const info = await this.home.statBlob(d, opts);
    if (!info) {
      // Deleted by someone else, or the promotion crashed before its copy: nothing to evict, forget the markers.
      report.stale++;
      if (!dryRun) await this.dropMarkers(entry, opts);
      return;
    }
    const item = { digest: d, size: info.size, idleMs };
    const needs = await needsNow();
    if (needs.incomplete) {
      report.kept.push({ ...item, reason: 'needs-unknown' });
      return;
    }
    if (await this.neededLocally(d, needs, opts)) {
      report.kept.push({ ...item, reason: 'needed-locally' });
      if (dryRun) return;
      await this.dropMarkers(entry, opts);
      promotedBlobEvictionsTotal.inc({ result: 'adopted' });
      return;
    }
    if (!(await this.original(d, info.size, opts))) {
      report.kept.push({ ...item, reason: 'no-original-elsewhere' });
      return;
    }
    report.evicted.push(item);
    report.bytesEvicted += info.size;
    if (dryRun) return;
    // The evicted marker first: a crash after the delete must still leave the after-grace check to do.
    await this.home.putMetaIfAbsent(evictedKey(d, now), '', opts);
    await this.home.deleteBlob(d, opts);
    promotedBlobEvictionsTotal.inc({ result: 'evicted' });
    promotedBlobEvictedBytesTotal.inc(info.size);
  }

  /** The check `grace` after a delete: restore the copy if a local repository came to need it, then drop markers. */
  private async confirm(entry: PromotedEntry, evictedAt: number, needs: Needs, report: EvictReport, dryRun: boolean, opts: Signalled): Promise<void> {
    const d = entry.digest;
    if (needs.incomplete) {
      report.pending++;
      return;
    }
    const here = await this.home.statBlob(d, opts);
    if (await this.neededLocally(d, needs, opts)) {
      if (!here) {
        const size = dryRun ? 0 : await this.restore(d, opts);
        report.restored.push({ digest: d, size, idleMs: 0 });
      }
      if (!dryRun) await this.dropMarkers(entry, opts);
      return;
    }
    if (dryRun) return;
    if (!here) {
      report.confirmed++;
      await this.dropMarkers(entry, opts);
      return;
    }
    // Back in the home region. Promoted again by a read after the delete (a newer read stamp): a cache entry again,
    // only the evicted marker goes. Otherwise someone else wrote it (a push re-uploading what it found missing, its
    // manifest still to come): it is theirs, never evict it.
    if ((entry.reads.at(-1) ?? -1) >= evictedAt) {
      for (const t of entry.evicted) await this.home.deleteMeta(evictedKey(d, t), opts);
    } else await this.dropMarkers(entry, opts);
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

  /** Deletes the digest's markers, the evicted ones last (a partial delete leaves a check still to do). */
  private async dropMarkers(entry: PromotedEntry, opts: Signalled): Promise<void> {
    const order = [...entry.keys].sort((a, b) => Number(a.includes('/evicted/')) - Number(b.includes('/evicted/')));
    for (const key of order) await this.home.deleteMeta(key, opts);
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

  /** True when a region other than home holds the blob as an original (same size, no promotion marker there). */
  private async original(digest: string, size: number, opts: Signalled): Promise<boolean> {
    for (const region of this.regions.others) {
      const store = this.regions.store(region);
      try {
        const info = await store.statBlob(digest, opts);
        if (!info || info.size !== size) continue;
        if ((await store.listMeta(promotedPrefix(digest), opts)).length === 0) return true;
      } catch (err) {
        if (isTransshipError(err, 'TS_CANCELLED')) throw err;
        log.warn({ region, digest, err: errorSummary(err) }, 'region unreachable while looking for an original; not evicting on its word');
      }
    }
    return false;
  }

  /** One listing of the home region's repository keys, plus each linked manifest's references (cached). */
  private async needs(opts: Signalled): Promise<Needs> {
    const out: Needs = { digests: new Set(), blobLinks: new Map(), incomplete: false };
    const manifests = new Set<string>();
    for (const key of await this.home.listMeta('repos/', opts)) {
      if (key.startsWith(PROMOTED_PREFIX)) continue;
      const m = MANIFEST_LINK.exec(key);
      if (m) {
        manifests.add(`${m[2]}:${m[3]}`);
        continue;
      }
      const b = BLOB_LINK.exec(key);
      if (b) {
        const d = `${b[2]}:${b[3]}`;
        const list = out.blobLinks.get(d) ?? [];
        list.push(key);
        out.blobLinks.set(d, list);
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

/** A pass every `intervalMs` in a long-running process (`serve`); close() cancels the pass in flight and flushes. */
export class EvictionLoop {
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly evictor: Evictor,
    private readonly intervalMs: number,
    private readonly onPass?: (report: EvictReport) => void,
  ) {
    this.schedule();
  }

  private schedule(): void {
    if (this.abort.signal.aborted) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.evictor
        .pass({ signal: this.abort.signal })
        .then((r) => this.onPass?.(r))
        .catch((err: unknown) => {
          if (!isTransshipError(err, 'TS_CANCELLED')) log.error({ err: errorSummary(err) }, 'eviction pass failed; the next one retries');
        })
        .finally(() => {
          this.running = undefined;
          this.schedule();
        });
    }, this.intervalMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.abort.abort();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
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
