// Eager `dr` replication from a running registry: after a push, reconcile just the pushed repository instead of
// waiting for a `transship replicate --watch` pass. The replicator stays the one place that copies (idempotent,
// derived from the stores), so a kick that is lost — process killed, queue full — only delays the copy until the
// next pass of `replicate --watch` or the next push; that is why this needs no durable queue.
//
// Bounded: one reconcile pass at a time, repositories kicked meanwhile are coalesced into the next pass, and at most
// `maxPending` distinct repositories wait (more are dropped with a warning). Never throws into the caller: the push
// that kicked it has already been answered. Which requests are pushes is the server's business
// (src/server/replicate-after-push.ts): placement knows repositories, not HTTP routes.
import { errorSummary, isTransshipError } from '@transship/core/errors';
import { log } from '@transship/core/log';
import type { Replicator, ReconcileReport } from './replicator.js';

export interface KickerOptions {
  maxPending?: number | undefined;
  /** Called after every pass (tests, logs). */
  onPass?: ((report: ReconcileReport, repos: string[]) => void) | undefined;
}

export class ReplicationKicker {
  private readonly pending = new Set<string>();
  private running: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private readonly maxPending: number;

  constructor(
    private readonly replicator: Replicator,
    private readonly opts: KickerOptions = {},
  ) {
    this.maxPending = opts.maxPending ?? 1000;
  }

  /** Whether a push to `repo` has anything to replicate eagerly (a `dr` rule with another target region). */
  wants(repo: string): boolean {
    const { regions, rules } = this.replicator;
    return rules.drTargets(repo, regions.names).some((r) => r !== regions.home);
  }

  /** Schedules a reconcile of `repo` (no-op when no dr rule covers it). Returns at once. */
  kick(repo: string): void {
    if (this.abort.signal.aborted || !this.wants(repo)) return;
    if (!this.pending.has(repo) && this.pending.size >= this.maxPending) {
      log.warn({ repo, pending: this.pending.size }, 'replication queue full; the next replicate pass or push copies it');
      return;
    }
    this.pending.add(repo);
    this.start();
  }

  private start(): void {
    if (this.running) return;
    this.running = this.drain().finally(() => {
      this.running = undefined;
      // A kick that landed between the loop's last check and here would otherwise wait for the next kick.
      if (this.pending.size > 0 && !this.abort.signal.aborted) this.start();
    });
  }

  /** Resolves when nothing is pending or running (tests; graceful shutdown waits through close()). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Cancels the pass in flight (the next start of the replicator finishes it) and waits for it to stop. */
  async close(): Promise<void> {
    this.abort.abort();
    this.pending.clear();
    await this.idle();
  }

  private async drain(): Promise<void> {
    while (this.pending.size > 0 && !this.abort.signal.aborted) {
      const repos = [...this.pending];
      this.pending.clear();
      try {
        const report = await this.replicator.reconcile({ repos, signal: this.abort.signal });
        if (report.copied.length || report.failed.length) {
          log.info({ repos, copied: report.copied.length, failed: report.failed.length, bytes: report.bytes }, 'replicated after push');
        }
        this.opts.onPass?.(report, repos);
      } catch (err) {
        if (isTransshipError(err, 'TS_CANCELLED')) return;
        // A region that is down fails the pass; the copy is retried by the next kick or replicate pass.
        log.error({ repos, err: errorSummary(err) }, 'replication after push failed');
      }
    }
  }
}
