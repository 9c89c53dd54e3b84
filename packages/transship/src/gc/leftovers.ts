// Leftovers of interrupted writes, removed by age (docs/gc.md "Leftovers"): multipart uploads still open (they bill
// until aborted), staged upload objects (`_uploads/`, and `uploads/` of the old layout), large-blob write claims
// (`claims/`), the directory store's temp files, and upload spools of registry instances that are gone. Limits are
// far above the longest live write (gc.leftovers.*, checked against serve.uploadIdleSeconds at config load).
import { throwIfAborted } from '@transship/core/errors';
import type { BlobStore, Signalled } from '../store/contract.js';
import { CLAIMS_PREFIX, LEGACY_STAGING_PREFIX, STAGING_PREFIX } from '../store/keys.js';
import { removeLeftoverSpools } from '../registry/uploads.js';
import { gcDeletedObjectsTotal } from '../telemetry/metrics.js';
import type { ReportBuilder } from './report.js';
import type { GcSettings } from './settings.js';

export interface LeftoverOptions extends Signalled {
  dryRun: boolean;
  now: () => number;
  /** The registry's spool parent directory (serve.uploadDir), when this machine runs one. */
  spoolDir?: string | undefined;
}

export async function sweepLeftovers(store: BlobStore, settings: GcSettings, report: ReportBuilder, opts: LeftoverOptions): Promise<void> {
  const { signal, dryRun } = opts;
  const driver = store.objects;
  const multipartCutoff = opts.now() - settings.multipartAfterMs;
  for await (const u of driver.listUploads('', { signal })) {
    throwIfAborted(signal);
    if (u.initiated >= multipartCutoff) continue;
    if (!dryRun) await driver.abortUpload(u, { signal });
    report.removed('multipart', `${u.key}?uploadId=${u.uploadId}`);
    if (!dryRun) gcDeletedObjectsTotal.inc({ kind: 'multipart' });
  }
  const tempCutoff = opts.now() - settings.tempAfterMs;
  for (const [prefix, kind] of [[STAGING_PREFIX, 'staged'], [LEGACY_STAGING_PREFIX, 'staged'], [CLAIMS_PREFIX, 'claim']] as const) {
    const old: Array<{ key: string; size: number }> = [];
    for await (const o of driver.list(prefix, { signal })) if (o.lastModified < (kind === 'claim' ? multipartCutoff : tempCutoff)) old.push({ key: o.key, size: o.size });
    await removeKeys(store, kind, old, report, dryRun, signal);
  }
  if (store.listTemporary) {
    const old: Array<{ key: string; size: number }> = [];
    for await (const o of store.listTemporary({ signal })) if (o.lastModified < tempCutoff) old.push({ key: o.key, size: o.size });
    await removeKeys(store, 'temp', old, report, dryRun, signal);
  }
  if (opts.spoolDir && !dryRun) {
    const n = await removeLeftoverSpools(opts.spoolDir, settings.tempAfterMs).catch(() => 0);
    for (let i = 0; i < n; i++) {
      report.removed('spool', opts.spoolDir);
      gcDeletedObjectsTotal.inc({ kind: 'spool' });
    }
  }
}

async function removeKeys(store: BlobStore, kind: 'staged' | 'claim' | 'temp', items: Array<{ key: string; size: number }>, report: ReportBuilder, dryRun: boolean, signal: AbortSignal | undefined): Promise<void> {
  for (let i = 0; i < items.length; i += 1000) {
    const batch = items.slice(i, i + 1000);
    const failed = dryRun ? new Set<string>() : new Set((await store.objects.deleteMany(batch.map((b) => b.key), { signal })).errors.map((e) => e.key));
    for (const b of batch) {
      if (failed.has(b.key)) continue;
      report.removed(kind, b.key, b.size);
      if (!dryRun) gcDeletedObjectsTotal.inc({ kind });
    }
  }
}
