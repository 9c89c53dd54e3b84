// One garbage collection pass over one store: lease → mark → policy → blobs → links → touch markers → leftovers →
// report (docs/gc.md). Each phase is a span (`gc.mark`, `gc.policy`, `gc.sweep`, `gc.links`, `gc.touches`,
// `gc.leftovers`) under `gc.pass`; the outcome feeds the gc_* metrics; a real pass leaves its report under
// `_gc/passes/` (what `serve` reads at start for gc_last_success_timestamp_seconds). A dry run takes no lease and
// changes nothing. Nothing here needs the store to be quiet: writers keep writing, the protocol makes it safe.
import { errorSummary, isTransshipError } from '@transship/core/errors';
import type { BlobStore, Signalled } from '../store/contract.js';
import { GC_REPORT_PREFIX, gcReportKey } from '../store/keys.js';
import { gcDurationSeconds, gcLastSuccessTimestampSeconds, gcRunsTotal } from '../telemetry/metrics.js';
import { withSpan } from '@transship/core/tracing';
import { log } from '@transship/core/log';
import { GcLease } from './lease.js';
import { sweepLeftovers } from './leftovers.js';
import { Marker } from './mark.js';
import { ReportBuilder, type GcReport } from './report.js';
import type { GcSettings } from './settings.js';
import { SweepStopped, sweepBlobs, sweepLinks, sweepPolicy, sweepTouches, type SweepContext } from './sweep.js';

export interface PassOptions extends Signalled {
  dryRun?: boolean | undefined;
  /** Clock (tests simulate a later time; the store's own clock is never faked). */
  now?: (() => number) | undefined;
  /** Registry spool parent directory on this machine (serve.uploadDir). */
  spoolDir?: string | undefined;
  /** Lease owner name (defaults to host/pid). */
  owner?: string | undefined;
  /** Test seam: runs between the mark and the sweep (a writer racing the pass). */
  afterMark?: (() => Promise<void>) | undefined;
}

function requestsSince(store: BlobStore, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(store.requestCounts())) if (v - (before[k] ?? 0) > 0) out[k] = v - (before[k] ?? 0);
  return out;
}

export async function runPass(store: BlobStore, settings: GcSettings, opts: PassOptions = {}): Promise<GcReport> {
  const now = opts.now ?? Date.now;
  const dryRun = Boolean(opts.dryRun);
  const started = now();
  const requestsBefore = store.requestCounts();
  const builder = new ReportBuilder(store.name, store.region, dryRun, started);
  const report = builder.report;
  const signal = opts.signal;
  return withSpan('gc.pass', { 'transship.store': store.name, 'transship.dry_run': dryRun }, async (span) => {
    const lease = dryRun ? undefined : new GcLease(store.objects, { ttlMs: settings.leaseMs, skewMs: settings.skewMs, owner: opts.owner, now });
    if (lease) {
      const got = await lease.acquire({ signal });
      if (!got.held) {
        report.result = 'busy';
        report.stopped = { code: 'TS_GC_BUSY', message: `another pass holds the lease${got.holder ? ` (${got.holder.owner})` : ''}` };
        gcRunsTotal.inc({ result: 'busy' });
        return report;
      }
    }
    // A long mark must not outlive the lease: renew in the background as well as between phases.
    const renewer = lease
      ? setInterval(() => {
          lease.keep({ signal }).catch((err: unknown) => log.warn({ err: errorSummary(err) }, 'could not renew the gc lease; the sweep stops if it runs out'));
        }, Math.max(1000, settings.leaseMs / 4))
      : undefined;
    renewer?.unref();
    try {
      const marker = new Marker(store, settings, now);
      const mark = await withSpan('gc.mark', {}, () => marker.run({ signal }));
      report.mark = {
        repositories: mark.repositories,
        tags: mark.tags,
        manifests: mark.manifests,
        reachable: mark.set.size,
        markBytes: mark.set.bytes,
        missingManifests: mark.missingManifests.length,
        durationMs: now() - started,
      };
      await opts.afterMark?.();
      const ctx: SweepContext = { store, settings, mark, marker, report: builder, dryRun, now, lease, signal };
      const keep = async (): Promise<void> => {
        if (lease && !(await lease.keep({ signal }))) throw new SweepStopped('the gc lease was taken over: stopping');
      };
      await withSpan('gc.policy', {}, () => sweepPolicy(ctx));
      await keep();
      await withSpan('gc.sweep', {}, () => sweepBlobs(ctx));
      await keep();
      await withSpan('gc.links', {}, () => sweepLinks(ctx));
      await withSpan('gc.touches', {}, () => sweepTouches(ctx));
      await keep();
      await withSpan('gc.leftovers', {}, () => sweepLeftovers(store, settings, builder, { dryRun, now, signal, spoolDir: opts.spoolDir }));
      report.result = 'success';
    } catch (err) {
      if (isTransshipError(err, 'TS_CANCELLED')) throw err;
      report.result = err instanceof SweepStopped ? 'truncated' : 'failure';
      report.stopped = errorSummary(err);
      span.setAttribute('transship.gc.stopped', report.stopped.code);
      if (report.result === 'failure') log.error({ store: store.name, err: report.stopped }, 'gc pass failed; nothing unsafe was deleted, the next pass retries');
      else log.warn({ store: store.name, err: report.stopped }, 'gc pass stopped early; the next pass continues');
    } finally {
      if (renewer) clearInterval(renewer);
      report.durationMs = now() - started;
      report.requests = requestsSince(store, requestsBefore);
      if (lease) {
        if (report.result === 'success') {
          await store.objects.put(gcReportKey(now()), JSON.stringify({ ...report, plan: report.plan.slice(0, 100) }), { signal }).catch((err: unknown) => log.warn({ err: errorSummary(err) }, 'could not write the gc pass report'));
        }
        await lease.release();
      }
    }
    const result = dryRun ? 'dry_run' : report.result;
    gcRunsTotal.inc({ result });
    gcDurationSeconds.observe(report.durationMs / 1000);
    if (result === 'success') gcLastSuccessTimestampSeconds.set(now() / 1000);
    log.info({ store: store.name, result, removed: report.removed, bytes: report.reclaimedBytes, ms: report.durationMs }, 'gc pass');
    return report;
  });
}

/** When the newest successful pass on this store ended (ms), from `_gc/passes/`; undefined when none. */
export async function lastSuccess(store: BlobStore, opts: Signalled = {}): Promise<number | undefined> {
  let newest: number | undefined;
  for await (const o of store.objects.list(GC_REPORT_PREFIX, opts)) newest = Math.max(newest ?? 0, o.lastModified);
  return newest;
}
