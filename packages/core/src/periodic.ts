// A task run every `intervalMs` in a long-running process (`serve`): eviction passes, GC passes. One run at a time
// (the next is scheduled when the previous ends, so a slow run never overlaps itself); close() cancels the run in
// flight through its AbortSignal and waits for it; the timer never keeps the process alive.
import { errorSummary, isTransshipError } from './errors.js';
import { log } from './log.js';

export class Periodic {
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly name: string,
    private readonly run: (signal: AbortSignal) => Promise<void>,
    private readonly intervalMs: number,
    firstDelayMs = intervalMs,
  ) {
    this.schedule(firstDelayMs);
  }

  private schedule(delayMs: number): void {
    if (this.abort.signal.aborted) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.run(this.abort.signal)
        .catch((err: unknown) => {
          if (!isTransshipError(err, 'TS_CANCELLED')) log.error({ task: this.name, err: errorSummary(err) }, `${this.name} failed; the next run retries`);
        })
        .finally(() => {
          this.running = undefined;
          this.schedule(this.intervalMs);
        });
    }, delayMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.abort.abort();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
