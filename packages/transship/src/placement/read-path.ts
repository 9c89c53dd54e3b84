// The read path across regions: local first; on a miss, a lazy fetch from the region that holds the blob, verified
// against its digest while it streams; optionally promoted into the local bucket (replication-on-demand).
//
// Why promotion copies first and then serves locally: the bytes cross the region boundary once either way, the
// local write is the same verified putBlob every other write uses (a corrupted transfer is rejected and never
// stored), and the client is served from a stream we know is complete. The cost is first-byte latency on the
// promoting read only.
//
// Promoted copies are a cache, not placement: each promotion is recorded (promoted.ts) before its bytes are
// written, local reads are noted in memory for the idle clock, and evict.ts removes copies idle for longer than
// `promote.evictAfterIdle`.
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream';
import { VerifyingStream, parseDigest } from '@transship/core/digest';
import { TransshipError, errorSummary, isTransshipError } from '@transship/core/errors';
import type { BlobInfo, ByteRange } from '../store/contract.js';
import type { Signalled } from '@transship/core/signal';
import { blobReadsTotal, crossRegionUploadBytesTotal } from '../telemetry/metrics.js';
import { withSpan } from '@transship/core/tracing';
import { log } from '@transship/core/log';
import type { Regions } from './regions.js';
import type { Rules } from './rules.js';
import { DemandTracker } from './demand.js';
import { PromotionLedger, stampPeriodMs } from './promoted.js';

/** Where a blob was found and its size. */
export interface Located {
  region: string;
  info: BlobInfo;
}

export interface PlacedBlob {
  stream: Readable;
  /** Full blob size when the read path learned it (undefined for a plain local read: stat first if needed). */
  size: number | undefined;
  /** Where the bytes came from for this read. */
  location: 'local' | 'remote';
  region: string;
  promoted: boolean;
}

export class PlacedReader {
  readonly demand: DemandTracker;
  /** The home region's promotion markers and this instance's unflushed local reads. */
  readonly ledger: PromotionLedger;

  constructor(
    readonly regions: Regions,
    readonly rules: Rules,
    opts: { now?: (() => number) | undefined } = {},
  ) {
    // The tracker keeps one timestamp per read up to the threshold; an infinite threshold needs none.
    this.demand = new DemandTracker(rules.promote.windowMs, Number.isFinite(rules.promote.reads) ? rules.promote.reads : 1, undefined, opts.now);
    this.ledger = new PromotionLedger(regions.homeStore, { stampMs: stampPeriodMs(rules.promote.evictAfterIdleMs), now: opts.now });
  }

  /** A blob served from the home store by someone else (the registry's direct and redirected GETs). */
  noteLocalRead(digest: string): void {
    if (this.regions.others.length) this.ledger.noteRead(digest);
  }

  /** Where a blob is: home first, then the other regions in fetch order. Unreachable regions are skipped (logged). */
  async locate(digest: string, opts: Signalled & { skipHome?: boolean } = {}): Promise<Located | undefined> {
    if (!opts.skipHome) {
      const local = await this.regions.homeStore.statBlob(digest, opts);
      if (local) return { region: this.regions.home, info: local };
    }
    const failures: string[] = [];
    for (const region of this.regions.others) {
      try {
        const info = await this.regions.store(region).statBlob(digest, opts);
        if (info) return { region, info };
      } catch (err) {
        if (isTransshipError(err, 'TS_CANCELLED')) throw err;
        failures.push(`${region}: ${errorSummary(err).code}`);
        log.warn({ region, digest, err: errorSummary(err) }, 'region unreachable during lazy fetch; trying the next one');
      }
    }
    if (failures.length && failures.length === this.regions.others.length) {
      throw new TransshipError('TS_BACKEND_UNAVAILABLE', `blob ${digest} is not in the home region and no other region answered (${failures.join('; ')})`, { details: { digest } });
    }
    return undefined;
  }

  async stat(digest: string, opts: Signalled = {}): Promise<BlobInfo | undefined> {
    return (await this.locate(digest, opts))?.info;
  }

