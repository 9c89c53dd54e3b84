// The writers' half of the GC protocol (docs/gc.md "The protocol"): before a manifest that references blobs this
// writer did not just write becomes visible, every such blob must be *fresh* — written or touched less than
// `refreshAfter` ago — or be touched now: a touch marker `_gc/touch/<alg>/<hex>/<ms>` is written (put-if-absent,
// never overwritten), the writer waits `settle` (longer than any GC delete may take after its last look), and then
// confirms the blob is still there. A blob found gone is reported, and the caller treats it as absent (the registry
// answers MANIFEST_BLOB_UNKNOWN and the client uploads it again; copy uploads it itself). What this process learnt
// is remembered (digest → newest known freshness), so a busy registry touches each old blob once per refreshAfter,
// and prefetch() lets the registry start a touch when the client HEADs a blob, long before its manifest arrives.
import { setTimeout as sleep } from 'node:timers/promises';
import { throwIfAborted } from '@transship/core/errors';
import { GC_DEFAULTS } from '../config/config.js';
import type { BlobInfo, BlobStore, Signalled } from './contract.js';
import { gcTouchKey, gcTouchPrefix } from './keys.js';
import { log } from '@transship/core/log';

export interface FreshnessOptions {
  refreshAfterMs?: number | undefined;
  settleMs?: number | undefined;
  skewMs?: number | undefined;
  now?: (() => number) | undefined;
  /** Remembered digests (oldest forgotten first). */
  maxRemembered?: number | undefined;
}

/**
 * A touch in flight or done: `waitFrom` — the local time the settle wait counts from (undefined: no wait needed);
 * `freshness` — a lower bound of the blob's freshness once it is confirmed (the marker's time, never later).
 */
type Touch = Promise<{ waitFrom: number | undefined; freshness: number }>;

export class Freshness {
  readonly refreshAfterMs: number;
  readonly settleMs: number;
  readonly skewMs: number;
  private readonly now: () => number;
  private readonly known = new Map<string, number>();
  private readonly touching = new Map<string, Touch>();
  private readonly touched = new Map<string, { waitFrom: number | undefined; freshness: number }>();
  private readonly maxRemembered: number;

  constructor(
    private readonly store: BlobStore,
    opts: FreshnessOptions = {},
  ) {
    this.refreshAfterMs = opts.refreshAfterMs ?? GC_DEFAULTS.refreshAfterSeconds * 1000;
    this.settleMs = opts.settleMs ?? GC_DEFAULTS.settleSeconds * 1000;
    this.skewMs = opts.skewMs ?? GC_DEFAULTS.clockSkewSeconds * 1000;
    this.now = opts.now ?? Date.now;
    this.maxRemembered = opts.maxRemembered ?? 100_000;
  }

  private remember(digest: string, at: number): void {
    if ((this.known.get(digest) ?? 0) >= at) return;
    this.known.delete(digest);
    this.known.set(digest, at);
    if (this.known.size > this.maxRemembered) {
      const oldest = this.known.keys().next().value;
      if (oldest !== undefined) this.known.delete(oldest);
    }
  }

  /** Fresh enough to rely on without a touch (the clock-skew allowance taken off the refresh age). */
  private fresh(digest: string, lastModified: number | undefined): boolean {
    const f = Math.max(this.known.get(digest) ?? 0, lastModified ?? 0);
    return this.now() - f < this.refreshAfterMs - this.skewMs;
  }

  /** The newest freshness this process knows for `digest` (ms), for callers that cache it across runs. */
  knownFreshness(digest: string): number | undefined {
    return this.known.get(digest);
  }

  /** This process wrote the blob just now (its lastModified is now): no touch needed for a while. */
  noteWritten(digest: string): void {
    this.remember(digest, this.now());
  }

  /**
   * Starts touching the blobs of `infos` that are not known fresh, without waiting (a registry HEAD). ensure()
   * later waits for what was started here. Infos without a modification time are left to ensure().
   */
  prefetch(infos: readonly BlobInfo[]): void {
    for (const i of infos) {
      if (i.lastModified === undefined || this.fresh(i.digest, i.lastModified)) continue;
      this.touch(i.digest).catch((err: unknown) => log.debug({ digest: i.digest, err }, 'early touch failed; the manifest write touches again'));
    }
  }

