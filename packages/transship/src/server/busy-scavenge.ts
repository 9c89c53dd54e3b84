// Why this exists: a blob streamed through `serve` allocates a fresh, short-lived ArrayBuffer for every piece of it —
// one per 64 KiB socket read, a second one where node:http's client copies each S3 response body piece, one per
// 1 MiB read of a cached file — and V8 counts those bytes as external memory. V8 13 (Node 24 and 26) starts a full
// mark-compact whenever external memory has grown 64 MB past what the last one left, and only a collection lowers
// the count. Node 20's V8 scavenged ~20 times per 256 MiB pull on its own, which freed the dead buffers long before
// that; Node 24 scavenged ~3 times and marked the whole ~23 MB heap 4 (cached file) to 7 (S3) times instead
// (--trace-gc and --trace-incremental-marking: "Start (external memory pressure)").
// Measured on a 256 MiB GET through serve, Node 24: 890 ms of CPU per pull from S3 and 330 ms from the blob cache,
// against 530 and 180 ms on Node 20 with the same code; the marking threads and sweeping were ~40 % of the profile.
//
// So while requests are in flight, serve scavenges (a young-generation collection: 0.47 ms median during a pull) each time external memory has grown `stepBytes` since the last scavenge. The dead buffers are
// young, so the scavenge frees them; V8 sweeps their backing stores concurrently and takes them off the count at the
// next collection, so the count peaks near two steps, well below V8's limit. Long-lived buffers (part buffers of an
// upload) survive a scavenge and just move the baseline up, so they cause no repeated scavenges. The check
// reads one V8 counter (~1 µs) every `intervalMs`, and only while a request is in flight: an idle server does not wake up.
import type { FastifyInstance } from 'fastify';
import { getHeapStatistics } from 'node:v8';
import { exposedGc, trackInFlight, type GcFunction, type InFlightTracker } from './idle-gc.js';

export interface BusyScavengerOptions {
  /** Scavenge when external memory has grown this much since the last scavenge (bytes; V8's trigger is 64 MB). */
  stepBytes?: number;
  /** How often external memory is looked at while a request is in flight (ms). */
  intervalMs?: number;
  /** For tests: the scavenge and the external memory counter. */
  scavenge?: (() => void) | undefined;
  externalBytes?: () => number;
}

export class BusyScavenger implements InFlightTracker {
  private inflight = 0;
  private timer: NodeJS.Timeout | undefined;
  /** External memory right after the last scavenge (or the lowest seen since: freed buffers are swept concurrently). */
  private baseline: number;
  private readonly stepBytes: number;
  private readonly intervalMs: number;
  private readonly scavenge: (() => void) | undefined;
  private readonly externalBytes: () => number;
  /** Scavenges run so far (tests, debugging). */
  scavenges = 0;

  constructor(opts: BusyScavengerOptions = {}) {
    // 16 MiB: at ~600 MB/s of external allocation (an S3 pull at 300 MB/s allocates every byte twice) a 10 ms tick
    // sees ~6 MB, so the count (lagging one step, see the header) stays below the 64 MB that starts a mark-compact.
    this.stepBytes = opts.stepBytes ?? 16 * 1024 * 1024;
    this.intervalMs = opts.intervalMs ?? 10;
    this.scavenge = 'scavenge' in opts ? opts.scavenge : minorGc(exposedGc());
    this.externalBytes = opts.externalBytes ?? (() => getHeapStatistics().external_memory);
    this.baseline = this.externalBytes();
  }

  started(): void {
    if (this.inflight++ > 0 || !this.scavenge) return;
    this.baseline = Math.min(this.baseline, this.externalBytes());
    this.timer = setInterval(() => this.check(), this.intervalMs);
    this.timer.unref();
  }

  finished(): void {
    if (this.inflight === 0) return;
    if (--this.inflight > 0) return;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Scavenges when external memory grew `stepBytes` since the last one. Returns whether it did. */
  check(): boolean {
    if (!this.scavenge) return false;
    const now = this.externalBytes();
    if (now - this.baseline < this.stepBytes) {
      this.baseline = Math.min(this.baseline, now);
      return false;
    }
    this.scavenge();
    this.scavenges++;
    this.baseline = this.externalBytes();
    return true;
  }

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

function minorGc(gc: GcFunction | undefined): (() => void) | undefined {
  return gc ? () => gc({ type: 'minor' }) : undefined;
}

/** Scavenges while `app` has requests in flight (see the header); stops with the server. */
export function scavengeWhileBusy(app: FastifyInstance, opts: BusyScavengerOptions = {}): BusyScavenger {
  return trackInFlight(app, new BusyScavenger(opts));
}
