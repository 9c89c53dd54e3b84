// What the event stream cannot say, found by looking: a task that stays CREATED (Kubernetes' "stuck in Created"),
// a shim that died while its task still existed (killed, crashed, OOM-killed — containerd may or may not notice),
// and an init process that is gone while no /tasks/exit ever arrived (a hung shim cannot report it). A pure
// function of the tracked lifecycles and a liveness probe, run periodically by the watcher.
import type { Finding, FindingCode } from '../findings.js';
import { FINDING_CODES, type Severity } from '../findings.js';
import type { Liveness, ShimRef } from './host.js';
import type { ContainerTrack, TaskTrack } from './lifecycle.js';

/** The watcher reports with the doctor's codes, plus one the doctor cannot see (it has no event stream). */
export const WATCH_ONLY_CODES = {
  'exit-missing': { severity: 'critical', meaning: 'a task init process is gone but containerd never published its exit (a hung or dead shim)' },
} as const satisfies Record<string, { severity: Severity; meaning: string }>;

export type WatchFindingCode = FindingCode | keyof typeof WATCH_ONLY_CODES;
export type WatchFinding = Omit<Finding, 'code'> & { code: WatchFindingCode; at: number };

export function severityOf(code: WatchFindingCode): Severity {
  return code in WATCH_ONLY_CODES ? WATCH_ONLY_CODES[code as keyof typeof WATCH_ONLY_CODES].severity : FINDING_CODES[code as FindingCode].severity;
}

export interface StuckOptions {
  /** A task CREATED longer than this is stuck. */
  createdThresholdMs: number;
  /** An init gone this long without an exit event means the exit will not come. */
  exitGraceMs: number;
}

export const DEFAULT_STUCK: StuckOptions = { createdThresholdMs: 5 * 60_000, exitGraceMs: 10_000 };

export interface Detection {
  track: ContainerTrack;
  task: TaskTrack;
  finding: WatchFinding;
}

export interface CheckResult {
  /** Tasks stuck in CREATED right now, by namespace (for the gauge; every judged namespace appears). */
  stuckByNamespace: Map<string, number>;
  /** New detections (each reported once per task). */
  detections: Detection[];
  /** Shims found dead this round (for the unexpected-shim-exit counter). */
  shimDeaths: Detection[];
}

function make(code: WatchFindingCode, c: ContainerTrack, now: number, summary: string, evidence: Finding['evidence'], see: string[], fix: string): WatchFinding {
  return { code, severity: severityOf(code), namespace: c.namespace, containerId: c.id, summary, evidence, see, fix, at: now };
}

export interface Probe {
  liveness(pid: number, startTime?: number): Liveness;
  exists(path: string): boolean;
}

export function checkTracks(tracks: Iterable<ContainerTrack>, probe: Probe, now: number, opts: StuckOptions): CheckResult {
  const liveness = (pid: number, startTime?: number): Liveness => probe.liveness(pid, startTime);
  const stuckByNamespace = new Map<string, number>();
  const detections: Detection[] = [];
  const shimDeaths: Detection[] = [];
  for (const c of tracks) {
    if (!stuckByNamespace.has(c.namespace)) stuckByNamespace.set(c.namespace, 0);
    const t = c.task;
    if (!t || t.state === 'deleted') continue;
    if (t.state === 'created' && now - t.createdAt >= opts.createdThresholdMs) {
      stuckByNamespace.set(c.namespace, (stuckByNamespace.get(c.namespace) ?? 0) + 1);
      if (!t.reported.has('task-stuck-created')) {
        t.reported.add('task-stuck-created');
        const age = Math.round((now - t.createdAt) / 1000);
        detections.push({
          track: c,
          task: t,
          finding: make('task-stuck-created', c, now, `task ${c.namespace}/${c.id} has been CREATED for ${age} s and never started`, { status: 'CREATED', pid: t.pid, ageSeconds: age, bundle: t.host?.bundle ?? null }, [`ctr -n ${c.namespace} task ls`], 'manual: start or delete the task'),
        });
      }
    }
    const shim: ShimRef | undefined = t.host?.shim;
    if (shim && !t.shimDied) {
      // A shim exits right after its task is deleted, and on a busy node the delete event may still be on its way:
      // a shim that is gone but unlinked its socket exited cleanly. One gone with its socket left behind (a killed
      // shim cannot unlink it) for the whole grace period, while its task was never deleted, died unexpectedly.
      if (liveness(shim.pid, shim.startTime) === 'alive' || !probe.exists(t.host?.socket ?? '')) t.shimGoneSince = undefined;
      else {
        t.shimGoneSince ??= now;
        if (now - t.shimGoneSince >= opts.exitGraceMs) {
          t.shimDied = true;
          const d: Detection = {
            track: c,
            task: t,
            finding: make('task-shim-dead', c, now, `shim pid ${shim.pid} of ${c.namespace}/${c.id} is gone while its task is ${t.state.toUpperCase()}`, { status: t.state.toUpperCase(), pid: t.pid, shimPid: shim.pid, socket: t.host?.socket ?? null }, [`ctr -n ${c.namespace} task ls`, `ls -l ${t.host?.socket ?? ''}`], 'delete-task'),
          };
          shimDeaths.push(d);
          t.reported.add('task-shim-dead');
          detections.push(d);
        }
      }
    }
    if ((t.state === 'running' || t.state === 'paused') && t.pid > 0) {
      const l = liveness(t.pid);
      if (l === 'alive') t.initGoneSince = undefined;
      else {
        t.initGoneSince ??= now;
        if (now - t.initGoneSince >= opts.exitGraceMs && !t.reported.has('exit-missing')) {
          t.reported.add('exit-missing');
          detections.push({
            track: c,
            task: t,
            finding: make('exit-missing', c, now, `init pid ${t.pid} of ${c.namespace}/${c.id} is ${l === 'zombie' ? 'a zombie' : 'gone'} for ${Math.round((now - t.initGoneSince) / 1000)} s but no exit event arrived`, { pid: t.pid, init: l, shimPid: shim?.pid ?? null, shimAlive: shim ? liveness(shim.pid, shim.startTime) === 'alive' : null }, shim ? [`grep State /proc/${shim.pid}/status`] : [], 'manual: inspect the shim (State T = stopped); the task cannot be judged until it answers'),
          });
        }
      }
    }
  }
  return { stuckByNamespace, detections, shimDeaths };
}