  /**
   * Opens a blob for reading from wherever it is; `repo` lets per-repository rules decide promotion. A caller that
   * already located it outside the home region (the registry, to answer sizes and ranges) passes `located`, so
   * neither the home store nor the other regions are asked again.
   */
  async open(digest: string, opts: Signalled & { repo?: string | undefined; range?: ByteRange | undefined; located?: Located | undefined } = {}): Promise<PlacedBlob> {
    const d = parseDigest(digest).value;
    const home = this.regions.home;
    if (!opts.located) {
      try {
        const stream = await this.regions.homeStore.getBlob(d, opts);
        blobReadsTotal.inc({ location: 'local' });
        this.noteLocalRead(d);
        return { stream, size: undefined, location: 'local', region: home, promoted: false };
      } catch (err) {
        if (!isTransshipError(err, 'TS_BLOB_UNKNOWN')) throw err;
      }
    }
    // The home store just said 404 (or the caller knows it): look only elsewhere.
    const found = opts.located ?? (await this.locate(d, { ...opts, skipHome: true }));
    if (!found) throw new TransshipError('TS_BLOB_UNKNOWN', `blob ${d} is in no region (${this.regions.names.join(', ')})`, { details: { digest: d } });
    const remote = this.regions.store(found.region);
    const reads = this.demand.record(d);
    blobReadsTotal.inc({ location: 'remote' });
    if (this.rules.shouldPromote(opts.repo, reads)) {
      const promoted = await this.promote(d, found.region, found.info.size, opts).catch((err: unknown) => {
        if (isTransshipError(err, 'TS_CANCELLED') || isTransshipError(err, 'TS_DIGEST_MISMATCH') || isTransshipError(err, 'TS_SIZE_MISMATCH')) throw err;
        log.warn({ digest: d, from: found.region, err: errorSummary(err) }, 'promotion failed; serving the remote copy');
        return false;
      });
      if (promoted) {
        this.demand.forget(d);
        try {
          return { stream: await this.regions.homeStore.getBlob(d, opts), size: found.info.size, location: 'remote', region: found.region, promoted: true };
        } catch (err) {
          // Evicted again between the copy and this read (or the copy was an 'exists' of a blob deleted since): the
          // remote copy is still there, so fall through to a plain lazy fetch.
          if (!isTransshipError(err, 'TS_BLOB_UNKNOWN')) throw err;
        }
      }
    }
    return withSpan('placement.lazy_fetch', { 'transship.digest': d, 'transship.from': found.region, 'transship.to': home }, async () => {
      const raw = await remote.getBlob(d, opts);
      // A full read is verified while it streams: corruption between regions fails the stream at the end. A remote
      // S3 stream lost mid-body is resumed by the store with a ranged read from that offset (store/resuming-read.ts),
      // so this verification covers the spliced bytes and the client is not cut off.
      const stream = opts.range ? raw : pipeline(raw, new VerifyingStream({ expected: d, size: found.info.size }), () => undefined);
      return { stream, size: found.info.size, location: 'remote' as const, region: found.region, promoted: false };
    });
  }

  /**
   * Copies one blob from `from` into the home region (verified by putBlob). Returns true when it is now local. The
   * promotion marker goes first: a crash between the two leaves a marker without a copy (dropped by the next eviction
   * pass), never a copy nobody knows is a cache entry.
   */
  async promote(digest: string, from: string, size: number, opts: Signalled = {}): Promise<boolean> {
    return withSpan('placement.promote', { 'transship.digest': digest, 'transship.from': from, 'transship.to': this.regions.home }, async () => {
      await this.ledger.recordPromotion(digest, from, opts);
      const r = await this.regions.homeStore.putBlob(digest, () => this.regions.store(from).getBlob(digest, opts), { size, signal: opts.signal });
      if (r.status === 'written') crossRegionUploadBytesTotal.inc({ from, to: this.regions.home }, r.size);
      return true;
    });
  }

  /** Tag lookup across regions (home first): a tag pushed elsewhere is found lazily too. */
  async getTag(repo: string, tag: string, opts: Signalled = {}): Promise<{ digest: string; region: string } | undefined> {
    for (const region of this.regions.names) {
      try {
        const digest = await this.regions.store(region).getTag(repo, tag, opts);
        if (digest) return { digest, region };
      } catch (err) {
        if (region === this.regions.home || isTransshipError(err, 'TS_CANCELLED')) throw err;
        log.warn({ region, repo, tag, err: errorSummary(err) }, 'region unreachable during tag lookup');
      }
    }
    return undefined;
  }
}
