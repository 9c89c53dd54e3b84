// Three renderings of one diagnosis: a table a person reads in one look (details under it), one JSON document for
// scripts, and node_exporter's textfile format for alerting. Only rendering lives here; no decisions.
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import {
  containerdDoctorDurationSeconds,
  containerdDoctorFindings,
  containerdDoctorLastRunTimestampSeconds,
  containerdDoctorRepairActionsTotal,
  containerdDoctorUp,
  registry,
} from './metrics.js';
import type { Diagnosis } from './diagnose.js';
import { FINDING_CODES, countsAsUnhealthy, type Finding, type EvidenceValue } from './findings.js';
import type { Action, ActionResult } from './repair.js';

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

function evidenceText(v: EvidenceValue): string {
  if (Array.isArray(v)) return v.length === 0 ? '[]' : v.map(String).join('; ');
  return String(v);
}

export function headline(d: Diagnosis): string {
  const s = d.snapshot;
  const api = s.containerd.reachable ? `containerd ${s.containerd.version ?? '?'}` : 'containerd UNREACHABLE';
  return `${api} at ${s.address} · state ${s.stateDir} · namespaces: ${s.namespaces.join(', ') || '(none)'} · ${s.containers.length} containers, ${s.tasks.length} tasks, ${s.shims.length} shims, ${s.bundles.length} bundles${s.otherShims ? ` · ${s.otherShims} shims of other containerd instances not judged` : ''}`;
}

export function renderTable(d: Diagnosis, opts: { details?: boolean } = {}): string {
  const lines: string[] = [headline(d)];
  if (d.findings.length === 0) lines.push('healthy: no findings');
  else {
    const who = (f: Finding): string => (f.namespace !== undefined ? `${f.namespace}/${f.containerId ?? '-'}` : '-');
    const wSev = 8;
    const wCode = Math.max(4, ...d.findings.map((f) => f.code.length));
    const wWho = Math.min(40, Math.max(9, ...d.findings.map((f) => who(f).length)));
    lines.push(`${pad('SEVERITY', wSev)}  ${pad('CODE', wCode)}  ${pad('CONTAINER', wWho)}  SUMMARY`);
    for (const f of d.findings) lines.push(`${pad(f.severity, wSev)}  ${pad(f.code, wCode)}  ${pad(who(f), wWho)}  ${f.summary}`);
    if (opts.details !== false) {
      lines.push('');
      for (const f of d.findings) {
        lines.push(`${f.code} ${who(f)}`);
        for (const [k, v] of Object.entries(f.evidence)) lines.push(`    ${k}: ${evidenceText(v)}`);
        for (const c of f.see) lines.push(`    see: ${c}`);
        lines.push(`    fix: ${f.fix}`);
      }
    }
    const bySev = (s: string): number => d.findings.filter((f) => f.severity === s).length;
    lines.push('', `${d.findings.length} finding(s): ${bySev('critical')} critical, ${bySev('warning')} warning, ${bySev('info')} info`);
  }
  if (d.blindSpots.length > 0) {
    lines.push('', 'could not see (findings may be incomplete):');
    for (const b of d.blindSpots) lines.push(`    ${b}`);
  }
  return lines.join('\n') + '\n';
}

export function renderPlan(actions: Action[]): string {
  if (actions.length === 0) return 'nothing to repair automatically\n';
  const lines = ['repair plan:'];
  actions.forEach((a, i) => {
    lines.push(`  ${i + 1}. ${a.kind} ${a.target}  (${a.namespace}/${a.containerId})`);
    lines.push(`       why: ${a.why}`);
    lines.push(`       only if: ${a.precondition}`);
  });
  return lines.join('\n') + '\n';
}

export function renderResults(results: ActionResult[]): string {
  if (results.length === 0) return '';
  return (
    results
      .map((r) => `  ${r.outcome.padEnd(7)} ${r.action.kind} ${r.action.target}${r.error ? `  — ${r.error.code}: ${r.error.message}` : ''}`)
      .join('\n') + '\n'
  );
}

export function toJson(d: Diagnosis, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const s = d.snapshot;
  return {
    containerd: { address: s.address, stateDir: s.stateDir, reachable: s.containerd.reachable, version: s.containerd.version ?? null, error: s.containerd.error ?? null },
    namespaces: s.namespaces,
    counts: { containers: s.containers.length, tasks: s.tasks.length, shims: s.shims.length, bundles: s.bundles.length, socketFiles: s.socketFiles.length, otherShims: s.otherShims },
    healthy: !d.findings.some(countsAsUnhealthy) && s.containerd.reachable,
    findings: d.findings,
    blindSpots: d.blindSpots,
    durationMs: Math.round(d.durationMs),
    ...extra,
  };
}

/** Sets the doctor gauges from a diagnosis (every known code gets a value, so alerts can rely on 0). */
export function recordMetrics(d: Diagnosis): void {
  containerdDoctorFindings.reset();
  for (const [code, spec] of Object.entries(FINDING_CODES)) containerdDoctorFindings.set({ code, severity: spec.severity }, 0);
  for (const f of d.findings) containerdDoctorFindings.inc({ code: f.code, severity: f.severity });
  containerdDoctorUp.set(d.snapshot.containerd.reachable ? 1 : 0);
  containerdDoctorDurationSeconds.set(d.durationMs / 1000);
  containerdDoctorLastRunTimestampSeconds.set(Date.now() / 1000);
}

/** Writes only the doctor's metrics, atomically (temp file + rename) so the collector never reads half a file. */
export async function writePrometheusTextfile(d: Diagnosis, file: string): Promise<void> {
  recordMetrics(d);
  const names = [containerdDoctorUp, containerdDoctorFindings, containerdDoctorDurationSeconds, containerdDoctorLastRunTimestampSeconds, containerdDoctorRepairActionsTotal].map((m) => (m as unknown as { name: string }).name);
  const parts = await Promise.all(names.map((n) => registry.getSingleMetricAsString(n)));
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, parts.join('\n') + '\n');
  await rename(tmp, file);
}