  /**
   * One touch per digest at a time; a finished one (a registry HEAD's) waits here for its confirmation, unless it
   * has grown too old to count; a failed touch is forgotten so the next caller tries again.
   */
  private touch(digest: string, signal?: AbortSignal): Touch {
    const done = this.touched.get(digest);
    if (done && this.now() - done.freshness < this.refreshAfterMs - this.skewMs) return Promise.resolve(done);
    this.touched.delete(digest);
    let t = this.touching.get(digest);
    if (!t) {
      t = this.doTouch(digest, signal)
        .then((r) => {
          this.touched.set(digest, r);
          if (this.touched.size > this.maxRemembered) {
            const oldest = this.touched.keys().next().value;
            if (oldest !== undefined) this.touched.delete(oldest);
          }
          return r;
        })
        .finally(() => this.touching.delete(digest));
      this.touching.set(digest, t);
    }
    return t;
  }

  /**
   * Another writer's marker serves when it is younger than refreshAfter and older than settle + skew: any delete
   * that raced it has long been answered, so no wait is needed (its time is on the store's clock, hence the skew).
   * Otherwise write ours and wait from its answer, on our own clock.
   */
  private async doTouch(digest: string, signal?: AbortSignal): Promise<{ waitFrom: number | undefined; freshness: number }> {
    let newest = 0;
    for await (const o of this.store.objects.list(gcTouchPrefix(digest), { signal })) newest = Math.max(newest, o.lastModified);
    const now = this.now();
    if (newest > 0 && now - newest < this.refreshAfterMs - this.skewMs && now - newest >= this.settleMs + this.skewMs) {
      return { waitFrom: undefined, freshness: newest };
    }
    await this.store.objects.putIfAbsent(gcTouchKey(digest, now), '', { signal });
    // The wait counts from the answer (the marker is stored by then); the freshness from before the request.
    return { waitFrom: this.now(), freshness: now - this.skewMs };
  }

  /**
   * Call right before making visible a manifest that references `infos` (blobs this writer found present, did not
   * write): returns the digests found gone (the manifest must not be made visible with them). Costs nothing for
   * blobs known fresh; for old ones a LIST (markers), maybe a PUT (our marker), the settle wait and one presence
   * check.
   */
  async ensure(infos: readonly BlobInfo[], opts: Signalled = {}): Promise<string[]> {
    const signal = opts.signal;
    const unknown = infos.filter((i) => i.lastModified === undefined && !this.fresh(i.digest, undefined)).map((i) => i.digest);
    const observed = new Map(infos.filter((i) => i.lastModified !== undefined).map((i) => [i.digest, i] as const));
    const gone: string[] = [];
    if (unknown.length) {
      // A "present" without a time (a 412, a cache entry): look again, with the time this time.
      const found = await this.store.statBlobs(unknown, { signal });
      for (const d of unknown) {
        const info = found.get(d);
        if (info) observed.set(d, info);
        else gone.push(d);
      }
    }
    const old = [...observed.values()].filter((i) => !this.fresh(i.digest, i.lastModified)).map((i) => i.digest);
    if (old.length === 0) return gone;
    const touches = await Promise.all(old.map((d) => this.touch(d, signal)));
    const waits = touches.flatMap((t) => (t.waitFrom === undefined ? [] : [t.waitFrom]));
    if (waits.length) {
      const wait = Math.max(...waits) + this.settleMs - this.now();
      if (wait > 0) await sleep(wait, undefined, { signal });
      throwIfAborted(signal);
    }
    // Confirmed after the wait: present now, so no delete that raced the touch happened; remember the marker's time.
    const confirmed = await this.store.statBlobs(old, { signal });
    for (const [i, d] of old.entries()) {
      this.touched.delete(d);
      if (confirmed.has(d)) this.remember(d, touches[i]?.freshness ?? 0);
      else gone.push(d);
    }
    return gone;
  }
}
