// Pull recency for retention's `pulledWithin` (docs/gc.md "Pulled within"): a manifest served to a GET (not a HEAD:
// containerd resolves a tag with HEAD and then GETs the digest, so a real pull always GETs) leaves a marker
// `repos/<name>/_pulled/<alg>/<hex>` whose modification time is the pull.
//
// Cheap by construction:
// - never on the pull's critical path: note() is synchronous and does no I/O; the marker is written in the background
//   after the response, and a failed write is logged and counted, never the pull's error;
// - at most one write per (repository, digest) per stamp period per instance (an ExpiringMap entry, bounded), so a
//   fleet pulling one image costs one PutObject per instance per period, not one per pull. The period is a day, or an
//   eighth of the shortest pulledWithin rule when that is shorter (gc/settings.ts pullStampMs), so a marker is never
//   older than the last pull by more than D/8;
// - bounded: at most `maxInFlight` writes at once (more are dropped and counted: losing a marker only makes a tag look
//   unpulled one period early, and a failed or dropped write forgets its throttle entry so the next pull retries).
import { errorSummary } from '@transship/core/errors';
import { ExpiringMap } from '@transship/core/expiring-map';
import { log } from '@transship/core/log';
import type { ObjectDriver } from '../store/contract.js';
import { pulledKey } from '../store/keys.js';
import { registryPullRecordsTotal } from '../telemetry/metrics.js';

export const DAY_MS = 86_400_000;

export interface PullRecorderOptions {
  /** At most one marker write per (repository, digest) per this long, per instance (default a day). */
  periodMs?: number | undefined;
  /** (repository, digest) pairs remembered (default 100 000, ~10 MB at most). */
  maxEntries?: number | undefined;
  /** Marker writes in flight at most (default 64). */
  maxInFlight?: number | undefined;
  now?: (() => number) | undefined;
}

/** Logs a failing store once a minute, not once a pull. */
const WARN_EVERY_MS = 60_000;

export class PullRecorder {
  readonly periodMs: number;
  private readonly recent: ExpiringMap<true>;
  private readonly maxInFlight: number;
  private readonly now: () => number;
  private readonly writing = new Set<Promise<void>>();
  private readonly closing = new AbortController();
  private stopped = false;
  private warnedAt = Number.NEGATIVE_INFINITY;
  private suppressed = 0;

  constructor(
    private readonly objects: ObjectDriver,
    opts: PullRecorderOptions = {},
  ) {
    this.periodMs = opts.periodMs ?? DAY_MS;
    this.now = opts.now ?? Date.now;
    this.recent = new ExpiringMap<true>({ ttlMs: this.periodMs, maxEntries: opts.maxEntries ?? 100_000, now: this.now });
    this.maxInFlight = opts.maxInFlight ?? 64;
  }

  /** A GET served manifest `digest` of `repo`: writes its marker in the background unless one was written lately. */
  note(repo: string, digest: string): void {
    if (this.stopped) return;
    const id = `${repo}@${digest}`;
    if (this.recent.get(id)) {
      registryPullRecordsTotal.inc({ result: 'throttled' });
      return;
    }
    if (this.writing.size >= this.maxInFlight) {
      registryPullRecordsTotal.inc({ result: 'dropped' });
      return;
    }
    let key: string;
    try {
      key = pulledKey(repo, digest);
    } catch {
      return; // a name or digest the registry already served cannot fail here; never let it reach the pull
    }
    this.recent.set(id, true);
    const at = this.now();
    const write = this.objects
      .put(key, new Date(at).toISOString(), { signal: this.closing.signal })
      .then(() => {
        registryPullRecordsTotal.inc({ result: 'written' });
      })
      .catch((err: unknown) => {
        this.recent.delete(id);
        if (this.closing.signal.aborted) return;
        registryPullRecordsTotal.inc({ result: 'failed' });
        this.warn(repo, digest, err);
      });
    this.writing.add(write);
    void write.finally(() => this.writing.delete(write));
  }

  private warn(repo: string, digest: string, err: unknown): void {
    const now = this.now();
    if (now - this.warnedAt < WARN_EVERY_MS) {
      this.suppressed++;
      return;
    }
    this.warnedAt = now;
    log.warn({ repository: repo, digest, err: errorSummary(err), suppressed: this.suppressed }, 'could not record a manifest pull (retention pulledWithin may see it as unpulled); the next pull retries');
    this.suppressed = 0;
  }

  /** Waits for the marker writes in flight (tests; shutdown after close()). */
  async drain(): Promise<void> {
    while (this.writing.size) await Promise.allSettled([...this.writing]);
  }

  /** Stops recording; the writes in flight get `graceMs` to finish (a pull answered just before a shutdown counts). */
  async close(graceMs = 5000): Promise<void> {
    this.stopped = true;
    const timer = setTimeout(() => this.closing.abort(new Error('registry closing')), graceMs);
    try {
      await this.drain();
    } finally {
      clearTimeout(timer);
      this.closing.abort(new Error('registry closing'));
    }
  }
}
