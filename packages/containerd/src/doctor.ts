// The doctor as a function (the CLI in src/cli/doctor.ts only parses flags): diagnose, print, and with `fix` plan,
// confirm, act, audit, and diagnose again. Returns the exit code the CLI uses, so tests drive it directly.
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { ExitCode } from '@transship/core/errors';
import { ContainerdClient } from './client.js';
import { diagnose, type Diagnosis } from './diagnose.js';
import { countsAsUnhealthy } from './findings.js';
import { SHIM_SOCKET_DIR } from './shim-socket.js';
import { diagnosisRecord, execute, plan, type ActionResult, type AuditRecord } from './repair.js';
import { renderPlan, renderResults, renderTable, toJson, writePrometheusTextfile } from './report.js';

export interface DoctorOptions {
  address: string;
  stateDir: string;
  namespaces?: string[] | undefined;
  json?: boolean | undefined;
  prometheus?: string | undefined;
  fix?: boolean | undefined;
  yes?: boolean | undefined;
  removeContainers?: boolean | undefined;
  auditLog?: string | undefined;
  createdThresholdMs?: number | undefined;
  minBundleAgeMs?: number | undefined;
  socketDir?: string | undefined;
  procRoot?: string | undefined;
  cgroupRoot?: string | undefined;
  runcRoot?: string | undefined;
  timeoutMs?: number | undefined;
  killGraceMs?: number | undefined;
  /** Read journalctl/dmesg for evidence (default true). */
  logs?: boolean | undefined;
  signal?: AbortSignal | undefined;
  /** Output sink (stdout in the CLI). */
  write?: ((s: string) => void) | undefined;
  /** Asks a person to confirm the plan; undefined means "nobody to ask". */
  confirm?: ((question: string) => Promise<boolean>) | undefined;
}

export interface DoctorResult {
  exitCode: number;
  before: Diagnosis;
  after?: Diagnosis | undefined;
  results: ActionResult[];
}

const MAX_ROUNDS = 3;

export function exitCodeOf(d: Diagnosis): number {
  if (!d.snapshot.containerd.reachable) return ExitCode.failure;
  return d.findings.some(countsAsUnhealthy) ? ExitCode.findings : ExitCode.ok;
}

export async function runDoctor(opts: DoctorOptions): Promise<DoctorResult> {
  const write = opts.write ?? ((s: string) => void process.stdout.write(s));
  const client = new ContainerdClient({ address: opts.address, timeoutMs: opts.timeoutMs });
  const audit = (rec: AuditRecord): void => {
    if (!opts.auditLog) return;
    mkdirSync(dirname(opts.auditLog), { recursive: true });
    appendFileSync(opts.auditLog, JSON.stringify(rec) + '\n', { mode: 0o600 });
  };
  const run = (): Promise<Diagnosis> =>
    diagnose({
      address: opts.address,
      stateDir: opts.stateDir,
      namespaces: opts.namespaces,
      socketDir: opts.socketDir,
      procRoot: opts.procRoot,
      cgroupRoot: opts.cgroupRoot,
      runcRoot: opts.runcRoot,
      client,
      signal: opts.signal,
      createdThresholdMs: opts.createdThresholdMs,
      minBundleAgeMs: opts.minBundleAgeMs,
      logs: opts.logs,
    });
  try {
    const before = await run();
    if (opts.prometheus && !opts.fix) await writePrometheusTextfile(before, opts.prometheus);
    if (!opts.fix) {
      write(opts.json ? JSON.stringify(toJson(before), null, 2) + '\n' : renderTable(before));
      return { exitCode: exitCodeOf(before), before, results: [] };
    }

    audit(diagnosisRecord(before, 'diagnosis'));
    const results: ActionResult[] = [];
    const attempted = new Set<string>();
    let current = before;
    if (!opts.json) write(renderTable(before));
    for (let round = 0; round < MAX_ROUNDS; round++) {
      // Later rounds pick up what earlier actions uncovered (a stopped shim may leave its socket behind); an action
      // already tried is not retried in the same run.
      const actions = plan(current.findings, { removeContainers: opts.removeContainers }).filter((a) => !attempted.has(`${a.kind}|${a.target}`));
      if (actions.length === 0) break;
      if (!opts.json) write(renderPlan(actions));
      if (!opts.yes) {
        const ok = opts.confirm ? await opts.confirm(`apply ${actions.length} action(s)? [y/N] `) : false;
        if (!ok) {
          if (!opts.json) write(opts.confirm ? 'not confirmed; nothing done\n' : 'no --yes and no terminal to confirm on; nothing done\n');
          break;
        }
      }
      for (const a of actions) attempted.add(`${a.kind}|${a.target}`);
      const r = await execute(actions, {
        client,
        address: current.snapshot.address,
        stateDir: current.snapshot.stateDir,
        socketDir: opts.socketDir ?? SHIM_SOCKET_DIR,
        procRoot: opts.procRoot,
        signal: opts.signal,
        audit,
        killGraceMs: opts.killGraceMs,
      });
      results.push(...r);
      if (!opts.json) write(renderResults(r));
      current = await run();
      if (!r.some((x) => x.outcome === 'done')) break;
    }
    const after = current;
    audit(diagnosisRecord(after, 'after'));
    if (opts.prometheus) await writePrometheusTextfile(after, opts.prometheus);
    if (opts.json) {
      write(JSON.stringify({ ...toJson(after), before: toJson(before).findings, actions: results.map((r) => ({ ...r.action, outcome: r.outcome, observed: r.observed, error: r.error ?? null })) }, null, 2) + '\n');
    } else if (after !== before) {
      write('\nafter repair:\n' + renderTable(after));
    }
    return { exitCode: exitCodeOf(after), before, after, results };
  } finally {
    client.close();
  }
}
