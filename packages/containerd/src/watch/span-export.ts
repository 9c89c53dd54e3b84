// The span side of the bounded pipeline: ended lifecycle spans wait in a BoundedQueue and go to the exporter in
// batches, one export in flight at a time (BoundedBatcher, whatever a span is: the SDK's ReadableSpan behind
// BoundedSpanProcessor, or the watcher's own span records behind its OTLP tracer, otlp-tracer.ts). Why not the SDK's BatchSpanProcessor: it drops silently when its buffer is
// full, and the watcher must count what it loses (containerd_watch_spans_dropped_total) and push back — when the
// backlog passes the high-water mark the event processor waits (see watcher.ts), so a slow exporter fills the
// *event* queue, whose drops are counted and repaired by a reconcile, instead of growing memory.
import type { Context } from '@opentelemetry/api';
import type { ReadableSpan, Span, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { setTimeout as sleep } from 'node:timers/promises';
import { throwIfAborted } from '@transship/core/errors';
import { containerdWatchSpansDroppedTotal } from '../metrics.js';
import { log } from '@transship/core/log';
import { BoundedQueue } from './queue.js';

export interface ExportOptions {
  capacity?: number;
  batchSize?: number;
  /** How long a partial batch waits for company. */
  flushDelayMs?: number;
}

/** What the event processor needs to know about the span pipeline to push back on it. */
export interface SpanBacklog {
  readonly backlog: number;
  readonly capacity: number;
  readonly dropped: number;
  /** Resolves once the backlog is at most `level` (the event processor's backpressure). */
  waitBelow(level: number, signal: AbortSignal): Promise<void>;
}

/** Bounded queue → batches → one export in flight. `exportBatch` resolves true when the batch was delivered. */
export class BoundedBatcher<T> implements SpanBacklog {
  private readonly queue: BoundedQueue<T>;
  private readonly batchSize: number;
  private readonly flushDelayMs: number;
  private exporting: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private drainedWaiters: Array<() => void> = [];
  exported = 0;
  failed = 0;

  constructor(
    private readonly exportBatch: (batch: T[]) => Promise<{ ok: boolean; error?: string | undefined }>,
    opts: ExportOptions = {},
  ) {
    this.queue = new BoundedQueue<T>(opts.capacity ?? 4096, () => containerdWatchSpansDroppedTotal.inc());
    this.batchSize = opts.batchSize ?? 512;
    // 5 s like the SDK's BatchSpanProcessor: each export is an HTTP request, and each wakeup costs CPU.
    this.flushDelayMs = opts.flushDelayMs ?? 5000;
  }

  get backlog(): number {
    return this.queue.size;
  }

  get capacity(): number {
    return this.queue.capacity;
  }

  get dropped(): number {
    return this.queue.dropped;
  }

  push(item: T): void {
    this.queue.push(item);
    if (this.queue.size >= this.batchSize) this.kick();
    else this.timer ??= setTimeout(() => this.kick(), this.flushDelayMs).unref();
  }

  private kick(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.exporting || this.queue.size === 0) return;
    this.exporting = this.exportBatches().finally(() => {
      this.exporting = undefined;
      for (const w of this.drainedWaiters.splice(0)) w();
    });
  }

  private async exportBatches(): Promise<void> {
    while (this.queue.size > 0) {
      const batch: T[] = [];
      while (batch.length < this.batchSize) {
        const s = this.queue.shift();
        if (s === undefined) break;
        batch.push(s);
      }
      const result = await this.exportBatch(batch).catch((err: unknown) => ({ ok: false, error: (err as Error)?.message ?? String(err) }));
      if (result.ok) this.exported += batch.length;
      else {
        this.failed += batch.length;
        log.warn({ spans: batch.length, error: result.error }, 'span export failed');
      }
      for (const w of this.drainedWaiters.splice(0)) w();
    }
  }

  async waitBelow(level: number, signal: AbortSignal): Promise<void> {
    while (this.queue.size > level) {
      throwIfAborted(signal);
      this.kick();
      // Woken after each exported batch; the timeout is a safety net against a waiter registered just after a wake.
      await Promise.race([new Promise<void>((resolve) => this.drainedWaiters.push(resolve)), sleep(100, undefined, { signal }).catch(() => undefined)]);
    }
  }

  /** Exports everything queued and waits for it. */
  async flush(): Promise<void> {
    this.kick();
    while (this.exporting) await this.exporting;
  }
}

/** The SDK side: a SpanProcessor whose ended spans go through a BoundedBatcher to an SDK SpanExporter. */
export class BoundedSpanProcessor implements SpanProcessor, SpanBacklog {
  private readonly batcher: BoundedBatcher<ReadableSpan>;

  constructor(
    private readonly exporter: SpanExporter,
    opts: ExportOptions = {},
  ) {
    // ExportResultCode.SUCCESS is 0 (@opentelemetry/core, not a direct dependency of ours). Failures are not retried
    // here: an SDK exporter (OTLP) has its own retry for transient errors.
    this.batcher = new BoundedBatcher<ReadableSpan>((batch) => new Promise((resolve) => exporter.export(batch, (r) => resolve({ ok: Number(r.code) === 0, error: r.error?.message }))), opts);
  }

  get backlog(): number {
    return this.batcher.backlog;
  }

  get capacity(): number {
    return this.batcher.capacity;
  }

  get dropped(): number {
    return this.batcher.dropped;
  }

  get exported(): number {
    return this.batcher.exported;
  }

  get failed(): number {
    return this.batcher.failed;
  }

  onStart(_span: Span, _parentContext: Context): void {}

  onEnd(span: ReadableSpan): void {
    this.batcher.push(span);
  }

  waitBelow(level: number, signal: AbortSignal): Promise<void> {
    return this.batcher.waitBelow(level, signal);
  }

  async forceFlush(): Promise<void> {
    await this.batcher.flush();
    await this.exporter.forceFlush?.();
  }

  async shutdown(): Promise<void> {
    await this.forceFlush();
    await this.exporter.shutdown();
  }
}
