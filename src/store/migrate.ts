// Rewrites a store from the old layout to the reserved one (keys.ts): `transship migrate`.
//
// Why it works this way: every old key is copied to its new key first (put-if-absent, so a key written by the new
// version since the upgrade — a tag moved after it — wins over the old body), and only then deleted, in batches
// (DeleteObjects: 1000 keys a request). A migration killed at any point leaves every fact readable (the old key, the
// new one, or both; readers fall back to the old layout until the marker exists), and a re-run finishes the job:
// copies are no-ops where the new key exists, deletes of absent keys are no-ops. The `_layout` marker is written
// last, only after a pass found no old key left, and turns the readers' fallback off.
//
// Memory is one batch of keys; the listing is streamed. Staged uploads of the old layout (`uploads/…`) are in-flight
// state, not facts: they are not moved, sweepStaged() removes them once old, and the report counts them.
import { throwIfAborted } from '../core/errors.js';
import type { BlobStore, Signalled } from './contract.js';
import { LAYOUT_KEY, LAYOUT_VERSION, LEGACY_STAGING_PREFIX, REPOS_PREFIX, legacyToCurrent } from './keys.js';

export interface MigrateOptions extends Signalled {
  /** Report the plan, change nothing. */
  dryRun?: boolean | undefined;
  /** Old keys handled per batch (copy all, then one batch delete); default 1000, S3's DeleteObjects limit. */
  batchSize?: number | undefined;
  /** Called with each move as it is planned (dry run) or done. */
  onMove?: ((move: { from: string; to: string }) => void) | undefined;
}

export interface MigrateReport {
  store: string;
  dryRun: boolean;
  /** Old keys copied to their new key (or that would be, in a dry run). */
  moved: number;
  /** Old keys whose new key already existed (written since the upgrade, or by an interrupted run): only deleted. */
  alreadyPresent: number;
  /** Old keys deleted. */
  deleted: number;
  /** Small-object bytes copied. */
  bytes: number;
  /** Old-layout staged uploads left for sweepStaged (not moved). */
  oldStaging: number;
  /** Keys the backend refused to delete (the next run retries them). */
  errors: Array<{ key: string; code: string; message: string }>;
  /** The `_layout` marker is (now) present: readers no longer look at the old layout. */
  marker: boolean;
}

export async function migrateLayout(store: BlobStore, opts: MigrateOptions = {}): Promise<MigrateReport> {
  const o = store.objects;
  const dryRun = opts.dryRun === true;
  const batchSize = Math.max(1, Math.min(1000, opts.batchSize ?? 1000));
  const report: MigrateReport = { store: store.name, dryRun, moved: 0, alreadyPresent: 0, deleted: 0, bytes: 0, oldStaging: 0, errors: [], marker: false };
  let batch: Array<{ from: string; to: string }> = [];

  const flush = async (): Promise<void> => {
    const done: string[] = [];
    for (const move of batch) {
      throwIfAborted(opts.signal);
      if (dryRun) {
        report.moved++;
        opts.onMove?.(move);
        continue;
      }
      const body = await o.get(move.from, opts);
      if (body === undefined) continue; // deleted since the listing (or by a concurrent run): nothing to carry
      if (await o.putIfAbsent(move.to, body, opts)) {
        report.moved++;
        report.bytes += Buffer.byteLength(body);
        opts.onMove?.(move);
      } else report.alreadyPresent++;
      done.push(move.from);
    }
    batch = [];
    if (done.length === 0) return;
    const r = await o.deleteMany(done, opts);
    report.deleted += r.deleted;
    report.errors.push(...r.errors);
  };

  // `repos/` holds every old key (repository keys and `repos/_placement/`).
  for await (const obj of o.list(REPOS_PREFIX, opts)) {
    const to = legacyToCurrent(obj.key);
    if (to === undefined) continue;
    batch.push({ from: obj.key, to });
    if (batch.length >= batchSize) await flush();
  }
  await flush();
  for await (const obj of o.list(LEGACY_STAGING_PREFIX, opts)) {
    void obj;
    report.oldStaging++;
  }
  if (!dryRun && report.errors.length === 0) {
    await o.put(LAYOUT_KEY, JSON.stringify({ version: LAYOUT_VERSION, migratedAt: new Date().toISOString() }), opts);
    store.layoutChanged?.();
  }
  report.marker = (await o.get(LAYOUT_KEY, opts)) !== undefined;
  return report;
}
