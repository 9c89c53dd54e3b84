// What a pass did (or, dry run, would do): counts by kind, bytes, and the exact plan. One shape for the CLI's
// text and --json output, the `_gc/passes/` audit record and the metrics.

export type RemovedKind = 'blob' | 'layer_link' | 'referrer_link' | 'manifest_link' | 'tag' | 'pulled_marker' | 'touch' | 'multipart' | 'staged' | 'claim' | 'temp' | 'spool';

export interface PlannedRemoval {
  kind: RemovedKind;
  key: string;
  size: number;
}

export interface GcReport {
  store: string;
  region: string;
  dryRun: boolean;
  startedAt: string;
  durationMs: number;
  result: 'success' | 'failure' | 'busy' | 'truncated';
  /** Why the pass stopped early or failed (a code and a line). */
  stopped?: { code: string; message: string } | undefined;
  mark: { repositories: number; tags: number; manifests: number; reachable: number; markBytes: number; missingManifests: number; durationMs: number };
  removed: Partial<Record<RemovedKind, number>>;
  reclaimedBytes: number;
  /** Garbage seen but kept this pass, by reason (fresh = not old enough yet; touched = a writer relied on it). */
  kept: { fresh: number; touched: number; failed: number };
  /** Dry run: every key that would go; a real pass: the first 1000 it removed. */
  plan: PlannedRemoval[];
  planTruncated: boolean;
  requests: Record<string, number>;
}

const PLAN_LIMIT_REAL = 1000;

export class ReportBuilder {
  readonly report: GcReport;
  private readonly planLimit: number;

  constructor(store: string, region: string, dryRun: boolean, startedAt: number) {
    this.report = {
      store,
      region,
      dryRun,
      startedAt: new Date(startedAt).toISOString(),
      durationMs: 0,
      result: 'success',
      mark: { repositories: 0, tags: 0, manifests: 0, reachable: 0, markBytes: 0, missingManifests: 0, durationMs: 0 },
      removed: {},
      reclaimedBytes: 0,
      kept: { fresh: 0, touched: 0, failed: 0 },
      plan: [],
      planTruncated: false,
      requests: {},
    };
    this.planLimit = dryRun ? Number.POSITIVE_INFINITY : PLAN_LIMIT_REAL;
  }

  removed(kind: RemovedKind, key: string, size = 0): void {
    this.report.removed[kind] = (this.report.removed[kind] ?? 0) + 1;
    if (kind === 'blob') this.report.reclaimedBytes += size;
    if (this.report.plan.length < this.planLimit) this.report.plan.push({ kind, key, size });
    else this.report.planTruncated = true;
  }
}

/** Human-readable summary (the CLI's default output). */
export function formatReport(r: GcReport): string {
  const lines: string[] = [];
  const verb = r.dryRun ? 'would remove' : 'removed';
  lines.push(`${r.store} (${r.region})${r.dryRun ? ' — dry run, nothing changed' : ''}: ${r.result}${r.stopped ? ` (${r.stopped.code}: ${r.stopped.message})` : ''}`);
  lines.push(`  mark: ${r.mark.repositories} repositories, ${r.mark.tags} tags, ${r.mark.manifests} manifest links, ${r.mark.reachable} reachable digests (${r.mark.markBytes} B of mark set), ${(r.mark.durationMs / 1000).toFixed(1)} s`);
  if (r.mark.missingManifests) lines.push(`  warning: ${r.mark.missingManifests} linked manifests have no bytes (broken before this pass; run transship verify)`);
  const kinds = Object.entries(r.removed).map(([k, n]) => `${n} ${k}`);
  lines.push(`  ${verb}: ${kinds.length ? kinds.join(', ') : 'nothing'}; ${r.reclaimedBytes} bytes of blobs`);
  lines.push(`  kept: ${r.kept.fresh} unreachable but younger than the grace, ${r.kept.touched} touched by a writer${r.kept.failed ? `, ${r.kept.failed} delete failures` : ''}`);
  if (r.dryRun) for (const p of r.plan) lines.push(`  - ${p.kind} ${p.key}${p.size ? ` (${p.size} B)` : ''}`);
  return lines.join('\n');
}
