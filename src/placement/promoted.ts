// Which blobs of a region are promoted copies (replication-on-demand made them, src/placement/read-path.ts) and
// when they were last read: what eviction (evict.ts) needs to treat promoted copies as a bounded cache.
//
// Recorded in the region's own store, beside the registry's repository keys, as small objects (keys.ts builds and
// parses them):
//   _placement/promoted/<alg>/<hex>/read/<ms>   a read (or the promotion itself) in the period starting at <ms>
//                                                (body: the region the copy came from, or empty)
//   _placement/evictions/<ms>                    one per eviction pass that deleted copies (body: their digests,
//                                                JSON); removed by the check after the grace period (evict.ts)
// Why marker keys and not a database or object metadata: S3 stays the only shared truth (every instance of the
// region sees the same markers), one LIST answers "which copies are promoted and when were they last read" without
// a GET per blob, and every write is a conditional PutObject of a new key (no read-modify-write, so concurrent
// instances cannot lose each other's stamps). `_placement/` sits beside `repos/`, so listings of repositories and the
// registry's link copying never see these keys (the old layout kept them at `repos/_placement/`; see keys.ts).
//
// Reads are stamped from memory, rarely: local reads of a digest are noted per instance (no request), and flush()
// writes one stamp per promoted digest per stamp period (a day at most; shorter when eviction is configured shorter)
// and deletes the digest's older stamps. A stamp lost to a crash makes a copy look idle up to one period early,
// which costs at most one more lazy fetch — eviction never depends on stamps for safety (evict.ts).
import { parseDigest } from '../core/digest.js';
import { TransshipError, errorSummary } from '../core/errors.js';
import type { BlobStore, Signalled } from '../store/contract.js';
import { PLACEMENT_PREFIX, PROMOTED_PREFIX, evictionRecordKey, parsePlacementKey, promotedReadKey } from '../store/keys.js';
import { log } from '../telemetry/log.js';

export { PLACEMENT_PREFIX, PROMOTED_PREFIX, evictionRecordKey };
export const DAY_MS = 24 * 3600_000;

/** A read stamp of promoted copy `digest` for the period starting at `at` (keys.ts builds it). */
export const readKey = promotedReadKey;

/** What the markers say about one promoted digest. */
export interface PromotedEntry {
  digest: string;
  /** Start times of the periods with a recorded read (ascending). */
  reads: number[];
  /** Times the copy was deleted with the after-grace check still to do (ascending): from eviction records. */
  evicted: number[];
  /** Its read-stamp keys. */
  keys: string[];
}

/** An eviction pass's record: the digests it deleted at `at`, still to be checked after the grace period. */
export interface EvictionRecord {
  key: string;
  at: number;
  digests: string[];
}

/** Groups read-stamp keys by digest; keys of any other shape are ignored. */
export function parseMarkers(keys: readonly string[]): Map<string, PromotedEntry> {
  const out = new Map<string, PromotedEntry>();
  for (const key of keys) {
    const k = parsePlacementKey(key);
    if (k?.kind !== 'read') continue;
    const e = out.get(k.digest) ?? { digest: k.digest, reads: [], evicted: [], keys: [] };
    out.set(k.digest, e);
    e.keys.push(key);
    e.reads.push(k.at);
  }
  for (const e of out.values()) e.reads.sort((a, b) => a - b);
  return out;
}

/**
 * `placement.promote.evictAfterIdle`: `never`, or a duration with a unit — `30s`, `90m`, `12h`, `7d` (ms, s, m, h,
 * d; fractions allowed). Returns milliseconds (Infinity for never).
 */
export function parseIdle(value: string, where: string): number {
  const s = value.trim();
  if (s === 'never') return Number.POSITIVE_INFINITY;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(s);
  if (!m) throw new TransshipError('TS_CONFIG_INVALID', `${where}: expected "never" or a duration like 12h, 7d or 30d (units ms, s, m, h, d), got "${value}"`);
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: DAY_MS }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd']);
}

/** How often a read of a promoted copy is stamped: an eighth of the idle limit, between a second and a day. */
export function stampPeriodMs(evictAfterIdleMs: number): number {
  return Math.min(DAY_MS, Math.max(1000, Number.isFinite(evictAfterIdleMs) ? Math.floor(evictAfterIdleMs / 8) : DAY_MS));
}

