// Why this exists: a burst of pushes leaves hundreds of MB of garbage behind — S3 part buffers (8 MiB each, five per
// streaming upload), body chunks — that V8 only collects when JavaScript allocates again. An idle registry
// allocates nothing, so the memory stays: after 8 parallel 64 MiB pushes, RSS sat at 390-490 MB for as long as the
// server stayed idle, and fell to 150-170 MB after one full collection (26 ms). So once no request has been in
// flight for a while and Buffers still hold more than a threshold, `serve` runs one full collection. It never runs
// while a request is in flight, and at most once per quiet spell.
import type { FastifyInstance } from 'fastify';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { log } from '@transship/core/log';

/** V8's `gc` extension: a full, synchronous collection by default; `{ type: 'minor' }` scavenges the young generation. */
export type GcFunction = (options?: { type?: 'major' | 'minor'; execution?: 'sync' | 'async' }) => void;

/**
 * V8's `gc` as a function; undefined if V8 will not hand one out. Node only exposes `gc` with --expose-gc at start,
 * but a context created after the flag is set gets it too: no launcher flag needed.
 */
export function exposedGc(): GcFunction | undefined {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as unknown;
  return typeof gc === 'function' ? (gc as GcFunction) : undefined;
}

function fullGc(): (() => void) | undefined {
  const gc = exposedGc();
  return gc ? () => gc() : undefined;
}

export interface IdleCollectorOptions {
  /** How long nothing may be in flight before collecting, and how often that is checked (ms). */
  quietMs?: number;
  /** Collect only when ArrayBuffers (Buffers) hold more than this many bytes. */
  minBufferBytes?: number;
  /** For tests: the collection, the buffer bytes, and the clock. */
  gc?: (() => void) | undefined;
  bufferBytes?: () => number;
  now?: () => number;
}

export class IdleCollector implements InFlightTracker {
  private inflight = 0;
  private lastActive: number;
  /** Set when a collection ran; cleared by the next request, so one quiet spell gets one collection. */
  private collected = false;
  private readonly timer: NodeJS.Timeout;
  private readonly quietMs: number;
  private readonly minBufferBytes: number;
  private readonly gc: (() => void) | undefined;
  private readonly bufferBytes: () => number;
  private readonly now: () => number;

  constructor(opts: IdleCollectorOptions = {}) {
    this.quietMs = opts.quietMs ?? 5_000;
    this.minBufferBytes = opts.minBufferBytes ?? 64 * 1024 * 1024;
    this.gc = 'gc' in opts ? opts.gc : fullGc();
    this.bufferBytes = opts.bufferBytes ?? (() => process.memoryUsage().arrayBuffers);
    this.now = opts.now ?? Date.now;
    this.lastActive = this.now();
    this.timer = setInterval(() => this.check(), this.quietMs);
    this.timer.unref();
  }

  /** Requests in flight now. */
  get inFlight(): number {
    return this.inflight;
  }

  started(): void {
    this.inflight++;
    this.collected = false;
  }

  finished(): void {
    this.inflight = Math.max(0, this.inflight - 1);
    this.lastActive = this.now();
  }

  /** Runs the collection when the server has been quiet long enough and buffers are worth it. Returns whether it did. */
  check(): boolean {
    if (!this.gc || this.collected || this.inflight > 0 || this.now() - this.lastActive < this.quietMs) return false;
    const before = this.bufferBytes();
    if (before < this.minBufferBytes) return false;
    const started = performance.now();
    this.gc();
    this.collected = true;
    log.debug({ buffersBefore: before, buffersAfter: this.bufferBytes(), ms: Math.round(performance.now() - started) }, 'idle: collected garbage left by a burst');
    return true;
  }

  close(): void {
    clearInterval(this.timer);
  }
}

/** Something that follows the requests `app` has in flight. */
export interface InFlightTracker {
  started(): void;
  finished(): void;
  close(): void;
}

/** Tells `tracker` of every request of `app` starting and ending, and closes it with the server. */
export function trackInFlight<T extends InFlightTracker>(app: FastifyInstance, tracker: T): T {
  app.addHook('onRequest', async (_request, reply) => {
    tracker.started();
    // 'close' fires exactly once per response, finished or cut off (fastify's onResponse skips the latter).
    reply.raw.once('close', () => tracker.finished());
  });
  app.addHook('onClose', async () => tracker.close());
  return tracker;
}

/** Counts the server's requests in flight and collects when it has gone quiet; stops with the server. */
export function collectWhenIdle(app: FastifyInstance, opts: IdleCollectorOptions = {}): IdleCollector {
  return trackInFlight(app, new IdleCollector(opts));
}
