// The span side of the bounded pipeline: ended lifecycle spans wait in a BoundedQueue and go to the exporter in
// batches, one export in flight at a time. Why not the SDK's BatchSpanProcessor: it drops silently when its buffer is
// full, and the watcher must count what it loses (containerd_watch_spans_dropped_total) and push back — when the
// backlog passes the high-water mark the event processor waits (see watcher.ts), so a slow exporter fills the
// *event* queue, whose drops are counted and repaired by a reconcile, instead of growing memory.
import type { Context } from '@opentelemetry/api';
import type { ReadableSpan, Span, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { setTimeout as sleep } from 'node:timers/promises';
import { cancelledError } from '../../core/errors.js';
import { containerdWatchSpansDroppedTotal } from '../../telemetry/metrics.js';
import { log } from '../../telemetry/log.js';
import { BoundedQueue } from './queue.js';

export interface ExportOptions {
  capacity?: number;
  batchSize?: number;
  /** How long a partial batch waits for company. */
  flushDelayMs?: number;
}

export class BoundedSpanProcessor implements SpanProcessor {
  private readonly queue: BoundedQueue<ReadableSpan>;
  private readonly batchSize: number;
  private readonly flushDelayMs: number;
  private exporting: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private drainedWaiters: Array<() => void> = [];
  exported = 0;
  failed = 0;

  constructor(
    private readonly exporter: SpanExporter,
    opts: ExportOptions = {},
  ) {
    this.queue = new BoundedQueue<ReadableSpan>(opts.capacity ?? 4096, () => containerdWatchSpansDroppedTotal.inc());
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

  onStart(_span: Span, _parentContext: Context): void {}

  onEnd(span: ReadableSpan): void {
    this.queue.push(span);
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
      const batch: ReadableSpan[] = [];
      while (batch.length < this.batchSize) {
        const s = this.queue.shift();
        if (s === undefined) break;
        batch.push(s);
      }
      const result = await new Promise<{ code: number; error?: Error }>((resolve) => this.exporter.export(batch, resolve));
      // ExportResultCode.SUCCESS is 0 (@opentelemetry/core, not a direct dependency of ours).
      if (result.code === 0) this.exported += batch.length;
      else {
        // Export failures are not retried here: the exporter (OTLP) has its own retry for transient errors.
        this.failed += batch.length;
        log.warn({ spans: batch.length, error: result.error?.message }, 'span export failed');
      }
      for (const w of this.drainedWaiters.splice(0)) w();
    }
  }

  /** Resolves once the backlog is at most `level` (the event processor's backpressure). */
  async waitBelow(level: number, signal: AbortSignal): Promise<void> {
    while (this.queue.size > level) {
      if (signal.aborted) throw cancelledError(signal);
      this.kick();
      // Woken after each exported batch; the timeout is a safety net against a waiter registered just after a wake.
      await Promise.race([new Promise<void>((resolve) => this.drainedWaiters.push(resolve)), sleep(100, undefined, { signal }).catch(() => undefined)]);
    }
  }

  async forceFlush(): Promise<void> {
    this.kick();
    while (this.exporting) await this.exporting;
    await this.exporter.forceFlush?.();
  }

  async shutdown(): Promise<void> {
    await this.forceFlush();
    await this.exporter.shutdown();
  }
}