export interface LedgerOptions {
  stampMs?: number | undefined;
  now?: (() => number) | undefined;
  /** Local reads remembered between flushes (oldest forgotten first). */
  maxNoted?: number | undefined;
}

/** One region's promotion markers, as seen by one instance. */
export class PromotionLedger {
  readonly stampMs: number;
  readonly now: () => number;
  private readonly noted = new Map<string, number>();
  private readonly maxNoted: number;

  constructor(
    readonly store: BlobStore,
    opts: LedgerOptions = {},
  ) {
    this.stampMs = opts.stampMs ?? DAY_MS;
    this.now = opts.now ?? Date.now;
    this.maxNoted = opts.maxNoted ?? 100_000;
  }

  private period(t: number): number {
    return Math.floor(t / this.stampMs) * this.stampMs;
  }

  /** Written before the promoted bytes: a crash in between leaves a marker without a copy, which the next pass drops. */
  async recordPromotion(digest: string, from: string, opts: Signalled = {}): Promise<void> {
    await this.store.putMetaIfAbsent(readKey(digest, this.period(this.now())), from, opts);
  }

  /** A read served from this region's store: remembered in memory only (flush() stamps promoted copies). */
  noteRead(digest: string): void {
    this.noted.delete(digest);
    this.noted.set(digest, this.now());
    if (this.noted.size > this.maxNoted) {
      const oldest = this.noted.keys().next().value;
      if (oldest !== undefined) this.noted.delete(oldest);
    }
  }

  /** Read stamps only (one LIST per 1000 keys): what flush() and status need. */
  async list(opts: Signalled = {}): Promise<Map<string, PromotedEntry>> {
    return parseMarkers(await this.store.listMeta(PROMOTED_PREFIX, opts));
  }

  /**
   * Read stamps and eviction records together (one listing, plus a GET per record — normally none or one): entries
   * of digests a record names carry its time in `evicted`, even when their stamps are already gone.
   */
  async listWithEvictions(opts: Signalled = {}): Promise<{ entries: Map<string, PromotedEntry>; records: EvictionRecord[] }> {
    const keys = await this.store.listMeta(PLACEMENT_PREFIX, opts);
    const entries = parseMarkers(keys);
    const records: EvictionRecord[] = [];
    for (const key of keys) {
      const k = parsePlacementKey(key);
      if (k?.kind !== 'eviction') continue;
      const body = await this.store.getMeta(key, opts);
      if (body === undefined) continue;
      let digests: string[];
      try {
        digests = (JSON.parse(body) as unknown[]).filter((d): d is string => typeof d === 'string').map((d) => parseDigest(d).value);
      } catch {
        log.warn({ store: this.store.name, key }, 'unreadable eviction record; ignoring it');
        continue;
      }
      const at = k.at;
      records.push({ key, at, digests });
      for (const digest of digests) {
        const e = entries.get(digest) ?? { digest, reads: [], evicted: [], keys: [] };
        entries.set(digest, e);
        e.evicted.push(at);
      }
    }
    for (const e of entries.values()) e.evicted.sort((a, b) => a - b);
    return { entries, records };
  }

  /**
   * Stamps the noted reads of promoted copies whose last stamp is from an earlier period (one LIST, then one PUT per
   * such digest; older stamps of that digest are deleted). Reads of blobs that are not promoted copies are dropped.
   * Returns how many stamps were written. On failure the noted reads are kept for the next flush.
   */
  async flush(opts: Signalled = {}): Promise<number> {
    if (this.noted.size === 0) return 0;
    const noted = [...this.noted];
    this.noted.clear();
    let written = 0;
    try {
      const markers = await this.list(opts);
      for (const [digest, at] of noted) {
        const entry = markers.get(digest);
        if (!entry) continue;
        const period = this.period(at);
        const latest = entry.reads.at(-1) ?? -1;
        if (period <= latest) continue;
        await this.store.putMetaIfAbsent(readKey(digest, period), '', opts);
        written++;
        for (const old of entry.reads) await this.store.deleteMeta(readKey(digest, old), opts);
      }
    } catch (err) {
      for (const [digest, at] of noted) if (!this.noted.has(digest)) this.noted.set(digest, at);
      log.warn({ store: this.store.name, err: errorSummary(err) }, 'could not stamp reads of promoted copies; the next flush retries');
      throw err;
    }
    return written;
  }

  /** Digests with reads noted since the last flush (tests, status). */
  get pendingReads(): number {
    return this.noted.size;
  }
}
